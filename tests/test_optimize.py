import pytest
import torch

from pas.fit.optimize import Objective, expected_abs_error, search_alpha, split_known


def test_split_known_balanced_and_deterministic(papi):
    s = papi.subjects[0]
    known = s.responses_to(papi.bank.train_ids)
    fit, val = split_known(papi.bank, known, 1 / 3, seed=0)
    assert set(fit).isdisjoint(val) and set(fit) | set(val) == set(known)
    doms = papi.bank.domains_of(val)
    assert all(doms.count(d) == 8 for d in "OCEAN")
    assert split_known(papi.bank, known, 1 / 3, seed=0) == (fit, val)
    assert split_known(papi.bank, known, 1 / 3, seed=1) != (fit, val)
    assert set(fit).isdisjoint(papi.bank.test_ids)


def test_search_alpha_finds_minimum():
    calls = []

    def f(a):
        calls.append(a)
        return Objective(round(abs(a - 5.3)), (a - 5.3) ** 2)

    best, trace = search_alpha(f, (0, 1, 2, 4, 8, 16), refine_steps=12)
    assert abs(best - 5.3) < 0.1
    assert len(trace) == len(set(calls))


def test_expected_abs_error_by_hand():
    logits = torch.full((2, 6), -1e9)
    logits[0, 0] = 0  # all mass on A (=5)
    logits[1, 1] = logits[1, 2] = 0  # half B (=4), half C (=3)
    targets = torch.tensor([3.0, 3.0])
    assert float(expected_abs_error(logits, targets)) == pytest.approx((2.0 + 0.5) / 2)
