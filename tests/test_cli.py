"""The command line's checks: each bad combination is refused before any model work, with a clear message."""

import json
import re
import sys

import pytest
import torch

from pas.cli.main import main
from pas.steer.vector import Provenance, SteeringVector

REPO_BENCHMARKS = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks")


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the command must refuse before it."""
    import pas.core.models

    def refuse(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pas.core.models, "load_model", refuse)


def _error(capsys, argv: list[str], code: int = 2) -> str:
    """Run ``pas argv``: it must exit ``code`` with the ``pas <cmd>: error:`` prefix; returns the message after it."""
    try:
        got = main(argv)
    except SystemExit as e:  # argparse's own errors exit from parse_args
        got = e.code
    err = capsys.readouterr().err
    prefix = f"pas {argv[0]}: error: "
    assert got == code and prefix in err, (got, err)
    return err.split(prefix, 1)[1]


def _strict(line: str):
    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=no_constant)


def test_first_counts(data_dir, capsys, no_model):
    assert main(["eval", "--data-dir", str(data_dir), "--first", "-1", "--method", "always-3"]) == 2
    assert ">= 1, got -1" in capsys.readouterr().err
    assert "not both" in _error(capsys, ["eval", "--data-dir", str(data_dir), "--first", "1", "--subject", "172481",
                                         "--method", "always-3"])
    assert main(["eval", "--data-dir", str(data_dir), "--first", "100000", "--method", "always-3", "--json"]) == 0
    out = capsys.readouterr()
    assert "more than the 200 subjects" in out.err and "running all 200" in out.err
    assert len(_strict(out.out.splitlines()[-1])["subjects"]) == 200


def test_json_is_strict_with_one_subject(data_dir, capsys, no_model):
    assert main(["eval", "--data-dir", str(data_dir), "--subject", "172481", "--method", "always-3", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    report = _strict(line)
    assert report["composite_ci"] == [None, None] and report["per_subject"][0]["items"]


def test_vector_only_with_the_method_that_made_it(data_dir, tiny_llama, tmp_path, capsys, no_model):
    made = Provenance(subject="172481", method="pas-learned", config={"learn": True})
    path = SteeringVector.for_model(tiny_llama, torch.zeros(3, 4, 8), provenance=made).save(tmp_path / "v.safetensors")
    base = ["eval", "--data-dir", str(data_dir), "--subject", "172481", "--vector", str(path)]
    assert re.search(r"--vector is used only by pas.*ignored by \['always-3'\]",
                     _error(capsys, base + ["--method", "always-3"]))
    assert re.search("was made by pas-learned.*use --method pas-learned", _error(capsys, base + ["--method", "pas"]))


def test_align_checks_out_before_any_work(data_dir, tmp_path, capsys, no_model):
    existing = tmp_path / "v.safetensors"
    existing.write_text("keep me")
    args = ["align", "--data-dir", str(data_dir), "--subject", "172481", "--out"]
    assert main(args + [str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_text() == "keep me"
    (tmp_path / "f").write_text("x")
    assert main(args + [str(tmp_path / "f" / "v.safetensors")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert main(args + [str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("strength", ["nan", "inf", "1e9", "-11"])
def test_absurd_chat_strength_is_refused_first(strength, tmp_path, tiny_llama, capsys, no_model):
    path = SteeringVector.for_model(tiny_llama, torch.zeros(3, 4, 8)).save(tmp_path / "v.safetensors")
    assert main(["chat", "--vector", str(path), "--strength", strength, "--prompt", "hi"]) == 2
    assert "--strength" in capsys.readouterr().err


def test_threads_option(data_dir, no_model):
    before = torch.get_num_threads()
    try:
        assert main(["eval", "--threads", "1", "--data-dir", str(data_dir), "--subject", "172481",
                     "--method", "always-3", "--json"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_benchmark_counts_and_no_model_without_llm_methods(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(REPO_BENCHMARKS)
    import pas_vs_dpo

    def refuse(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pas_vs_dpo, "load_model", refuse)
    monkeypatch.setattr(pas_vs_dpo, "head_activations", refuse)
    with pytest.raises(SystemExit, match="N >= 1"):
        pas_vs_dpo.main(["--data-dir", str(data_dir), "--subjects", "0", "--out", str(tmp_path / "a")])
    assert pas_vs_dpo.main(["--data-dir", str(data_dir), "--subjects", "2", "--methods", "always-3,ridge",
                            "--out", str(tmp_path / "b")]) == 0
    assert "| ridge | 2 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="other settings"):  # the same folder with other threads: refused
        torch_threads = torch.get_num_threads()
        try:
            torch.set_num_threads(torch_threads + 1)
            pas_vs_dpo.main(["--data-dir", str(data_dir), "--subjects", "2", "--methods", "always-3",
                             "--out", str(tmp_path / "b")])
        finally:
            torch.set_num_threads(torch_threads)
    sys.modules.pop("pas_vs_dpo", None)


def test_assess_and_chat_sources_are_checked_first(data_dir, capsys, no_model):
    base = ["assess", "--data-dir", str(data_dir)]
    assert "not several" in _error(capsys, base + ["--trait", "E+", "--type", "INFP"])
    assert "trait pole" in _error(capsys, base + ["--trait", "X+"])
    assert "MBTI" in _error(capsys, base + ["--type", "INFQ"])
    assert "--strength needs" in _error(capsys, base + ["--strength", "0.5"])
    assert "no such file" in _error(capsys, base + ["--cases", "/nonexistent/cases.txt"])
    assert "--strength needs" in _error(capsys, ["chat", "--strength", "0.5", "--prompt", "hi"])
    assert "not several" in _error(capsys, ["chat", "--system", "You are shy.", "--trait", "E+", "--prompt", "hi"])


def test_chat_with_a_system_prompt(tiny_llama, tokenizer, monkeypatch, capsys):
    """``pas chat --system TEXT``: the persona as a prompt (the baseline a vector is compared with), no vector."""
    import pas.core.models
    import pas.steer.chat

    seen = {}

    def fake_generate(model, tok, prompt, vector=None, **kw):
        seen.update(prompt=prompt, vector=vector, **kw)
        return "a reply"

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    monkeypatch.setattr(pas.steer.chat, "generate", fake_generate)
    assert main(["chat", "--system", "You are a blunt engineer.", "--prompt", "hi"]) == 0
    assert seen["system"] == "You are a blunt engineer." and seen["vector"] is None and seen["prompt"] == "hi"
    assert "a reply" in capsys.readouterr().out


def test_traits_out_is_checked_first(data_dir, tmp_path, capsys, no_model):
    (tmp_path / "E+.safetensors").write_text("keep me")
    assert main(["traits", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "E+.safetensors").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    assert "is a file" in _error(capsys, ["traits", "--data-dir", str(data_dir), "--out", str(tmp_path / "file")])


def test_persona_is_checked_first(data_dir, tmp_path, capsys, no_model):
    assert "persona's text" in _error(capsys, ["persona", "", "--out", str(tmp_path / "p.safetensors"),
                                               "--data-dir", str(data_dir)])
    (tmp_path / "p.safetensors").write_text("keep me")
    assert main(["persona", "a quiet librarian", "--out", str(tmp_path / "p.safetensors"),
                 "--data-dir", str(data_dir)]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "p.safetensors").read_text() == "keep me"
    assert "--persona is empty" in _error(capsys, ["assess", "--data-dir", str(data_dir), "--persona", " "])


def test_persona_describe_picks_one_source_and_a_known_case(data_dir, tmp_path, capsys, no_model):
    out = str(tmp_path / "p.safetensors")
    assert "one of them" in _error(capsys, ["persona", "a quiet librarian", "--describe", "172481", "--out", out,
                                            "--data-dir", str(data_dir)])
    assert main(["persona", "--describe", "no-such-person", "--out", out, "--data-dir", str(data_dir)]) == 2
    assert "unknown subject ids" in capsys.readouterr().err


def test_persona_describe_distils_the_template_description(data_dir, tmp_path, capsys, monkeypatch, tiny_llama,
                                                           tokenizer):
    import pas.core.models
    from pas.steer.vector import SteeringVector

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    out = tmp_path / "p.safetensors"
    assert main(["persona", "--describe", "172481", "--out", str(out), "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "Extraversion:" in printed and "tokens per call" in printed
    assert SteeringVector.load(out).provenance.config["persona"].startswith("Your personality on the Big Five")


# ---------------------------------------------------------------- issue 27: bad input, refused clearly


@pytest.fixture
def tiny_model(monkeypatch, tiny_llama, tokenizer):
    """``load_model`` gives the tiny Llama (context 4096 tokens) with SmolLM2's tokenizer."""
    import pas.core.models

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))


