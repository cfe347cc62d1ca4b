import json
import math

import numpy as np
import pytest

from pas.core.data import Item, ItemBank, Subject
from pas.eval.report import dumps, markdown_table, mean_ci, paired_difference, summarize
from pas.score.metric import Prediction, UnscorableSubject, objective, subject_errors


def _bank():
    """Two items per domain; the second of each is reverse-keyed."""
    items = [Item(i + 1, None, d, d + "1", "f", "+" if i % 2 == 0 else "-", f"t{i}")
             for i, d in enumerate("OOCCEEAANN")]
    return ItemBank(tuple(items))


def test_score_by_hand():
    bank = _bank()
    subj = Subject("s", {1: 5, 2: 1, 3: 3, 4: 3, 5: 2, 6: 2, 7: 4, 8: 4, 9: 1}, frozenset({10}))
    answers = np.array([4, 1, 3, 5, 2, 2, 4, 4, 3, 5])
    pred = Prediction(tuple(range(1, 11)), answers, answers.astype(float) + 0.5)
    s = subject_errors(bank, subj, pred)
    assert s.domains == {"O": 0.5, "C": 1.0, "E": 0.0, "A": 0.0, "N": 2.0}  # item 10 is missing: not scored
    assert s.composite == pytest.approx(3.5)
    assert s.expected_domains["O"] == pytest.approx((0.5 + 0.5) / 2)
    assert s.n_items == 9 and [it["item"] for it in s.items] == list(range(1, 10))
    assert s.items[1] == {"item": 2, "domain": "O", "keyed": "-", "response": 1, "answer": 1, "expected": 1.5}


def test_papi_published_compares_with_the_stored_keyed_score():
    """The paper's way: answer vs 6 - response on reverse-keyed items (here items 2, 4, ...)."""
    bank = _bank()
    subj = Subject("s", {i: 5 for i in range(1, 11)})
    pred = Prediction(tuple(range(1, 11)), np.full(10, 5), np.full(10, 5.0))
    s = subject_errors(bank, subj, pred)
    assert s.composite == 0.0
    # per domain: + item |5 - 5| = 0, - item |5 - (6 - 5)| = 4 -> mean 2, five domains -> 10
    assert s.papi_published == pytest.approx(10.0)


def test_domain_without_answers_raises():
    bank = _bank()
    subj = Subject("s", {i: 3 for i in range(1, 9)}, frozenset({9, 10}))
    with pytest.raises(UnscorableSubject, match="subject s: .*domain"):
        subject_errors(bank, subj, Prediction(tuple(range(1, 11)), np.full(10, 3), np.full(10, 3.0)))


def test_objective_is_the_composite_then_expected():
    bank = _bank()
    subj = Subject("s", {i: 4 for i in range(1, 11)})

    class Scores:
        answers = np.full(10, 3)
        expected = np.full(10, 3.5)

    o = objective(bank, subj, tuple(range(1, 11)), Scores())
    assert o.composite == pytest.approx(5.0) and o.expected == pytest.approx(2.5) and o.key == (False, 5.0, o.expected)

    class NotAnswering(Scores):  # a perfect composite from five near-zero letter probabilities
        answers = np.full(10, 4)
        letter_mass = np.full(10, 0.01)

    bad = objective(bank, subj, tuple(range(1, 11)), NotAnswering())
    assert bad.composite == 0 and not bad.answering and bad.key > o.key


def test_mean_ci():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.302653 / math.sqrt(3), rel=1e-5) and hi > m
    assert math.isnan(mean_ci([1.0])[1])


def test_paired_difference():
    d = paired_difference([1, 2, 3, 4], [0, 1, 2, 3.5])
    assert d["mean"] == pytest.approx(0.875) and d["ci"][0] < 0.875 < d["ci"][1] and d["n"] == 4


def _record(case, composite, **kw):
    return {"case": case, "composite": composite, "expected_composite": composite, "papi_published": composite,
            "domains": {d: composite / 5 for d in "OCEAN"}, "fit_seconds": 1.0, "eval_seconds": 2.0,
            "peak_rss_mb": 10.0, "info": {}, **kw}


def test_summary_table_and_strict_json():
    records = {"always-3": [_record("a", 3.0), _record("b", 3.2), _record("c", 3.1)],
               "pas": [_record("a", 2.0), _record("b", 2.5), {"case": "c", "error": "subject c: too few answers"}]}
    summary = summarize(records, references=("always-3",))
    assert summary["pas"]["subjects"] == ["a", "b"] and summary["pas"]["skipped"][0]["case"] == "c"
    assert summary["pas"]["vs_always-3"]["n"] == 2 and summary["pas"]["vs_always-3"]["mean"] == pytest.approx(-0.85)
    table = markdown_table(summary, ("always-3",))
    assert "Δ vs always-3" in table and "pas: subject c skipped: subject c: too few answers" in table
    one = summarize({"pas": [_record("a", 2.0)]})["pas"]
    text = dumps(one)
    assert "NaN" not in text and json.loads(text)["composite_ci"] == [None, None]
