"""Transfer sets: reworded test statements and the IPIP-100 markers, and their scoring in the run loop."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pas.core.items import PapiDataError
from pas.core.transfer import REWORDED_FILE, load_markers, load_reworded, load_transfer

MARKERS = Path(__file__).resolve().parents[2] / "shared" / "ipip100"


def _norm(t: str) -> str:
    return " ".join(t.lower().strip().rstrip(".!").split())


def test_reworded_sets_are_balanced_new_statements(papi):
    sets = load_reworded(papi.bank)
    assert set(sets) == {"paraphrase", "negation"}
    known = {_norm(it.text) for it in papi.bank.items}
    by_id = papi.bank.by_id
    for s in sets.values():
        assert len(s.ids) >= 60
        originals = list(s.source.values())
        assert set(originals) <= set(papi.bank.test_ids)  # rewording of held-out items only
        assert not {_norm(it.text) for it in s.bank.items} & known  # none of the 300 statements
        assert min(s.ids) > 300
        for d in "OCEAN":
            keys = [by_id[o].keyed for o in originals if by_id[o].domain == d]
            assert len(keys) == 12 and keys.count("+") == keys.count("-") == 6
    assert not set(sets["paraphrase"].ids) & set(sets["negation"].ids)


def test_negation_expects_six_minus_the_response(papi):
    sets = load_reworded(papi.bank)
    s = papi.subjects[0]
    para, neg = sets["paraphrase"].expected(s), sets["negation"].expected(s)
    for new, old in sets["negation"].source.items():
        if old in s.responses:
            assert neg[new] == 6 - s.responses[old]
    for new, old in sets["paraphrase"].source.items():
        if old in s.responses:
            assert para[new] == s.responses[old]
    # a negation flips the key: its keyed score equals the original's
    neg_items = sets["negation"].bank.by_id
    for new, old in sets["negation"].source.items():
        assert neg_items[new].keyed != papi.bank.by_id[old].keyed


def test_markers_leave_out_the_300(papi):
    m = load_markers(papi.bank, MARKERS)
    assert len(m.ids) == 46
    known = {_norm(it.text) for it in papi.bank.items}
    assert not {_norm(it.text) for it in m.bank.items} & known
    assert {it.domain for it in m.bank.items} == set("OCEAN")


def test_bad_transfer_files_are_named(papi, tmp_path):
    bad = tmp_path / "reworded.csv"
    rows = list(csv.DictReader(open(REWORDED_FILE)))
    first_train = papi.bank.train_ids[0]
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, ["item", "kind", "text"])
        w.writeheader()
        w.writerow({"item": first_train, "kind": "paraphrase", "text": "Something new."})
    with pytest.raises(PapiDataError, match="not a test item"):
        load_reworded(papi.bank, bad)
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, ["item", "kind", "text"])
        w.writeheader()
        w.writerow({**rows[0], "text": papi.bank.by_id[int(rows[0]["item"])].text})
    with pytest.raises(PapiDataError, match="repeats a statement"):
        load_reworded(papi.bank, bad)
    with pytest.raises(PapiDataError, match="no items.csv"):
        load_markers(papi.bank, tmp_path)


def test_transfer_scored_for_llm_methods_and_readout(tiny_llama, tokenizer, papi, tmp_path):
    from pas.eval.methods import MethodContext
    from pas.eval.run import read_record, run_methods
    from pas.eval.transfer import summarize_transfer, transfer_table
    from pas.score.scorer import ItemScorer

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    transfer = load_transfer(papi.bank, MARKERS)
    ctx = MethodContext(papi.bank, papi.subjects, scorer, transfer=transfer)
    people = papi.subjects[:3]
    recs = run_methods(ctx, people, ["base", "readout", "always-3"], out=tmp_path, progress=False)
    for method in ("base", "readout"):
        for r in recs[method]:
            t = r.transfer
            assert set(t) == {"paraphrase", "negation", "markers"}
            neg = t["negation"]
            s = next(p for p in people if p.case == r.case)
            expected = transfer.reworded["negation"].expected(s)
            assert neg["truth"] == [expected[i] for i in neg["ids"]]
            a = np.array(neg["answers"])
            assert neg["mae"] == pytest.approx(np.abs(a - np.array(neg["truth"])).mean())
            assert set(t["markers"]["domains"]) == set("OCEAN")
    assert all(not r.transfer for r in recs["always-3"])  # a yardstick that reads no statement
    back = read_record(tmp_path / "per_subject" / "base" / f"{people[0].case}.json")
    assert back.transfer == recs["base"][0].transfer
    summary = summarize_transfer(recs)
    assert set(summary) == {"base", "readout"} and summary["base"]["negation"]["n"] == 3
    table = transfer_table(summary)
    assert "| base | 3 |" in table and "markers r O" in table