def _refuse(name):
    def refuse(*a, **k):
        raise AssertionError(f"{name} ran: the input should have been refused first")

    return refuse


@pytest.mark.parametrize("flag", ["--learn", "--few-shot", "--gate-both-orders"])
def test_boolean_flags_accept_only_clear_words(flag, capsys):
    from pas.cli.main import build_parser

    base = ["align", "--subject", "172481", "--out", "v.safetensors"]
    dest = flag[2:].replace("-", "_")
    for word, value in [("true", True), ("YES", True), ("1", True), ("False", False), ("no", False), ("0", False)]:
        assert getattr(build_parser().parse_args(base + [flag, word]), dest) is value
    for word in ["ture", "y", "on", ""]:
        message = _error(capsys, base + [flag, word])
        assert f"argument {flag}: expected true/false, yes/no or 1/0, got {word!r}" in message


def test_a_repeated_subject_is_scored_once(papi, capsys):
    import argparse

    from pas.cli.args import subjects

    args = argparse.Namespace(subject=["172481", "156978", "172481"], first=None)
    assert [s.case for s in subjects(args, papi)] == ["172481", "156978"]
    assert "note: --subject 172481 given more than once; each subject is scored once (2 subjects)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--vector", "--trait", "--type", "--cases", "--persona", "--system"])
