"""Consistency checks (benchmarks.measures.consistency) and the prompt variants they use, on a tiny model."""

from __future__ import annotations

import pytest

from benchmarks.measures.consistency import development, induction, pressure_text, template_stability
from benchmarks.measures.tables import consistency_tables
from pas.score.prompts import PromptTemplate, item_prompt
from pas.score.scorer import ItemScorer


def test_prompt_variants(tokenizer):
    plain = item_prompt("Worry about things.", style="plain")
    assert plain.startswith('How well does this describe you: "You worry about things."') and "(C). Neither" in plain
    with pytest.raises(ValueError, match="style"):
        item_prompt("Worry about things.", style="odd")
    text = PromptTemplate(pressure="Actually, you are calm.").render(tokenizer, "Worry about things.")
    assert text.index("Actually, you are calm.") < text.index("You worry about things.")
    assert PromptTemplate().fingerprint() != PromptTemplate(pressure="x").fingerprint()
    assert PromptTemplate().fingerprint() != PromptTemplate(style="plain").fingerprint()
    assert pressure_text("E+").startswith("Actually, you are a very introverted person")
    assert pressure_text("n-").startswith("Actually, you are a very neurotic person")


def test_consistency_checks_run_and_are_consistent(tiny_llama, tokenizer, papi):
    from test_poles import _planted_scorer

    from pas.space.poles import pole_vectors, profile_vector

    planted, _ = _planted_scorer(tiny_llama, tokenizer, papi, 2, 1)
    poles = pole_vectors(planted, ["E+", "C+"])
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    by_id = papi.bank.by_id
    ids = [i for d in "OCEAN" for i in [j for j in papi.bank.test_ids if by_id[j].domain == d][:2]]
    stab = template_stability(scorer, poles, ids)
    for r in stab.values():
        assert r["difference"] == {d: pytest.approx(r["plain"][d] - r["papi"][d]) for d in r["papi"]}
    pushed = induction(scorer, poles, ids)
    for r in pushed.values():
        for how in ("vector", "prompt"):
            m = r[how]
            assert m["moved"] == {d: pytest.approx(m["shift_under_pressure"][d] - m["shift"][d]) for d in m["shift"]}
    person = profile_vector(planted, {i: 1 + (i % 5) for i in papi.bank.train_ids}, "person")
    grown = development(scorer, person, "C+", poles["C+"], ids, fractions=(0.0, 1.0))
    assert all(v == 0 for v in grown["change"][0.0].values())
    assert "Development" in consistency_tables(stab, pushed, grown)


def test_recentre_moves_the_gate_by_the_context_mean(tiny_llama, tokenizer, papi):
    """Re-centring changes only gate biases, by -w . (mean_context - mean_reference); same context = same vector."""
    import torch
    from test_gated import random_gated

    from pas.fit.activations import answer_states
    from pas.fit.gated import recentre

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    plain = ItemScorer(tiny_llama, tokenizer, papi.bank, PromptTemplate(style="plain"))
    vec = random_gated(tiny_llama, seed=3)
    ids = papi.bank.train_ids[:8]
    same = recentre(vec, scorer, scorer, ids)
    torch.testing.assert_close(same.gates.bias, vec.gates.bias)
    moved = recentre(vec, scorer, plain, ids)
    shift = answer_states(plain, ids).heads.mean(0) - answer_states(scorer, ids).heads.mean(0)
    torch.testing.assert_close(moved.gates.bias, vec.gates.bias - (vec.gates.weights * shift).sum(-1))
    assert torch.equal(moved.gates.weights, vec.gates.weights) and torch.equal(moved.offsets, vec.offsets)
