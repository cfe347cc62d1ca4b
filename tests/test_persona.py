"""Written personas become vectors (pas.space.persona)."""

from __future__ import annotations

import pytest
import torch

from pas.core.arch import layout
from pas.fit.activations import AnswerStates
from pas.score.scorer import ItemScorer
from pas.steer.vector import SteeringVector

PERSONA = "You are a retired nurse who volunteers at the local library and loves quiet evenings."


def test_persona_contrast_recovers_a_planted_direction(tiny_llama, tokenizer, papi, monkeypatch):
    """Head outputs with the persona = without + a planted direction on one head (+ noise): the contrast is it."""
    import pas.space.persona as persona

    lay = layout(tiny_llama)
    ids = papi.bank.train_ids
    g = torch.Generator().manual_seed(0)
    base = torch.randn(len(ids), lay.n_layers, lay.n_heads, lay.head_dim, generator=g)
    planted = torch.zeros(lay.n_layers, lay.n_heads, lay.head_dim)
    planted[1, 2] = torch.randn(lay.head_dim, generator=g)
    noise = torch.randn(base.shape, generator=g) * 0.1

    def fake_states(scorer, item_ids, system=None):
        heads = base + (planted + noise if system == PERSONA else 0)
        return AnswerStates(tuple(item_ids), torch.zeros(len(item_ids), lay.n_layers + 1, lay.hidden_size), heads)

    monkeypatch.setattr(persona, "answer_states", fake_states)
    got = persona.persona_contrast(ItemScorer(tiny_llama, tokenizer, papi.bank), PERSONA, ids)
    cos = torch.nn.functional.cosine_similarity(got.flatten(), planted.flatten(), dim=0)
    assert float(cos) > 0.99
    assert float(got[0].abs().max()) < 0.1  # heads the persona does not touch stay near zero


def test_persona_vector_on_a_tiny_model(tiny_llama, tokenizer, papi, tmp_path):
    """The real activations: a constant answer-position vector whose strength is the best match to the
    prompted model on the known prompts (never worse than no vector); it saves and loads."""
    from pas.space.persona import STRENGTHS, fit_persona, persona_vector

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = papi.bank.train_ids[:16]
    vec, report = fit_persona(scorer, PERSONA, ids=ids)
    assert vec.kind == "constant" and vec.positions == "last" and vec.provenance.config["persona"] == PERSONA
    trace = report.distil_trace
    assert set(trace) == set(STRENGTHS) and report.strength in STRENGTHS
    assert trace[report.strength] <= trace[0.0]
    back = SteeringVector.load(vec.save(tmp_path / "persona.safetensors"))
    assert torch.equal(back.offsets, vec.offsets)
    gated = persona_vector(scorer, PERSONA, construction="profile", ids=ids)
    assert gated.kind == "gated"
    mixed, report = fit_persona(scorer, PERSONA, construction="poles", ids=ids)
    assert mixed.kind == "gated" and len(report.coefficients) == 5
    assert all(0.0 <= c <= 2.0 for c in report.coefficients.values())
    with pytest.raises(ValueError, match="construction"):
        persona_vector(scorer, PERSONA, construction="other")
    with pytest.raises(ValueError, match="some text"):
        persona_vector(scorer, "  ")


def test_pole_coefficients_reproduce_the_prompted_shift(tiny_llama, tokenizer, papi):
    """A prompted model that answers E statements 0.3 further toward E+ than the unprompted one (nothing else
    changed) maps to the E+ pole with coefficient 0.3 / (E+'s own shift at strength 1) and zero elsewhere;
    the mixture is that multiple of the E+ vector."""
    from pas.score.assess import assess
    from pas.space.persona import MAX_COEFFICIENT, STATEMENT_POLES, pole_coefficients, pole_mixture
    from pas.space.poles import pole_vectors

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = papi.bank.train_ids
    poles = pole_vectors(scorer)
    base = assess(scorer, ids)
    by_id = papi.bank.by_id
    prompted = {i: e + (0.3 if by_id[i].keyed == "+" else -0.3) * (by_id[i].domain == "E")
                for i, e in base.expected.items()}
    coefficients, shifts = pole_coefficients(scorer, prompted, ids, poles)
    assert shifts["E"] == pytest.approx(0.3, abs=1e-9)
    assert all(abs(shifts[d]) < 1e-9 for d in "OCAN")
    unit = assess(scorer, ids, steering=poles["E+"]).shift(base, expected=True)["E"]
    expected_e = min(0.3 / unit, MAX_COEFFICIENT) if unit > 0 else 0.0
    assert coefficients["E+"] == pytest.approx(expected_e)
    assert {p: c for p, c in coefficients.items() if p != "E+"} == {f"{d}+": 0.0 for d in "OCAN"}
    STATEMENT_POLES.put(scorer, "statements", poles)
    vec, _ = pole_mixture(scorer, PERSONA, ids, _Expected([prompted[i] for i in ids]), "nurse")
    assert vec.kind == "gated" and vec.provenance.config["construction"] == "poles" and vec.subject == "nurse"
    torch.testing.assert_close(vec.gates.weights, (expected_e * poles["E+"]).gates.weights, rtol=1e-5, atol=1e-7)


class _Expected:
    """Stands in for the prompted model's OptionDistribution: only ``expected`` is read."""

    def __init__(self, values):
        self.expected = values
