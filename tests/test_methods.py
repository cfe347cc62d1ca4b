import dataclasses

import numpy as np
import pytest

from pas.evaluate import score_subject
from pas.methods import METHODS, MethodContext, always_3, population_median, ridge
from pas.run import run_methods


@pytest.fixture(scope="module")
def ctx(papi):
    return MethodContext(papi.bank, papi.subjects)


def test_always_3(ctx, papi):
    p = always_3(ctx, papi.subjects[0])
    assert p.ids == papi.bank.test_ids and set(p.answers) == {3}


def test_yardsticks_ignore_the_subjects_own_answers(ctx, papi):
    s = papi.subjects[0]
    flipped = dataclasses.replace(s, responses={i: (6 - a if i in papi.bank.test_ids else a) for i, a in s.responses.items()})
    others = [x for x in papi.subjects if x.case != s.case]
    ctx2 = MethodContext(papi.bank, [flipped, *others])
    for method in (population_median, ridge):
        assert np.array_equal(method(ctx, s).expected, method(ctx2, flipped).expected)


def test_ridge_beats_always_3(ctx, papi):
    subjects = papi.subjects[:10]
    recs = run_methods(ctx, subjects, ["ridge", "always-3"], progress=False)
    r, a = (np.mean([x["composite"] for x in recs[m]]) for m in ("ridge", "always-3"))
    assert r < a


def test_yardsticks_score_the_same_in_either_encoding(ctx, papi):
    """MAE of a population yardstick does not depend on whether it learned responses or keyed scores."""
    import dataclasses

    from pas.data import keyed_score

    by_id = papi.bank.by_id
    keyed = [dataclasses.replace(s, responses=s.keyed_scores()) for s in papi.subjects]
    ctx_k = MethodContext(papi.bank, keyed)
    for method in (population_median, ridge):
        for s, sk in zip(papi.subjects[:3], keyed[:3]):
            p, pk = method(ctx, s), method(ctx_k, sk)
            flipped = np.array([keyed_score(by_id[i], a) for i, a in zip(pk.ids, pk.answers)])
            assert np.array_equal(p.answers, flipped)
            assert score_subject(papi.bank, s, p).composite == pytest.approx(
                score_subject(papi.bank, sk, pk).composite)


def test_llm_method_needs_model(ctx, papi):
    with pytest.raises(ValueError, match="needs a model"):
        METHODS["base"](ctx, papi.subjects[0])


def test_unknown_method(ctx, papi):
    with pytest.raises(ValueError, match="unknown method"):
        run_methods(ctx, papi.subjects[:1], ["nope"], progress=False)


def test_tiny_model_methods_run(tiny_llama, tokenizer, papi):
    from pas.scoring import ItemScorer

    ctx = MethodContext(papi.bank, papi.subjects, ItemScorer(tiny_llama, tokenizer, papi.bank))
    s = papi.subjects[0]
    for name in ("base", "description"):
        score = score_subject(papi.bank, s, METHODS[name](ctx, s))
        assert 0 <= score.composite <= 20
