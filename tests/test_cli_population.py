"""The population commands: ``pas synth``, ``pas align-population``, ``--store`` in ``pas eval`` and ``pas chat``."""

import json

import torch

from pas.cli.main import main
from pas.core.data import load_papi


def test_synth_writes_a_labelled_data_dir_that_loads(data_dir, tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["synth", "--data-dir", str(data_dir), "--people", "40", "--out", str(out), "--format", "json"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("SYNTHETIC population: 40 people") and "target <= 0.05" in printed
    assert json.loads((out / "papi.json").read_text())["synthetic"] is True
    data = load_papi(out)
    assert len(data.subjects) == 40 and all(s.case.startswith("synthetic-") for s in data.subjects)
    assert main(["synth", "--data-dir", str(data_dir), "--people", "5", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "--data-dir", str(data_dir), "--people", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--people must be >= 1" in capsys.readouterr().err


def test_align_population_then_eval_and_chat_from_the_store(data_dir, papi, tiny_llama, tokenizer, tmp_path,
                                                            monkeypatch, capsys):
    """``pas align-population`` fills a store (and resumes it), ``pas eval --store`` scores its vectors without
    refitting (the same answers as the vectors fitted person by person), ``pas chat --store --person`` steers."""
    import pas.core.models
    import pas.steer.chat
    from pas.fit.align import fit_subject
    from pas.fit.config import GatedConfig
    from pas.population.store import PopulationStore

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    cases = [s.case for s in papi.subjects[:3]]
    out = tmp_path / "store"
    flags = [f for c in cases for f in ("--subject", c)]
    assert main(["align-population", "--data-dir", str(data_dir), *flags[:4], "--out", str(out)]) == 0
    assert "real people" in capsys.readouterr().out
    assert main(["align-population", "--data-dir", str(data_dir), *flags, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "1 fitted, 2 already stored" in printed.out and "resuming" in printed.err
    store = PopulationStore(out)
    assert sorted(store.cases()) == sorted(cases)
    alone, _ = fit_subject(tiny_llama, papi.subjects[2], GatedConfig(), tokenizer=tokenizer, bank=papi.bank,
                           progress=False)
    torch.testing.assert_close(store[cases[2]].gates.weights, alone.gates.weights, rtol=1e-5, atol=1e-6)

    assert main(["eval", "--data-dir", str(data_dir), *flags, "--method", "pas-gated", "--store", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert sorted(report["subjects"]) == sorted(cases) and report["per_subject"][0]["info"].get("vector") == "given"
    assert main(["eval", "--data-dir", str(data_dir), *flags, "--method", "pas", "--store", str(out)]) == 2
    assert "pas-gated" in capsys.readouterr().err

    seen = {}
    monkeypatch.setattr(pas.steer.chat, "generate", lambda model, tok, prompt, vector=None, **kw:
                        seen.update(vector=vector) or "a reply")
    assert main(["chat", "--store", str(out), "--person", cases[0], "--strength", "0.5", "--prompt", "hi"]) == 0
    assert seen["vector"] is not None and "a reply" in capsys.readouterr().out
    assert main(["chat", "--store", str(out), "--person", "nobody", "--prompt", "hi"]) == 2
    assert "not in the store" in capsys.readouterr().err
    assert main(["chat", "--store", str(out), "--prompt", "hi"]) == 2
    assert "--store and --person go together" in capsys.readouterr().err


def test_align_population_constant_kind(data_dir, papi, tiny_llama, tokenizer, tmp_path, monkeypatch, capsys):
    """``--kind constant`` fills a store of pas vectors, the same as ``pas align`` person by person; a store of
    one kind is not resumed with another, and --calibration belongs to the gated kind."""
    from dataclasses import asdict

    import pas.core.models
    from pas.fit.config import PASConfig
    from pas.population.store import PopulationStore
    from pas.steer.vector import item_hash

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    case = papi.subjects[0].case
    out = tmp_path / "constant"
    assert main(["align-population", "--data-dir", str(data_dir), "--subject", case, "--kind", "constant",
                 "--out", str(out)]) == 0
    stored = PopulationStore(out)[case]
    known = papi.subjects[0].responses_to(papi.bank.train_ids)
    assert stored.kind == "constant" and stored.provenance.method == "pas"
    assert stored.provenance.item_hash == item_hash(known)
    assert stored.provenance.config == json.loads(json.dumps(asdict(PASConfig(learn=False))))
    # (equal to fit_subject's offsets: tests/test_population_constant.py, in one process)
    assert main(["align-population", "--data-dir", str(data_dir), "--subject", case, "--out", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["align-population", "--data-dir", str(data_dir), "--subject", case, "--kind", "constant",
                 "--calibration", "fast", "--out", str(tmp_path / "x")]) == 2
    assert "--calibration is for --kind gated" in capsys.readouterr().err
