"""ConstantPlan (constant PAS and pas-learned, many people at once): the same vectors as fit_subject person by
person, people fit_subject refuses skipped with its reasons."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pas.fit.align import fit_subject
from pas.fit.config import GatedConfig, PASConfig
from pas.population.constant_many import ConstantPlan
from pas.score.many import score_many
from pas.score.scorer import ItemScorer

CONSTANT = PASConfig(learn=False)
LEARNED = PASConfig(steps=4, eval_every=2, patience=2)  # pas-learned, short


@pytest.fixture(scope="module")
def scorer(tiny_llama, tokenizer, papi):
    return ItemScorer(tiny_llama, tokenizer, papi.bank)


@pytest.fixture(scope="module")
def people(papi):
    """Five real people and one who skipped a known item."""
    train = papi.bank.train_ids
    missing = next(s for s in papi.subjects if len(s.responses_to(train)) < len(train))
    return [*papi.subjects[:5], missing]


def reference(tiny_llama, tokenizer, papi, people, config):
    """fit_subject person by person, on a scorer of its own (nothing shared with the plan)."""
    own = ItemScorer(tiny_llama, tokenizer, papi.bank)
    return [fit_subject(tiny_llama, s, config, scorer=own, progress=False) for s in people]


def assert_same_fits(scorer, fits, want):
    for fit, (vector, report) in zip(fits, want, strict=True):
        torch.testing.assert_close(fit.vector.offsets, vector.offsets, rtol=1e-5, atol=1e-6)
        assert fit.vector.gates is None and fit.vector.positions == vector.positions == "last"
        assert fit.vector.signature == vector.signature and fit.vector.provenance == vector.provenance
        assert fit.choice == (report.alpha,)
        assert fit.known_composite == pytest.approx(report.alpha_trace[report.alpha][0])
    ids = scorer.bank.test_ids  # the steered answers on the 180 test items, every person, identical
    got, expected = (score_many(scorer, ids, vectors) for vectors in ([f.vector for f in fits], [v for v, _ in want]))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.answers, b.answers)


def test_constant_plan_equals_fit_subject(tiny_llama, tokenizer, papi, scorer, people):
    want = reference(tiny_llama, tokenizer, papi, people, CONSTANT)
    plan = ConstantPlan(scorer, CONSTANT, max_rows=64)  # several passes per batch
    assert plan.method == "pas"
    fits, skipped = plan.fit_many(people)
    assert not skipped
    assert [f.vector.provenance.subject for f in fits] == [s.case for s in people]
    assert any(report.alpha > 0 for _, report in want), "some person should get a strength above 0"
    assert_same_fits(scorer, fits, want)


def test_learned_plan_equals_fit_subject(tiny_llama, tokenizer, papi, scorer, people):
    some = [people[0], people[-1]]  # one with every known item, one with an item missing
    want = reference(tiny_llama, tokenizer, papi, some, LEARNED)
    plan = ConstantPlan(scorer, LEARNED)
    assert plan.method == "pas-learned"
    fits, skipped = plan.fit_many(some)
    assert not skipped
    assert_same_fits(scorer, fits, want)


def test_people_fit_subject_refuses_are_skipped_with_its_reasons(tiny_llama, tokenizer, papi, scorer, people):
    s0, train, by_id = papi.subjects[0], set(papi.bank.train_ids), papi.bank.by_id
    few = dataclasses.replace(s0, case="few", responses={i: a for n, (i, a) in enumerate(s0.responses.items())
                                                         if i not in train or n % 20 == 0})
    no_o = dataclasses.replace(s0, case="no-openness",
                               responses={i: a for i, a in s0.responses.items() if by_id[i].domain != "O"})
    threes = dataclasses.replace(s0, case="all-threes", responses=dict.fromkeys(s0.responses, 3))
    own = ItemScorer(tiny_llama, tokenizer, papi.bank)
    reasons = {}
    for s in (few, no_o, threes):
        with pytest.raises(ValueError) as error:
            fit_subject(tiny_llama, s, CONSTANT, scorer=own, progress=False)
        reasons[s.case] = str(error.value)
    fits, skipped = ConstantPlan(scorer, CONSTANT).fit_many([few, people[0], no_o, threes])
    assert dict(skipped) == reasons and len(reasons) == 3
    assert [f.vector.provenance.subject for f in fits] == [people[0].case]


def test_refuses_what_it_cannot_batch(scorer):
    with pytest.raises(ValueError, match="positions='last', few_shot=False"):
        ConstantPlan(scorer, PASConfig(learn=False, positions="all"))
    with pytest.raises(ValueError, match="positions='last', few_shot=False"):
        ConstantPlan(scorer, PASConfig(few_shot=True))
    with pytest.raises(ValueError, match="PASConfig"):
        ConstantPlan(scorer, GatedConfig())  # type: ignore[arg-type]
