"""llama.cpp control vectors: the file llama.cpp reads, export then import exact, bad input refused clearly."""

import numpy as np
import pytest
import torch

import pas.core.models
from pas.cli.main import main
from pas.export.llamacpp import (
    ControlVector,
    ControlVectorError,
    from_control_vector,
    read_control_vector,
    to_control_vector,
    write_control_vector,
)
from pas.steer.hooks import add_block_outputs
from pas.steer.signature import ModelSignature
from pas.steer.vector import Provenance, SteeringVector


def _constant(model, layers=(1, 2), seed=0) -> SteeringVector:
    sig = ModelSignature.of(model)
    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(sig.shape)
    for layer in layers:
        offsets[layer] = torch.randn(sig.shape[1:], generator=g)
    return SteeringVector(offsets, sig, provenance=Provenance(subject="p1", method="pas"))


@pytest.mark.parametrize("mapping", ["output", "input"])
def test_export_then_import_gives_the_same_offsets(tiny, tmp_path, mapping):
    layers, shift = ((1, 2), 0) if mapping == "output" else ((2,), -1)  # block 0 cannot be steered
    vector = _constant(tiny, layers)
    path = write_control_vector(to_control_vector(vector, tiny, mapping=mapping), tmp_path / "v.gguf")
    cv = read_control_vector(path)
    assert sorted(cv.directions) == [layer + shift for layer in layers]
    back = from_control_vector(cv, tiny, mapping=mapping, source=str(path))
    torch.testing.assert_close(back.offsets, vector.offsets, atol=1e-5, rtol=1e-4)
    assert back.positions == "all" and back.gates is None and back.provenance.subject == "p1"
    assert "imported from" in (back.provenance.derived or "")