def test_an_empty_steering_source_is_refused(flag, capsys, no_model):
    message = _error(capsys, ["chat", flag, "", "--prompt", "hi"])
    assert message.startswith(f"{flag} is empty: give")
    if flag != "--system":  # --strength with an empty source names the empty flag, not "--strength needs"
        assert _error(capsys, ["chat", flag, " ", "--strength", "0.5", "--prompt", "hi"]).startswith(f"{flag} is empty")


def test_an_empty_prompt_is_refused(capsys, no_model):
    assert "--prompt is empty" in _error(capsys, ["chat", "--prompt", "  "])


def test_long_chat_inputs_are_refused_before_work(tiny_model, monkeypatch, capsys):
    import pas.steer.chat
    import pas.steer.fluency

    monkeypatch.setattr(pas.steer.chat, "generate", _refuse("generate"))
    monkeypatch.setattr(pas.steer.fluency, "chat_strength", _refuse("chat_strength"))
    message = _error(capsys, ["chat", "--system", "x" * 50_000, "--prompt", "hi"])
    assert re.search(r"--system is [\d,]+ tokens; the model reads at most 4,096 tokens, 128 of them kept for "
                     r"the reply \(--max-new-tokens 128\): shorten --system by at least [\d,]+ tokens", message)
    message = _error(capsys, ["chat", "--prompt", "word " * 5000])
    assert "--prompt is 5,0" in message and "at most 4,096" in message and "shorten --prompt" in message
    message = _error(capsys, ["chat", "--system", "word " * 2500, "--prompt", "word " * 2500])
    assert "--system and --prompt together" in message
    assert "shorten --persona" in _error(capsys, ["chat", "--persona", "word " * 5000, "--prompt", "hi"])


