"""Written personas become vectors (pas.persona)."""

from __future__ import annotations

import pytest
import torch

from pas.activations import AnswerStates
from pas.adapter import layout
from pas.scoring import ItemScorer
from pas.steering import SteeringVector

PERSONA = "You are a retired nurse who volunteers at the local library and loves quiet evenings."


def test_persona_contrast_recovers_a_planted_direction(tiny_llama, tokenizer, papi, monkeypatch):
    """Head outputs with the persona = without + a planted direction on one head (+ noise): the contrast is it."""
    import pas.persona as persona

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
    from pas.persona import STRENGTHS, persona_vector

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = papi.bank.train_ids[:16]
    vec = persona_vector(scorer, PERSONA, ids=ids)
    assert vec.kind == "constant" and vec.positions == "last" and vec.config["persona"] == PERSONA
    trace = {float(k): v for k, v in vec.config["distil_trace"].items()}
    assert set(trace) == set(STRENGTHS) and vec.config["strength"] in STRENGTHS
    assert trace[vec.config["strength"]] <= trace[0.0]
    back = SteeringVector.load(vec.save(tmp_path / "persona.safetensors"))
    assert torch.equal(back.offsets, vec.offsets)
    gated = persona_vector(scorer, PERSONA, construction="profile", ids=ids)
    assert gated.kind == "gated"
    with pytest.raises(ValueError, match="construction"):
        persona_vector(scorer, PERSONA, construction="other")
    with pytest.raises(ValueError, match="some text"):
        persona_vector(scorer, "  ")
