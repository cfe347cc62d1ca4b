"""``pas eval``: resume that notices what records depended on, Ctrl-C, file errors, the compact table."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from pas.cli.main import main
from pas.eval.methods import METHODS, Method
from pas.eval.yardsticks import always_3

N_PEOPLE = 5


@pytest.fixture
def small_dir(data_dir, tmp_path):
    """A data dir of our own: the real item bank and the first few real people (never written in the shared one)."""
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(data_dir / "items.csv", d / "items.csv")
    people = json.loads((data_dir / "subjects.json").read_text())[:N_PEOPLE]
    (d / "subjects.json").write_text(json.dumps(people))
    return d


def _set_answers(data: Path, index: int, value: int) -> str:
    path = data / "subjects.json"
    people = json.loads(path.read_text())
    people[index] = {k: (value if k.startswith("i") and k[1:].isdigit() else v) for k, v in people[index].items()}
    path.write_text(json.dumps(people))
    return str(people[index]["case"])


def _json_lines(out: str) -> dict:
    return {(r := json.loads(line))["method"]: r for line in out.splitlines() if line.startswith("{")}


def test_resume_notices_changed_answers(small_dir, tmp_path, capsys):
    """#27 item 1: a record made on other answers is recomputed (and said so), never reused."""
    out = tmp_path / "out"
    args = ["eval", "--data-dir", str(small_dir), "--first", "1", "--method", "always-3", "--out", str(out), "--json"]
    assert main(args) == 0
    first = _json_lines(capsys.readouterr().out)["always-3"]["composite"]
    assert first > 0.5
    case = _set_answers(small_dir, 0, 3)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert _json_lines(captured.out)["always-3"]["composite"] == 0.0
    assert f"recomputing always-3 for subject {case}" in captured.err and "answers changed" in captured.err
    assert main(args) == 0  # now up to date: reused without a word
    captured = capsys.readouterr()
    assert "recomputing" not in captured.err and _json_lines(captured.out)["always-3"]["composite"] == 0.0


