"""The command line's checks: each bad combination is refused before any model work, with a clear message."""

import json
import sys

import pytest
import torch

from pas.cli.main import main
from pas.steer.vector import SteeringVector

REPO_BENCHMARKS = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks")


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the command must refuse before it."""
    import pas.core.models

    def refuse(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pas.core.models, "load_model", refuse)


def _strict(line: str):
    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=no_constant)


def test_first_counts(data_dir, capsys, no_model):
    assert main(["eval", "--data-dir", str(data_dir), "--first", "-1", "--method", "always-3"]) == 2
    assert ">= 1, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not both"):
        main(["eval", "--data-dir", str(data_dir), "--first", "1", "--subject", "172481", "--method", "always-3"])
    assert main(["eval", "--data-dir", str(data_dir), "--first", "100000", "--method", "always-3", "--json"]) == 0
    out = capsys.readouterr()
    assert "more than the 200 subjects" in out.err and "running all 200" in out.err
    assert len(_strict(out.out.splitlines()[-1])["subjects"]) == 200


def test_json_is_strict_with_one_subject(data_dir, capsys, no_model):
    assert main(["eval", "--data-dir", str(data_dir), "--subject", "172481", "--method", "always-3", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    report = _strict(line)
    assert report["composite_ci"] == [None, None] and report["per_subject"][0]["items"]


def test_vector_only_with_the_method_that_made_it(data_dir, tiny_llama, tmp_path, no_model):
    path = SteeringVector.for_model(tiny_llama, torch.zeros(3, 4, 8), subject="172481",
                                    config={"learn": True}).save(tmp_path / "v.safetensors")
    base = ["eval", "--data-dir", str(data_dir), "--subject", "172481", "--vector", str(path)]
    with pytest.raises(SystemExit, match=r"--vector is used only by pas.*ignored by \['always-3'\]"):
        main(base + ["--method", "always-3"])
    with pytest.raises(SystemExit, match="was made by pas-learned.*use --method pas-learned"):
        main(base + ["--method", "pas"])


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
    with pytest.raises(SystemExit, match="not several"):
        main(base + ["--trait", "E+", "--type", "INFP"])
    with pytest.raises(SystemExit, match="trait pole"):
        main(base + ["--trait", "X+"])
    with pytest.raises(SystemExit, match="MBTI"):
        main(base + ["--type", "INFQ"])
    with pytest.raises(SystemExit, match="--strength needs"):
        main(base + ["--strength", "0.5"])
    with pytest.raises(SystemExit, match="no such file"):
        main(base + ["--cases", "/nonexistent/cases.txt"])
    with pytest.raises(SystemExit, match="--strength needs"):
        main(["chat", "--strength", "0.5", "--prompt", "hi"])
    with pytest.raises(SystemExit, match="not several"):
        main(["chat", "--system", "You are shy.", "--trait", "E+", "--prompt", "hi"])


def test_chat_with_a_system_prompt(tiny_llama, tokenizer, monkeypatch, capsys):
    """``pas chat --system TEXT``: the persona as a prompt (the baseline a vector is compared with), no vector."""
    import pas.steer.chat
    import pas.core.models

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
    with pytest.raises(SystemExit, match="is a file"):
        main(["traits", "--data-dir", str(data_dir), "--out", str(tmp_path / "file")])


def test_persona_is_checked_first(data_dir, tmp_path, capsys, no_model):
    with pytest.raises(SystemExit, match="persona's text"):
        main(["persona", "", "--out", str(tmp_path / "p.safetensors"), "--data-dir", str(data_dir)])
    (tmp_path / "p.safetensors").write_text("keep me")
    assert main(["persona", "a quiet librarian", "--out", str(tmp_path / "p.safetensors"),
                 "--data-dir", str(data_dir)]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "p.safetensors").read_text() == "keep me"
    with pytest.raises(SystemExit, match="--persona is empty"):
        main(["assess", "--data-dir", str(data_dir), "--persona", " "])


def test_persona_describe_picks_one_source_and_a_known_case(data_dir, tmp_path, capsys, no_model):
    out = str(tmp_path / "p.safetensors")
    with pytest.raises(SystemExit, match="one of them"):
        main(["persona", "a quiet librarian", "--describe", "172481", "--out", out, "--data-dir", str(data_dir)])
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
    assert SteeringVector.load(out).config["persona"].startswith("Your personality on the Big Five")
