import dataclasses

import numpy as np
import pytest
import torch

from pas.core.arch import layout
from pas.steer.file import metadata
from pas.steer.vector import ModelMismatchError, Provenance, SteeringFileError, SteeringVector


def _vector(model, seed=0, scale=1.0, heads=((0, 1), (2, 3))):
    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    off = torch.zeros(lay.n_layers, lay.n_heads, lay.head_dim)
    for layer, h in heads:
        off[layer, h] = torch.randn(lay.head_dim, generator=g) * scale
    return SteeringVector.for_model(model, off, provenance=Provenance(subject="s1"))


def _ids(tokenizer, texts):
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


TEXTS = ["Hello there, how are you today?", "Tell me about yourself."]


def test_zero_strength_is_base(tiny, tokenizer):
    enc = _ids(tokenizer, TEXTS)
    base = tiny(**enc).logits
    with (_vector(tiny) * 0.0).apply(tiny):
        steered = tiny(**enc).logits
    torch.testing.assert_close(steered, base, rtol=0, atol=0)
    from pas.steer.hooks import add_offsets

    zeros = torch.zeros(3, layout(tiny).attn_width, requires_grad=True)  # hooks on every layer, adding zeros
    with add_offsets(tiny, zeros):
        torch.testing.assert_close(tiny(**enc).logits, base, rtol=0, atol=0)


def test_remove_is_bit_identical(tiny, tokenizer):
    enc = _ids(tokenizer, TEXTS)
    base = tiny(**enc).logits
    handle = _vector(tiny).apply(tiny)
    assert not torch.equal(tiny(**enc).logits, base)
    handle.remove()
    assert torch.equal(tiny(**enc).logits, base)


def test_fold_equals_hook_and_unfold_restores(tiny, tokenizer):
    enc = _ids(tokenizer, TEXTS)
    base = tiny(**enc).logits
    vec = _vector(tiny)
    biases = [None if p.bias is None else p.bias.clone()
              for p in __import__("pas.core.arch").core.arch.o_proj_modules(tiny)]
    with vec.apply(tiny):
        hooked = tiny(**enc).logits
    folded = vec.fold(tiny)
    torch.testing.assert_close(tiny(**enc).logits, hooked, atol=1e-5, rtol=1e-5)
    folded.unfold()
    assert torch.equal(tiny(**enc).logits, base)
    from pas.core.arch import o_proj_modules

    for p, b in zip(o_proj_modules(tiny), biases, strict=True):
        assert (p.bias is None) == (b is None) and (b is None or torch.equal(p.bias, b))


def test_batched_equals_unbatched(tiny, tokenizer, papi):
    from pas.score.prompts import PromptTemplate
    from pas.score.scorer import score_texts

    texts = PromptTemplate().render_items(tokenizer, papi.bank, papi.bank.test_ids[:6])
    for positions in ("last", "all"):
        vec = dataclasses.replace(_vector(tiny, scale=3.0), positions=positions)
        a = score_texts(tiny, tokenizer, texts, steering=vec, batch_size=4)
        b = score_texts(tiny, tokenizer, texts, steering=vec, batch_size=1, prefix_cache=False)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_last_mode_steers_only_last_position(tiny, tokenizer):
    enc = tokenizer(TEXTS[:1], return_tensors="pt", add_special_tokens=False)
    base = tiny(**enc).logits
    with _vector(tiny, scale=3.0).apply(tiny, last_only=True):
        steered = tiny(**enc).logits
    assert torch.equal(steered[:, :-1], base[:, :-1]) and not torch.equal(steered[:, -1], base[:, -1])


def test_start_gating_with_kv_cache(tiny, tokenizer):
    enc = tokenizer(TEXTS[:1], return_tensors="pt", add_special_tokens=False)
    n = enc["input_ids"].shape[1]
    vec = _vector(tiny, scale=3.0)
    with vec.apply(tiny, start=n - 2):
        full = tiny(**enc).logits
        from transformers import DynamicCache

        cache = DynamicCache(config=tiny.config)
        first = tiny(input_ids=enc["input_ids"][:, : n - 2], past_key_values=cache, use_cache=True).logits
        rest = tiny(input_ids=enc["input_ids"][:, n - 2 :], past_key_values=cache, use_cache=True).logits
    base = tiny(**enc).logits
    torch.testing.assert_close(full[:, : n - 2], base[:, : n - 2], atol=0, rtol=0)
    assert not torch.allclose(full[:, n - 2 :], base[:, n - 2 :])
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tiny, tmp_path):
    vec = _vector(tiny)
    path = vec.save(tmp_path / "v.safetensors")
    back = SteeringVector.load(path)
    assert torch.equal(back.offsets, vec.offsets)
    assert metadata(back) == metadata(vec) and metadata(back)["format_version"] == 4
    with pytest.raises(FileExistsError):
        vec.save(path)
    vec.save(path, overwrite=True)