def test_population_methods_notice_the_other_people(small_dir, tmp_path, capsys):
    """population-median and ridge learn from the others: another person's answers change their record,
    not always-3's."""
    out = tmp_path / "out"
    args = ["eval", "--data-dir", str(small_dir), "--first", "1", "--method", "always-3", "--method",
            "population-median", "--out", str(out), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    _set_answers(small_dir, 3, 5)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "recomputing population-median" in err and "the other subjects' answers changed" in err
    assert "recomputing always-3" not in err


def test_resume_notices_another_vector(data_dir, tmp_path, capsys, monkeypatch, tiny_llama, tokenizer):
    """#27 item 2: a record made with one --vector is not reused for another."""
    import pas.core.models
    from pas.eval.fingerprint import file_digest
    from pas.steer.vector import SteeringVector

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    zero = SteeringVector.for_model(tiny_llama, torch.zeros(3, 4, 8)).save(tmp_path / "zero.safetensors")
    other = SteeringVector.for_model(tiny_llama, torch.full((3, 4, 8), 0.5)).save(tmp_path / "other.safetensors")
    base = ["eval", "--data-dir", str(data_dir), "--subject", "172481", "--method", "pas", "--json"]
    out = ["--out", str(tmp_path / "out")]
    assert main(base + ["--vector", str(zero)] + out) == 0
    capsys.readouterr()
    assert main(base + ["--vector", str(other)] + out) == 0
    captured = capsys.readouterr()
    assert "recomputing pas for subject 172481" in captured.err and "--vector" in captured.err
    resumed = _json_lines(captured.out)["pas"]
    assert resumed["per_subject"][0]["fingerprint"]["vector"] == file_digest(other)
    assert main(base + ["--vector", str(other)]) == 0  # the same vector, no --out: the same answers
    fresh = _json_lines(capsys.readouterr().out)["pas"]
    assert [it["answer"] for it in fresh["per_subject"][0]["items"]] == \
        [it["answer"] for it in resumed["per_subject"][0]["items"]]
    assert main(base + ["--vector", str(tmp_path)]) == 2
    assert "is a folder; give a vector file" in capsys.readouterr().err


def test_a_method_is_compared_only_on_what_it_uses(small_dir, tmp_path, capsys):
    """#27 item 12: an always-3 run over a folder made with other PAS settings is accepted and reused."""
    out = tmp_path / "out"
    args = ["eval", "--data-dir", str(small_dir), "--first", "2", "--method", "always-3", "--out", str(out), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--k", "12", "--learn", "false", "--gate-layer", "-2"]) == 0
    assert "recomputing" not in capsys.readouterr().err


def test_a_changed_fit_setting_recomputes_only_the_method_that_uses_it(papi, tmp_path, capsys, monkeypatch):
    """A PAS record depends on its PASConfig: a change names the field (there / now), once."""
    from pas.eval.context import MethodContext
    from pas.eval.run import run_methods
    from pas.fit.config import PASConfig

    monkeypatch.setitem(METHODS, "pas-like", Method("pas-like", always_3, "always-3 with PAS's dependencies",
                                                    settings=METHODS["pas"].settings))
    people, methods = papi.subjects[:1], ["always-3", "pas-like"]
    run_methods(MethodContext(papi.bank, papi.subjects, pas_config=PASConfig()), people, methods, out=tmp_path,
                progress=False)
    capsys.readouterr()
    run_methods(MethodContext(papi.bank, papi.subjects, pas_config=PASConfig(k=12)), people, methods, out=tmp_path,
                progress=False)
    err = capsys.readouterr().err
    assert err.count("recomputing") == 1 and "recomputing pas-like" in err
    assert "pas_config.k: there 24, now 12" in err and "alpha_grid" not in err


def test_settings_mismatch_names_only_the_differing_fields(papi, tmp_path):
    from pas.eval.context import MethodContext
    from pas.eval.run import SettingsMismatchError, run_methods

    ctx = MethodContext(papi.bank, papi.subjects)
    shared = {"model": "m", "dtype": "fp32", "threads": 1, "prefill": "(", "data_dir": "/d", "encoding": "keyed"}
    run_methods(ctx, papi.subjects[:1], ["always-3"], out=tmp_path, settings=shared, progress=False)
    with pytest.raises(SettingsMismatchError) as e:
        run_methods(ctx, papi.subjects[:1], ["always-3"], out=tmp_path, settings={**shared, "threads": 2},
                    progress=False)
    message = str(e.value)
    assert "threads: there 1, now 2" in message
    assert all(k not in message for k in ("model", "dtype", "prefill", "data_dir", "encoding"))


def test_an_old_folder_is_read_and_its_records_recomputed(papi, tmp_path, capsys):
    """A folder from before fingerprints: its settings.json (with per-method configs) is accepted; its records,
    which do not say what they depended on, are recomputed with a note rather than trusted."""
    from pas.eval.context import MethodContext
    from pas.eval.run import record_path, run_methods

    shared = {"model": "m", "threads": 1}
    (tmp_path / "settings.json").write_text(json.dumps({**shared, "reverse_options": False, "pas_config": {"k": 24},
                                                         "gated_config": None, "dpo_settings": None}))
    subject = papi.subjects[0]
    old = {"case": subject.case, "composite": 99.0, "domains": {d: 1.0 for d in "OCEAN"}, "expected_composite": 99.0,
           "expected_domains": {d: 1.0 for d in "OCEAN"}, "papi_published": 99.0, "n_items": 0, "fit_seconds": 0.0,
           "eval_seconds": 0.0, "peak_rss_mb": 1.0, "info": {}, "items": []}
    path = record_path(tmp_path, "always-3", subject.case)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(old))
    recs = run_methods(MethodContext(papi.bank, papi.subjects), [subject], ["always-3"], out=tmp_path,
                       settings=shared, progress=False)
    assert recs["always-3"][0].composite < 20 and "made before records kept" in capsys.readouterr().err
    assert json.loads((tmp_path / "settings.json").read_text()) == shared


def _interrupt_on(call: int):
    calls = []

    def run(ctx, subject):
        calls.append(subject.case)
        if len(calls) == call:
            raise KeyboardInterrupt
        return always_3(ctx, subject)

    return Method("always-3", run, "always-3, interrupted")


def test_ctrl_c_says_what_was_kept_and_how_to_resume(small_dir, tmp_path, capsys, monkeypatch):
    """#27 item 10: one line, exit 130, the exact command that resumes; resuming finishes the run."""
    out = tmp_path / "out dir"
    args = ["eval", "--data-dir", str(small_dir), "--first", "3", "--method", "always-3", "--out", str(out), "--json"]
    with monkeypatch.context() as m:
        m.setitem(METHODS, "always-3", _interrupt_on(2))
        assert main(args) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "1 record(s) of always-3 kept in" in err and str(out / "per_subject") in err
    command = err.split("resume with: ")[1]
    assert shlex.split(command) == ["pas", "eval", "--data-dir", str(small_dir), "--first", "3", "--method", "always-3",
                                    "--json", "--out", str(out)]
    assert main(shlex.split(command)[1:]) == 0
    assert len(_json_lines(capsys.readouterr().out)["always-3"]["subjects"]) == 3
    with monkeypatch.context() as m:
        m.setitem(METHODS, "always-3", _interrupt_on(1))
        assert main(args[:-3] + ["--json"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing was kept" in err


def test_unreadable_files_are_named_with_the_fix(small_dir, tmp_path, capsys):
    """#27 item 11: a corrupt record or settings.json names the file and says to remove it; --out a file."""
    out = tmp_path / "out"
    args = ["eval", "--data-dir", str(small_dir), "--first", "1", "--method", "always-3", "--out", str(out), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    (record,) = (out / "per_subject" / "always-3").glob("*.json")
    for broken in ("{not json", "[1, 2]", "\xff\xfe"):
        record.write_bytes(broken.encode("latin-1"))
        assert main(args) == 2
        err = capsys.readouterr().err
        assert str(record) in err and "remove that file to recompute it" in err
    record.unlink()
    (out / "settings.json").write_text("{")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(out / "settings.json") in err and "remove that file" in err
    (out / "settings.json").unlink()
    assert main(args) == 0
    capsys.readouterr()
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert main(args[:-3] + ["--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file; give a folder" in capsys.readouterr().err


def test_compact_table_by_default_and_wide_on_request(small_dir, tmp_path, capsys):
    """#27 item 15: a newcomer's table with a legend and no interval on 3 people; the wide one on request."""
    base = ["eval", "--data-dir", str(small_dir), "--first", "3", "--method", "always-3", "--method", "ridge"]
    assert main(base) == 0
    printed = capsys.readouterr().out
    assert "| method | composite | Δ vs always-3 | fit s/person |" in printed
    assert "lower is better; Δ < 0 means better than always-3" in printed
    assert "n too small" in printed and "(" not in printed.split("| ridge |")[1].splitlines()[0]
    assert main(base + ["--table", "wide", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "composite (95% CI)" in printed and "Wilcoxon p" in printed
    assert "composite (95% CI)" in (tmp_path / "o" / "results.md").read_text()
    assert main(base + ["--json"]) == 0
    reports = _json_lines(capsys.readouterr().out)
    assert reports["ridge"]["composite_ci"] == [None, None]  # a t-interval on 3 people would reach below 0
    assert main(base + ["--json", "--table", "wide"]) == 2


def test_make_demo_runs_what_pas_does_best():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    line = makefile.split("\ndemo:")[1].splitlines()[1]
    words = line.split()
    methods = [words[i + 1] for i, w in enumerate(words) if w == "--method"]
    assert methods == ["always-3", "population-median", "ridge", "base", "readout", "pas-gated"]
    assert all(m in METHODS for m in methods) and "--table" not in words and "--json" not in words


def test_the_resume_command_gives_the_same_arguments():
    from pas.cli.evaluate import command_line
    from pas.cli.main import build_parser

    argv = ["eval", "--subject", "1", "--subject", "2 3", "--method", "pas", "--method", "always-3", "--out", "o",
            "--alpha-grid", "0,1.5,3", "--learn", "false", "--reverse-options", "--threads", "1", "--dtype", "bf16"]
    parser = build_parser()
    args = parser.parse_args(argv)
    eval_parser = args.func.keywords["parser"]
    again = parser.parse_args(shlex.split(command_line(args, eval_parser))[1:])
    assert {k: v for k, v in vars(again).items() if k != "func"} == {k: v for k, v in vars(args).items() if k != "func"}


def test_a_persona_vector_given_to_eval_is_named_by_what_made_it(data_dir, tiny_llama, tmp_path, capsys):
    """#27 item 13: a persona vector given to ``pas eval --vector`` is refused as "made by persona", without quoting
    its (multi-line) persona text as a subject."""
    from pas.steer.vector import Provenance, SteeringVector

    made = Provenance(subject="A retired nurse.\nShe volunteers at the library.", method="persona")
    path = SteeringVector.for_model(tiny_llama, torch.zeros(3, 4, 8), provenance=made).save(tmp_path / "p.safetensors")
    assert main(["eval", "--data-dir", str(data_dir), "--subject", "172481", "--vector", str(path),
                 "--method", "pas"]) == 2
    err = capsys.readouterr().err
    assert "was made by persona" in err and "volunteers" not in err