def test_long_system_prompt_for_the_questionnaire_is_refused(data_dir, tiny_model, monkeypatch, capsys):
    import pas.score.assess

    monkeypatch.setattr(pas.score.assess, "assess", _refuse("assess"))
    message = _error(capsys, ["assess", "--data-dir", str(data_dir), "--system", "word " * 4050])
    assert "--system is 4,05" in message and "kept for the longest questionnaire prompt around it" in message


def test_long_persona_file_is_refused_before_distilling(data_dir, tiny_model, monkeypatch, tmp_path, capsys):
    import pas.space.persona

    monkeypatch.setattr(pas.space.persona, "fit_persona", _refuse("fit_persona"))
    persona = tmp_path / "persona.txt"
    persona.write_text("I am a retired nurse who volunteers at the library. " * 1000)  # 52,000 characters
    out = tmp_path / "new" / "dir" / "p.safetensors"
    message = _error(capsys, ["persona", "--file", str(persona), "--out", str(out), "--data-dir", str(data_dir)])
    assert re.search(r"--file is [\d,]+ tokens; the model reads at most 4,096 tokens, [\d,]+ of them kept for the "
                     r"longest questionnaire prompt around it: shorten --file by at least", message)
    assert not (tmp_path / "new").exists()  # the folders made for --out are removed again


@pytest.mark.parametrize("case", ["missing", "directory", "latin-1"])
def test_bad_text_files_name_the_flag_and_the_fix(case, data_dir, tmp_path, capsys, no_model):
    path = tmp_path / "text.txt"
    if case == "directory":
        path.mkdir()
    elif case == "latin-1":
        path.write_bytes("Zoë, a café owner\n172481\n".encode("latin-1"))
    expected = {"missing": "no such file; give the path of a UTF-8 text file",
                "directory": "is a directory, not a file; give the path of a UTF-8 text file",
                "latin-1": "is not UTF-8 text (byte 0xeb at offset 2); save it as UTF-8"}[case]
    out = str(tmp_path / "p.safetensors")
    message = _error(capsys, ["persona", "--file", str(path), "--out", out, "--data-dir", str(data_dir)])
    assert message.startswith(f"--file {path}") and expected in message
    message = _error(capsys, ["assess", "--data-dir", str(data_dir), "--cases", str(path)])
    assert message.startswith(f"--cases {path}") and expected in message


def test_messages_use_the_command_line_words(data_dir, tmp_path, capsys, no_model):
    existing = tmp_path / "v.safetensors"
    existing.write_text("keep me")
    message = _error(capsys, ["align", "--data-dir", str(data_dir), "--subject", "172481", "--out", str(existing)])
    assert "pass --overwrite" in message and "overwrite=True" not in message
    (tmp_path / "E+.safetensors").write_text("keep me")
    assert "pass --overwrite" in _error(capsys, ["traits", "--data-dir", str(data_dir), "--out", str(tmp_path)])
    message = _error(capsys, ["assess", "--data-dir", str(data_dir), "--encoding", "responses"])
    assert "pass --encoding keyed on the command line" in message


def test_exit_codes_two_for_input_one_for_failures(data_dir, tiny_model, monkeypatch, tmp_path, capsys):
    """One rule: 2 (with the ``pas <cmd>: error:`` prefix) for usage and input errors, 1 for a failure during work."""
    d = ["--data-dir", str(data_dir)]
    assert "unknown subject ids ['nobody']" in _error(capsys, ["align", *d, "--subject", "nobody",
                                                               "--out", str(tmp_path / "v.safetensors")])
    assert "argument --learn" in _error(capsys, ["align", *d, "--subject", "172481", "--out", "v", "--learn", "ture"])
    assert "not both" in _error(capsys, ["eval", *d, "--subject", "172481", "--first", "1", "--method", "always-3"])
    assert "unknown method(s) ['nope']" in _error(capsys, ["eval", *d, "--first", "1", "--method", "nope"])
    assert "does not exist" in _error(capsys, ["assess", "--data-dir", str(tmp_path / "nowhere")])
    assert "--threads must be >= 1" in _error(capsys, ["assess", *d, "--threads", "0"])
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 not a safetensors file")
    assert str(corrupt) in _error(capsys, ["chat", "--vector", str(corrupt), "--prompt", "hi"])

    def out_of_memory(*a, **k):
        raise RuntimeError("CUDA out of memory")

    import pas.steer.chat

    monkeypatch.setattr(pas.steer.chat, "generate", out_of_memory)
    assert _error(capsys, ["chat", "--prompt", "hi"], code=1) == "RuntimeError: CUDA out of memory\n"


