"""Written personas become vectors: a persona's effect, distilled out of the prompt (Persona Hub's personas).

A persona prompt costs context on every call and can be talked out of; a vector costs nothing per
call and stays on. Both constructions read only the model's own behaviour on the 120 short-form
questionnaire prompts, with the persona as system prompt against without it (no person's answers):

- ``"contrast"`` (constant kind, the answer position): per head, the mean change the persona prompt
  makes to the head's output at the answer position (the contrast PAS uses, with the persona as its
  source). Its strength is chosen so that the steered model *without* the prompt answers those items
  the way the prompted model does (the one validation objective, :func:`pas.evaluate.objective`,
  with the prompted model's answers as the "person");
- ``"profile"`` (gated kind): the prompted model's expected answers on those items become an answer
  sheet, made into a vector like a trait pole (:func:`pas.traits.profile_vector`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from .activations import answer_states
from .data import Subject
from .evaluate import objective
from .scoring import ItemScorer
from .steering import SteeringVector, item_hash

CONSTRUCTIONS = ("contrast", "profile")
STRENGTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def persona_contrast(scorer: ItemScorer, text: str, ids: Sequence[int]) -> torch.Tensor:
    """``[L, H, D]``: mean over items ``ids`` of head outputs at the answer position with ``text`` as system
    prompt minus without it."""
    with_persona = answer_states(scorer, ids, system=text).heads
    without = answer_states(scorer, ids).heads
    return (with_persona - without).mean(0)


def distil_strength(scorer: ItemScorer, vector: SteeringVector, target: Subject, ids: Sequence[int],
                    strengths: Sequence[float] = STRENGTHS) -> tuple[float, dict[float, float]]:
    """The strength whose steered, unprompted answers best match ``target`` on ``ids`` (ties: the weaker)."""
    seen = {s: objective(scorer.bank, target, ids, scorer.score(ids, steering=vector * s)) for s in strengths}
    best = min(seen, key=lambda s: (seen[s].key, abs(s)))
    return best, {s: o.composite for s, o in seen.items()}


def persona_vector(scorer: ItemScorer, text: str, *, construction: str = "contrast", name: str | None = None,
                   ids: Sequence[int] | None = None) -> SteeringVector:
    """Distil the written persona ``text`` into a vector for ``scorer``'s model (see the module docstring).

    ``ids``: the questionnaire items whose prompts are read (default the 120 short-form items).
    """
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {CONSTRUCTIONS}, not {construction!r}")
    if not text or not text.strip():
        raise ValueError("a persona needs some text")
    ids = tuple(scorer.bank.train_ids if ids is None else ids)
    name = name or text.strip()[:60]
    prompted = scorer.score(ids, text)  # the prompted model: what the vector should reproduce without the prompt
    if construction == "profile":
        from .traits import profile_vector

        return profile_vector(scorer, {i: float(e) for i, e in zip(ids, prompted.expected)}, name)
    target = Subject("persona", {i: int(a) for i, a in zip(ids, prompted.answers)}, bank=scorer.bank)
    base = SteeringVector.for_model(scorer.model, persona_contrast(scorer, text, ids), positions="last",
                                    subject=name, item_hash=item_hash(ids))
    strength, trace = distil_strength(scorer, base, target, ids)
    return dataclasses.replace(base, offsets=base.offsets * strength,
                               config={"persona": text, "construction": construction, "strength": strength,
                                       "distil_trace": {str(k): v for k, v in trace.items()}})


def context_tokens(tokenizer, text: str) -> int:
    """Tokens a persona costs on every call as a system prompt (the vector costs none)."""
    return len(tokenizer.encode(text, add_special_tokens=False))