def test_the_file_is_what_llama_cpp_reads(tiny_llama, tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader

    vector = _constant(tiny_llama, layers=(2,)) * 0.5
    path = write_control_vector(to_control_vector(vector, tiny_llama), tmp_path / "v.gguf")
    reader = GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 1
    assert "after block N's MLP" in reader.fields["pas.placement"].contents()
    (t,) = reader.tensors
    assert t.name == "direction.2" and t.tensor_type == GGMLQuantizationType.F32
    from pas.steer.fold import output_shift

    np.testing.assert_allclose(np.asarray(t.data), output_shift(tiny_llama, vector.offsets)[2].numpy(), rtol=1e-6)


def test_block_output_hook_adds_after_the_block(tiny_llama):
    ids = torch.tensor([[5, 9, 13, 2]])
    base = tiny_llama(ids, output_hidden_states=True).hidden_states
    delta = torch.zeros(3, 32)
    delta[0] = torch.randn(32)
    with add_block_outputs(tiny_llama, delta):
        steered = tiny_llama(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(steered[1], base[1] + delta[0])  # block 0's output, every position
    torch.testing.assert_close(tiny_llama(ids, output_hidden_states=True).hidden_states[1], base[1])  # removed


def test_gated_vector_is_refused_with_what_to_export_instead(tiny_llama):
    from pas.steer.gates import Gates

    v = _constant(tiny_llama)
    gated = SteeringVector(v.offsets, v.signature, gates=Gates(torch.zeros(3, 4, 8), torch.ones(3, 4)))
    with pytest.raises(ControlVectorError, match="gated vector cannot be .* control vector.*pas align --kind constant"):
        to_control_vector(gated, tiny_llama)


def test_what_lands_below_block_one_is_added_at_block_one(tiny_llama):
    from pas.steer.fold import output_shift

    vector = _constant(tiny_llama, layers=(0, 2))
    shift = output_shift(tiny_llama, vector.offsets)
    cv = to_control_vector(vector, tiny_llama)
    assert sorted(cv.directions) == [1, 2] and "layer(s) 0" in cv.metadata["pas.moved"]
    np.testing.assert_allclose(cv.directions[1], shift[0].numpy(), rtol=1e-6)
    cv = to_control_vector(_constant(tiny_llama, layers=(1, 2)), tiny_llama, mapping="input")
    assert sorted(cv.directions) == [1] and "layer(s) 1" in cv.metadata["pas.moved"]  # 1 -> 0 -> 1, 2 -> 1: summed
    assert "pas.moved" not in to_control_vector(_constant(tiny_llama, layers=(1, 2)), tiny_llama).metadata


def test_bad_files_and_other_models_are_refused(tiny_llama, tmp_path):
    from gguf import GGUFWriter

    with pytest.raises(ControlVectorError, match="no such file"):
        read_control_vector(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(ControlVectorError, match="not a readable GGUF"):
        read_control_vector(junk)
    model_file = tmp_path / "model.gguf"
    w = GGUFWriter(str(model_file), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ControlVectorError, match="not a control vector"):
        read_control_vector(model_file)
    narrow = ControlVector({1: np.ones(16, dtype=np.float32)}, "llama")
    with pytest.raises(ControlVectorError, match="width is 32"):
        from_control_vector(narrow, tiny_llama)
    with pytest.raises(ControlVectorError, match="for 'qwen2' models"):
        from_control_vector(ControlVector({1: np.ones(32, dtype=np.float32)}, "qwen2"), tiny_llama)
    with pytest.raises(ControlVectorError, match="past this model's 3 layers"):
        from_control_vector(ControlVector({5: np.ones(32, dtype=np.float32)}, "llama"), tiny_llama)


def test_cli_export_and_import(tiny_llama, tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    vector = _constant(tiny_llama)
    vector.save(tmp_path / "v.safetensors")
    out = tmp_path / "v.gguf"
    assert main(["export", str(tmp_path / "v.safetensors"), "--out", str(out)]) == 0
    assert main(["export", str(tmp_path / "v.safetensors"), "--out", str(out)]) == 2  # never overwritten silently
    assert "--overwrite" in capsys.readouterr().err
    assert main(["import", str(out), "--out", str(tmp_path / "back.safetensors")]) == 0
    back = SteeringVector.load(tmp_path / "back.safetensors")
    torch.testing.assert_close(back.offsets, vector.offsets, atol=1e-5, rtol=1e-4)
    assert main(["export", "--out", str(tmp_path / "none.gguf")]) == 2
    assert "nothing to export" in capsys.readouterr().err


def test_calibrated_scale_is_where_the_emulation_best_follows_pas(tiny_llama, tokenizer, papi):
    from pas.export.calibrate import choose_export_scale
    from pas.score.scorer import ItemScorer, score_texts

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = list(papi.bank.train_ids)[:8]
    vector = _constant(tiny_llama, layers=(1, 2)) * 4.0  # steers the answer position only ("last")
    choice = choose_export_scale(vector, scorer, ids=ids, scales=(1.0, 0.25, 0.0625))
    assert choice.statements == 8 and set(choice.gaps) == {1.0, 0.25, 0.0625}
    base = scorer.score(ids).expected
    own = scorer.score(ids, steering=vector).expected - base
    for scale, gap in choice.gaps.items():  # each gap is the emulated shift's distance from pas's own, measured
        cv = to_control_vector(vector, tiny_llama, scale=scale)
        with add_block_outputs(tiny_llama, cv.residual(3)):
            emulated = score_texts(tiny_llama, tokenizer, scorer.texts(ids), letter_ids=scorer.letter_ids).expected
        assert gap == pytest.approx(float(np.abs(emulated - base - own).mean()), abs=1e-5)
    assert choice.gaps[choice.scale] == min(choice.gaps.values())
    with pytest.raises(ValueError, match="positive"):
        choose_export_scale(vector, scorer, ids=ids, scales=(0.0,))


def test_cli_export_calibrate(tiny_llama, tokenizer, tmp_path, monkeypatch, capsys):
    from gguf import GGUFReader

    from pas.export.calibrate import SCALES

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    _constant(tiny_llama).save(tmp_path / "v.safetensors")
    out = tmp_path / "v.gguf"
    assert main(["export", str(tmp_path / "v.safetensors"), "--calibrate", "--scale", "0.5", "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "v.safetensors"), "--calibrate", "--out", str(out)]) == 0
    assert "calibrated: scale" in capsys.readouterr().err
    fields = GGUFReader(str(out)).fields
    assert float(fields["pas.scale"].contents()) in SCALES
    assert "short-form statements" in fields["pas.scale_choice"].contents()
