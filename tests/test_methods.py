import dataclasses

import numpy as np
import pytest

from pas.evaluate import score_subject
from pas.methods import METHODS, MethodContext, always_3, population_median, ridge, run_method


@pytest.fixture(scope="module")
def ctx(papi):
    return MethodContext(papi.bank, papi.subjects)


def test_always_3(ctx, papi):
    p = always_3(ctx, papi.subjects[0])
    assert p.ids == papi.bank.test_ids and set(p.answers) == {3}


def test_yardsticks_ignore_the_subjects_own_answers(ctx, papi):
    s = papi.subjects[0]
    flipped = dataclasses.replace(s, answers={i: (6 - a if i in papi.bank.test_ids else a) for i, a in s.answers.items()})
    others = [x for x in papi.subjects if x.case != s.case]
    ctx2 = MethodContext(papi.bank, [flipped, *others])
    for method in (population_median, ridge):
        assert np.array_equal(method(ctx, s).expected, method(ctx2, flipped).expected)


def test_ridge_beats_always_3(ctx, papi):
    subjects = papi.subjects[:10]
    r = np.mean([s.composite for s in run_method("ridge", ctx, subjects, progress=False)])
    a = np.mean([s.composite for s in run_method("always-3", ctx, subjects, progress=False)])
    assert r < a


def test_llm_method_needs_model(ctx, papi):
    with pytest.raises(ValueError, match="needs a model"):
        METHODS["base"](ctx, papi.subjects[0])


def test_unknown_method(ctx, papi):
    with pytest.raises(ValueError, match="unknown method"):
        run_method("nope", ctx, papi.subjects[:1])


def test_tiny_model_methods_run(tiny_llama, tokenizer, papi):
    from pas.scoring import ItemScorer

    ctx = MethodContext(papi.bank, papi.subjects, ItemScorer(tiny_llama, tokenizer, papi.bank))
    s = papi.subjects[0]
    for name in ("base", "description"):
        score = score_subject(papi.bank, s, METHODS[name](ctx, s))
        assert 0 <= score.composite <= 20
