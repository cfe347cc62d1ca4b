"""The fast pas-gated calibration (pas.population.subspace): the last layer computed in the gates' span gives the
steered passes' letter logits; a fast plan chooses what the exact plan chooses, so the vectors are identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pas.fit.config import GatedConfig
from pas.population.gated_many import GRID, GatedPlan
from pas.population.subspace import supports
from pas.score.scorer import ItemScorer
from tests.test_population_fit import assert_same_vector, people, planted, scorer  # noqa: F401  (fixtures)


def test_supports_the_llama_family_only(tiny):
    reason = supports(tiny, 2)
    if tiny.config.model_type == "gpt2":
        assert reason is not None and "declares no" in reason or "not RMS" in reason
    else:
        assert reason is None
    assert "not the last" in (supports(tiny, 1) or "")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_subspace_letters_equal_steered_passes(arch, tokenizer, papi, people):  # noqa: F811
    """Every fold, person and (gain, shift): the letters' logits from the gates' span equal the exact steered
    passes' (and their argmax, the answers, needs no final norm)."""
    from tests.conftest import make_tiny

    model = make_tiny(arch, len(tokenizer))
    sc = ItemScorer(model, tokenizer, papi.bank)
    plan = GatedPlan(sc, GatedConfig(), calibration="exact")
    sub = plan._subspace()  # noqa: SLF001
    people = [planted(sc, s, i, f"p{i}") for i, s in enumerate(people[:3])] + people[:2]
    g = plan.complete
    y = np.array([[s.responses_to(plan.items)[i] for i in g.ids] for s in people], dtype=float)
    w, b = g.readouts(y)
    moving = [j for j, (gain, _) in enumerate(GRID) if gain != 0]
    exact = plan.calibration_logits(g, w, b, moving)[..., :5]
    n_heads = w.shape[2]
    for k, part in enumerate(g.folds):
        at = torch.tensor([plan.where[g.ids[i]] for i in part])
        reads = sub.readouts(at, w[k], b[k])
        for s_i, j in enumerate(moving):
            gain, shift = GRID[j]
            gates = (gain * (reads - 3.0) + shift) / n_heads
            want = exact[:, s_i, torch.as_tensor(part)]
            torch.testing.assert_close(sub.letters(at, gates), want, rtol=1e-4, atol=1e-4)
            assert (sub.raw_letters(at, gates).argmax(-1) == want.argmax(-1)).float().mean() > 0.999


def test_fast_plan_fits_what_the_exact_plan_fits(scorer, people):  # noqa: F811
    fast = GatedPlan(scorer, GatedConfig(), calibration="fast")
    exact = GatedPlan(scorer, GatedConfig(), calibration="exact")
    got, skipped_fast = fast.fit_many(people)
    want, skipped_exact = exact.fit_many(people)
    assert skipped_fast == skipped_exact
    assert [f.choice for f in got] == [f.choice for f in want]
    assert {f.choice for f in want} - {(0.0, s) for s in (-1.0, -0.5, 0.0, 0.5, 1.0)}, "no gain above 0 exercised"
    for f, e in zip(got, want, strict=True):
        assert_same_vector(f.vector, e.vector)
        assert f.known_composite == e.known_composite


def test_fast_plan_refuses_where_it_does_not_apply(tiny, tokenizer, papi):
    if tiny.config.model_type != "gpt2":
        pytest.skip("the llama family has the fast path")
    with pytest.raises(ValueError, match="calibration='exact'"):
        GatedPlan(ItemScorer(tiny, tokenizer, papi.bank), GatedConfig(), calibration="fast")


def test_grid_equals_explicit_gates(scorer):  # noqa: F811
    """raw_letters_grid (the settings' structure) = raw_letters of the explicit gates, every gain and shift."""
    plan = GatedPlan(scorer, GatedConfig(), calibration="fast")
    sub = plan.subspace
    at = torch.arange(7)
    reads = 3 + torch.randn(2, 7, sub.states.shape[1], generator=torch.Generator().manual_seed(0))
    gains, shifts = torch.tensor([2.0, 8.0]), torch.tensor([-1.0, 0.0, 0.5])
    grid = sub.raw_letters_grid(at, reads, gains, shifts)
    for gi, gain in enumerate(gains):
        for si, shift in enumerate(shifts):
            gates = (gain * (reads - 3.0) + shift) / reads.shape[-1]
            torch.testing.assert_close(grid[:, gi, si], sub.raw_letters(at, gates), rtol=1e-4, atol=1e-4)
