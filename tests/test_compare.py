import json

from pas.compare import markdown_table, plot, run_comparison, summarize_records
from pas.methods import MethodContext


def test_resume_and_report(papi, tmp_path):
    ctx = MethodContext(papi.bank, papi.subjects)
    subjects = papi.subjects[:3]
    records = run_comparison(papi, subjects, ["always-3", "ridge"], tmp_path, ctx, progress=False)
    path = tmp_path / "per_subject" / "ridge" / f"{subjects[0].case}.json"
    rec = json.loads(path.read_text())
    rec["composite"] = 99.0  # a resumed run reads what is there instead of recomputing
    path.write_text(json.dumps(rec))
    again = run_comparison(papi, subjects, ["always-3", "ridge"], tmp_path, ctx, progress=False)
    assert again["ridge"][0]["composite"] == 99.0 and again["always-3"] == records["always-3"]
    summary = summarize_records(records, reference="ridge")
    assert set(summary) == {"always-3", "ridge"}
    assert summary["always-3"]["vs_ridge"]["mean"] > 0
    assert summary["ridge"]["peak_rss_mb"] > 0
    table = markdown_table(summary, reference="ridge")
    assert table.count("\n") == 3
    png = plot(summary, tmp_path / "p.png", "t")
    assert png.read_bytes()[:4] == b"\x89PNG"
