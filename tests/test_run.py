import json

import pytest

from pas.eval.methods import MethodContext
from pas.eval.report import markdown_table, plot, summarize
from pas.eval.run import SettingsMismatchError, run_methods


def test_resume_and_report(papi, tmp_path):
    ctx = MethodContext(papi.bank, papi.subjects)
    subjects = papi.subjects[:3]
    settings = {"model": "m", "threads": 1}
    records = run_methods(ctx, subjects, ["always-3", "ridge"], out=tmp_path, settings=settings, progress=False)
    path = tmp_path / "per_subject" / "ridge" / f"{subjects[0].case}.json"
    rec = json.loads(path.read_text())
    assert len(rec["items"]) == rec["n_items"] > 0
    rec["composite"] = 99.0  # a resumed run reads what is there instead of recomputing
    path.write_text(json.dumps(rec))
    again = run_methods(ctx, subjects, ["always-3", "ridge"], out=tmp_path, settings=settings, progress=False)
    assert again["ridge"][0].composite == 99.0 and again["always-3"] == records["always-3"]
    summary = summarize(records, references=("ridge",))
    assert set(summary) == {"always-3", "ridge"}
    assert summary["always-3"]["vs_ridge"]["mean"] > 0
    assert summary["ridge"]["peak_rss_mb"] > 0
    table = markdown_table(summary, references=("ridge",))
    assert table.count("\n") == 3
    png = plot(summary, tmp_path / "p.png", "t")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_with_other_settings_is_refused(papi, tmp_path):
    ctx = MethodContext(papi.bank, papi.subjects)
    run_methods(ctx, papi.subjects[:1], ["always-3"], out=tmp_path, settings={"model": "a", "threads": 1},
                progress=False)
    before = (tmp_path / "settings.json").read_text()
    with pytest.raises(SettingsMismatchError, match=r"model: there 'a', now 'b'.*another --out"):
        run_methods(ctx, papi.subjects[:1], ["always-3"], out=tmp_path, settings={"model": "b", "threads": 1},
                    progress=False)
    assert (tmp_path / "settings.json").read_text() == before


def test_unscorable_subject_is_named_and_others_kept(papi, tmp_path):
    """A subject who answered 3 to everything: PAS cannot label contrasts; always-3 still scores them."""
    import dataclasses

    flat = dataclasses.replace(papi.subjects[0], responses={i: 3 for i in papi.subjects[0].responses})
    ctx = MethodContext(papi.bank, papi.subjects)
    from pas.eval.methods import METHODS, Method

    def refuse(ctx_, subject):  # stands in for PAS without loading a model: its first step on this subject
        import torch

        from pas.fit.activations import HeadActivations
        from pas.fit.directions import contrast_set

        ids = papi.bank.train_ids
        contrast_set(HeadActivations(ids, torch.zeros(len(ids), 2, 1, 1, 2)), subject.known(), subject.case)
        return METHODS["always-3"](ctx_, subject)

    METHODS["_refuses"] = Method("_refuses", refuse, "stands in for PAS")
    try:
        recs = run_methods(ctx, [flat, papi.subjects[1]], ["always-3", "_refuses"], progress=False)
    finally:
        del METHODS["_refuses"]
    assert [r.error is None for r in recs["always-3"]] == [True, True]
    err = recs["_refuses"][0].error
    assert f"subject {flat.case}" in err and "non-neutral" in err
    table = markdown_table(summarize(recs))
    assert f"_refuses: subject {flat.case} skipped" in table


def test_reversed_gain_kept_is_worked_out_by_hand():
    from pas.eval.report import markdown_table, reversed_gain_kept, summarize

    def rec(case, comp, rev=None):
        r = {"case": case, "composite": comp, "domains": {d: comp / 5 for d in "OCEAN"}, "expected_composite": comp,
             "papi_published": comp, "fit_seconds": 0.0, "eval_seconds": 0.0, "info": {}}
        if rev is not None:
            r["reversed"] = {"composite": rev}
        return r

    a3 = [rec("a", 3.0), rec("b", 3.4)]
    method = [rec("a", 2.8, 2.9), rec("b", 3.2, 3.3)]  # gain 0.2 each; reversed keeps 0.1 each
    assert abs(reversed_gain_kept(method, a3) - 0.5) < 1e-12
    assert reversed_gain_kept([rec("a", 3.1, 2.0), rec("b", 3.5, 2.0)], a3) is None  # no gain to keep
    summary = summarize({"always-3": a3, "m": method})
    assert abs(summary["m"]["reversed_composite"] - 3.1) < 1e-12
    assert "3.10 (50%)" in markdown_table(summary)