def test_arithmetic(tiny):
    a, b = _vector(tiny, 0), _vector(tiny, 1, heads=((1, 0),))
    assert torch.equal((a * 0.5).offsets, a.offsets * 0.5) and torch.equal((2 * a).offsets, a.offsets * 2)
    assert torch.equal((-a).offsets, -a.offsets)
    s = a + b
    assert torch.equal(s.offsets, a.offsets + b.offsets) and set(s.heads) == {(0, 1), (2, 3), (1, 0)}
    assert torch.equal((a - a).offsets, torch.zeros_like(a.offsets))


def test_mismatched_model_raises(tiny, tokenizer):
    from conftest import make_tiny

    vec = _vector(tiny)
    other = make_tiny("llama" if tiny.config.model_type != "llama" else "qwen2", len(tokenizer))
    with pytest.raises(ModelMismatchError, match="architecture"):
        vec.apply(other)
    bigger = _vector(tiny)
    sig = bigger.signature
    wrong = dataclasses.replace(bigger, signature=dataclasses.replace(sig, n_layers=4),
                                offsets=torch.zeros(4, sig.n_heads, sig.head_dim))
    with pytest.raises(ModelMismatchError, match="layers: vector 4 vs model 3"):
        wrong.fold(tiny)
    with pytest.raises(ModelMismatchError, match="heads"):
        dataclasses.replace(vec, signature=dataclasses.replace(vec.signature, n_heads=8, head_dim=4),
                            offsets=torch.zeros(3, 8, 4)).apply(tiny)
    with pytest.raises(ModelMismatchError, match="config fingerprint"):
        dataclasses.replace(vec, signature=dataclasses.replace(vec.signature, config_fingerprint="0" * 16)).apply(tiny)