def test_a_failed_align_leaves_no_empty_folders(data_dir, tiny_model, monkeypatch, tmp_path, capsys):
    import pas.fit.align

    kept = tmp_path / "kept"
    kept.mkdir()
    out = kept / "new" / "dir" / "v.safetensors"
    args = ["align", "--data-dir", str(data_dir), "--out", str(out)]
    assert "unknown subject" in _error(capsys, args + ["--subject", "nobody"])  # checked before anything is made
    assert not (kept / "new").exists()
    seen = {}

    def fails(*a, progress=None, **k):  # a failure after the folders were made: they are removed again
        seen["progress"] = progress
        raise RuntimeError("the fit failed")

    monkeypatch.setattr(pas.fit.align, "fit_subject", fails)
    assert _error(capsys, args + ["--subject", "172481"], code=1) == "RuntimeError: the fit failed\n"
    assert kept.is_dir() and not (kept / "new").exists()
    assert seen["progress"] is False  # stderr is not a terminal here: no bars, a line saying what runs
    (kept / "new").mkdir()
    (kept / "new" / "notes.txt").write_text("mine")
    _error(capsys, args + ["--subject", "172481"], code=1)
    assert (kept / "new" / "notes.txt").exists() and not (kept / "new" / "dir").exists()


def test_align_says_what_runs_when_stderr_is_not_a_terminal(data_dir, tiny_model, monkeypatch, tmp_path, capsys):
    import pas.fit.align

    def stop(*a, **k):
        raise RuntimeError("stop")

    monkeypatch.setattr(pas.fit.align, "fit_subject", stop)
    assert main(["align", "--data-dir", str(data_dir), "--subject", "172481", "--out",
                 str(tmp_path / "v.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "pas align: fitting subject 172481 (PASConfig); this takes minutes on a CPU" in err


def test_a_vector_for_another_item_bank_is_refused(data_dir, papi, tiny_model, tiny_llama, tmp_path, capsys):
    """#27 item 5: ``pas assess --data-dir OTHER --vector V`` refuses a vector fitted on another item bank, and
    ``--allow-other-items`` accepts it with a warning."""
    import shutil

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(data_dir / "subjects.json", other / "subjects.json")
    lines = (data_dir / "items.csv").read_text().splitlines()
    lines[1] = lines[1].replace("Worry about things.", "Worry about many things.")
    assert lines[1] != (data_dir / "items.csv").read_text().splitlines()[1]
    (other / "items.csv").write_text("\n".join(lines) + "\n")
    vec = SteeringVector.for_model(tiny_llama, torch.zeros(3, 4, 8),
                                   provenance=Provenance(bank=papi.bank.fingerprint()))
    path = vec.save(tmp_path / "v.safetensors")
    err = _error(capsys, ["assess", "--data-dir", str(other), "--vector", str(path), "--items", "120"])
    assert "another item bank" in err and "--allow-other-items" in err
    assert main(["assess", "--data-dir", str(data_dir), "--vector", str(path), "--items", "120", "--json"]) == 0
    capsys.readouterr()
    with pytest.warns(UserWarning, match="another item bank"):
        assert main(["assess", "--data-dir", str(other), "--vector", str(path), "--items", "120", "--json",
                     "--allow-other-items"]) == 0
