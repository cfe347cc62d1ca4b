import math

import numpy as np
import pytest

from pas.data import Item, ItemBank, Subject
from pas.evaluate import Prediction, mean_ci, paired_difference, score_subject, summarize


def _bank():
    items = [Item(i + 1, None, d, d + "1", "f", "+", f"t{i}") for i, d in enumerate("OOCCEEAANN")]
    return ItemBank(tuple(items))


def test_score_by_hand():
    bank = _bank()
    subj = Subject("s", {1: 5, 2: 1, 3: 3, 4: 3, 5: 2, 6: 2, 7: 4, 8: 4, 9: 1}, frozenset({10}))
    answers = np.array([4, 1, 3, 5, 2, 2, 4, 4, 3, 5])
    pred = Prediction(tuple(range(1, 11)), answers, answers.astype(float) + 0.5)
    s = score_subject(bank, subj, pred)
    assert s.domains == {"O": 0.5, "C": 1.0, "E": 0.0, "A": 0.0, "N": 2.0}  # item 10 is missing: not scored
    assert s.composite == pytest.approx(3.5)
    assert s.expected_domains["O"] == pytest.approx((0.5 + 0.5) / 2)
    assert s.n_items == 9


def test_domain_without_answers_raises():
    bank = _bank()
    subj = Subject("s", {i: 3 for i in range(1, 9)}, frozenset({9, 10}))
    with pytest.raises(ValueError, match="domain"):
        score_subject(bank, subj, Prediction(tuple(range(1, 11)), np.full(10, 3), np.full(10, 3.0)))


def test_mean_ci():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.302653 / math.sqrt(3), rel=1e-5) and hi > m
    assert math.isnan(mean_ci([1.0])[1])


def test_paired_difference():
    d = paired_difference([1, 2, 3, 4], [0, 1, 2, 3.5])
    assert d["mean"] == pytest.approx(0.875) and d["ci"][0] < 0.875 < d["ci"][1]


def test_summarize_keys():
    bank = _bank()
    subj = Subject("s", {i: 3 for i in range(1, 11)})
    s = score_subject(bank, subj, Prediction(tuple(range(1, 11)), np.full(10, 3), np.full(10, 3.0)))
    r = summarize("x", [s, s])
    assert r["composite"] == 0 and set(r["domains"]) == set("OCEAN") and r["subjects"] == ["s", "s"]