def test_bad_files_raise(tiny, tmp_path):
    vec = _vector(tiny)
    path = vec.save(tmp_path / "v.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SteeringFileError, match="truncated or corrupt"):
        SteeringVector.load(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file at all")
    with pytest.raises(SteeringFileError):
        SteeringVector.load(tmp_path / "junk.safetensors")
    with pytest.raises(SteeringFileError, match="no such"):
        SteeringVector.load(tmp_path / "absent.safetensors")
    from safetensors.torch import save_file

    save_file({"offsets": vec.offsets}, tmp_path / "nometa.safetensors")
    with pytest.raises(SteeringFileError, match="not a pas steering vector"):
        SteeringVector.load(tmp_path / "nometa.safetensors")
    import json

    bad = vec.offsets.clone()
    bad[0, 0, 0] = float("nan")
    save_file({"offsets": bad}, tmp_path / "nan.safetensors", metadata={"pas": json.dumps(metadata(vec))})
    with pytest.raises(SteeringFileError, match="NaN"):
        SteeringVector.load(tmp_path / "nan.safetensors")
    meta = metadata(vec)
    meta["format_version"] = 99
    save_file({"offsets": vec.offsets}, tmp_path / "v99.safetensors", metadata={"pas": json.dumps(meta)})
    with pytest.raises(SteeringFileError, match="format version 99"):
        SteeringVector.load(tmp_path / "v99.safetensors")
    meta = metadata(vec)
    del meta["signature"]["n_heads"]
    save_file({"offsets": vec.offsets}, tmp_path / "partial.safetensors", metadata={"pas": json.dumps(meta)})
    with pytest.raises(SteeringFileError, match="lacks \\['n_heads'\\]"):
        SteeringVector.load(tmp_path / "partial.safetensors")


def test_nan_offsets_rejected(tiny):
    vec = _vector(tiny)
    bad = vec.offsets.clone()
    bad[1, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        dataclasses.replace(vec, offsets=bad)


def test_save_errors_are_clear_and_leave_nothing(tiny, tmp_path):
    vec = _vector(tiny)
    (tmp_path / "adir").mkdir()
    with pytest.raises(SteeringFileError, match="is a directory; give a file path"):
        vec.save(tmp_path / "adir")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SteeringFileError, match="afile is a file, not a directory"):
        vec.save(tmp_path / "afile" / "sub" / "v.safetensors")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["adir", "afile"]  # no stray temporary files


def test_files_of_the_first_layout_still_load(tiny, tmp_path):
    """Files written before the fit report moved out of the vector carry an 'extra' dict and no 'derived'."""
    import json

    from safetensors.torch import save_file

    vec = _vector(tiny)
    meta = {**dataclasses.asdict(vec.signature), "subject": vec.subject, "positions": "last", "format_version": 2,
            "kind": "constant", "heads": [[0, 1], [2, 3]], "alpha": 2.0, "sigmas": [1.0, 2.0]}
    meta["extra"] = {"fit_seconds": 3.0, "learn": {"best_step": 5}}
    save_file({"offsets": vec.offsets}, tmp_path / "old.safetensors", metadata={"pas": json.dumps(meta)})
    back = SteeringVector.load(tmp_path / "old.safetensors")
    assert torch.equal(back.offsets, vec.offsets) and back.provenance.derived is None and back.subject == vec.subject


def test_vector_on_other_weights_of_the_same_config(tiny_llama, tokenizer):
    """The config fingerprint cannot tell trained from random weights; the weights sample can."""
    from conftest import make_tiny

    vec = _vector(tiny_llama)
    other = make_tiny("llama", len(tokenizer), seed=1)  # same config, other weights
    with pytest.raises(ModelMismatchError, match=r"other weights: weights fingerprint vector \w+ vs model \w+"):
        vec.apply(other)
    with vec.for_weights_of(other).apply(other):  # the explicit override for a fine-tuned variant
        pass
    same_in_bf16 = make_tiny("llama", len(tokenizer), seed=0).to(torch.bfloat16)
    vec.check_model(same_in_bf16)  # the same weights in another dtype match


def test_the_one_rule():
    from pas.steer.position import PositionRule, position_rule

    rule = position_rule
    assert rule("last", "prompt") == PositionRule(False) and rule("all", "prompt") == PositionRule(True)
    assert rule("last", "answer") == PositionRule(True) == rule("all", "generate")
    assert rule("last", "generate") == PositionRule(True, last_only=True)
    assert rule("last", "reply", prompt_len=7) == PositionRule(True, start=6)
    with pytest.raises(ValueError, match="no rule"):
        rule("some", "answer")


def test_scorer_applies_the_vectors_own_kind(tiny_llama, tokenizer, papi):
    """ItemScorer.score needs no positions argument: an 'all' vector steers the prompt too, a 'last' one does not."""
    from pas.score.prompts import PromptTemplate
    from pas.score.scorer import ItemScorer, score_texts

    ids = papi.bank.test_ids[:4]
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    texts = PromptTemplate().render_items(tokenizer, papi.bank, ids)
    last = _vector(tiny_llama, scale=3.0)
    every = dataclasses.replace(last, positions="all")
    a, b = scorer.score(ids, steering=last).probs, scorer.score(ids, steering=every).probs
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b, score_texts(tiny_llama, tokenizer, texts, steering=every).probs, atol=1e-5)


@pytest.mark.parametrize("positions", ["last", "all"])
def test_generation_and_reply_phases_agree(tiny_llama, tokenizer, positions):
    """Greedy tokens generated under the vector are the argmax of the same vector's teacher-forced reply logits."""
    from pas.steer.fluency import _chat_ids
    from pas.steer.position import steer

    vec = dataclasses.replace(_vector(tiny_llama, scale=3.0), positions=positions)
    head = _chat_ids(tokenizer, "Tell me about the moon.")
    ids = torch.tensor([head])
    with steer(tiny_llama, vec, "generate"):
        out = tiny_llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)
    reply = out[0, len(head):]
    with steer(tiny_llama, vec, "reply", len(head)):
        logits = tiny_llama(out).logits[0, len(head) - 1 : -1]
    assert torch.equal(logits.argmax(-1), reply)


def test_saved_files_follow_the_umask(tiny, tmp_path):
    """safetensors writes 0600; a saved vector gets the user's umask like any other file (#27)."""
    import os

    old = os.umask(0o022)
    try:
        path = _vector(tiny).save(tmp_path / "v.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_vector_is_checked_against_the_item_bank(tiny, papi, tmp_path):
    """A vector records the item bank it was fitted on; another bank is refused, or allowed with a warning (#27)."""
    import warnings

    from pas.core.data import ItemBank
    from pas.steer.vector import ItemBankMismatchError

    vec = _vector(tiny).relabel(bank=papi.bank.fingerprint())
    vec.check_bank(papi.bank)
    other = ItemBank(tuple(dataclasses.replace(it, text=it.text + " Often.") if it.id == 1 else it
                           for it in papi.bank.items))
    with pytest.raises(ItemBankMismatchError, match="another item bank.*--allow-other-items"):
        vec.check_bank(other)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        vec.check_bank(other, allow_other=True)
    assert any("another item bank" in str(w.message) for w in seen)
    back = SteeringVector.load(vec.save(tmp_path / "v.safetensors"))
    with pytest.raises(ItemBankMismatchError):
        back.check_bank(other)
    _vector(tiny).check_bank(other)  # a vector that does not record its bank (older files) passes
