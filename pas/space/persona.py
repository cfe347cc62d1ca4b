"""Written personas become vectors: a persona's effect, distilled out of the prompt (Persona Hub's personas).

A persona prompt costs context on every call and can be talked out of; a vector costs nothing per
call and stays on. Both constructions read only the model's own behaviour on the 120 short-form
questionnaire prompts, with the persona as system prompt against without it (no person's answers):

- ``"contrast"`` (constant kind, the answer position): per head, the mean change the persona prompt
  makes to the head's output at the answer position (the contrast PAS uses, with the persona as its
  source). Its strength is chosen so that the steered model *without* the prompt answers those items
  the way the prompted model does (the one validation objective, :func:`pas.score.metric.objective`,
  with the prompted model's answers as the "person");
- ``"profile"`` (gated kind): the prompted model's expected answers on those items become an answer
  sheet, made into a vector like a trait pole (:func:`pas.space.poles.profile_vector`), its strength
  chosen the same way (a pole's push is sized for extreme answers: unscaled, a profile of answers
  near "Neither" with a small lean pushed every answer to an extreme);
- ``"poles"`` (gated kind): the persona as trait-pole coefficients. The prompted model takes those
  items (``pas assess --system TEXT``); each Big-Five domain's shift from the unprompted model,
  divided by the shift its pole vector makes at strength 1 on the same items, is that pole's
  coefficient (:func:`pole_coefficients`), and the vector is the poles' weighted sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from pas.core.data import Subject
from pas.fit.activations import answer_states
from pas.score.cache import ScorerCache
from pas.score.metric import objective
from pas.score.scorer import ItemScorer, OptionDistribution
from pas.steer.vector import SteeringVector, item_hash

CONSTRUCTIONS = ("contrast", "profile", "poles")
STATEMENT_POLES: ScorerCache[str, dict[str, SteeringVector]] = ScorerCache("statement poles")
POLE_PER_UNIT: ScorerCache[tuple[int, ...], tuple[dict[str, float], dict[str, float]]] = ScorerCache("pole per unit")
MAX_COEFFICIENT = 2.0  # a pole past strength 2 costs fluency (README, trait poles)
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


@dataclass(frozen=True)
class PersonaReport:
    """How a persona was distilled; returned beside the vector, never stored in it.

    strength: the distilled strength (``contrast``, ``profile``; None for ``poles``); distil_trace:
    {strength: composite against the prompted model's answers}; coefficients / prompted_shift: the
    ``poles`` construction's pole weights and the prompted model's domain shifts.
    """

    construction: str
    strength: float | None = None
    distil_trace: dict[float, float] = field(default_factory=dict)
    coefficients: dict[str, float] = field(default_factory=dict)
    prompted_shift: dict[str, float] = field(default_factory=dict)


def persona_vector(scorer: ItemScorer, text: str, *, construction: str = "contrast", name: str | None = None,
                   ids: Sequence[int] | None = None) -> SteeringVector:
    """Distil the written persona ``text`` into a vector for ``scorer``'s model (see :func:`fit_persona`)."""
    return fit_persona(scorer, text, construction=construction, name=name, ids=ids)[0]


def fit_persona(scorer: ItemScorer, text: str, *, construction: str = "contrast", name: str | None = None,
                ids: Sequence[int] | None = None) -> tuple[SteeringVector, PersonaReport]:
    """Distil the written persona ``text`` into a vector for ``scorer``'s model (see the module docstring):
    ``(vector, report)``.

    ``ids``: the questionnaire items whose prompts are read (default the 120 short-form items).
    """
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {CONSTRUCTIONS}, not {construction!r}")
    if not text or not text.strip():
        raise ValueError("a persona needs some text")
    ids = tuple(scorer.bank.train_ids if ids is None else ids)
    name = name or text.strip()[:60]
    prompted = scorer.score(ids, text)  # the prompted model: what the vector should reproduce without the prompt
    if construction == "poles":
        return pole_mixture(scorer, text, ids, prompted, name)
    if construction == "profile":
        from pas.space.poles import profile_vector

        unit = profile_vector(scorer, {i: float(e) for i, e in zip(ids, prompted.expected, strict=True)}, name)
    else:
        unit = SteeringVector.for_model(scorer.model, persona_contrast(scorer, text, ids), positions="last")
    target = Subject("persona", {i: int(a) for i, a in zip(ids, prompted.answers, strict=True)}, bank=scorer.bank)
    strength, trace = distil_strength(scorer, unit, target, ids)
    vector = (unit * strength).relabel(derived=None, subject=name, method="persona", item_hash=item_hash(ids),
                                       bank=scorer.bank.fingerprint(),
                                       config={**unit.provenance.config, "persona": text,
                                               "construction": construction})
    return vector, PersonaReport(construction, strength, trace)


def pole_coefficients(scorer: ItemScorer, prompted: Mapping[int, float], ids: Sequence[int],
                      poles: Mapping[str, SteeringVector] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """``(coefficients, shifts)``: per domain, the prompted model's keyed domain shift on items ``ids`` from the
    unprompted model (``prompted``: its expected answers), and the coefficient of the pole on that side, the
    shift divided by what the pole makes at strength 1 on the same items (0 where the pole does not move its
    domain that way; at most :data:`MAX_COEFFICIENT`). Both from expected answers, which move smoothly.
    ``poles``: default the statement poles of :func:`statement_poles`, whose calibration on ``ids`` the scorer
    remembers (other poles are calibrated on every call)."""
    from pas.core.data import DOMAINS
    from pas.score.assess import keyed_means

    if poles is None:
        base, per_unit = POLE_PER_UNIT.get(scorer, tuple(ids),
                                           lambda: _pole_per_unit(scorer, ids, statement_poles(scorer)))
    else:
        base, per_unit = _pole_per_unit(scorer, ids, poles)
    shifts = {d: v - base[d] for d, v in keyed_means(scorer.bank, prompted)[0].items()}
    coefficients = {}
    for d in DOMAINS:
        pole = d + ("+" if shifts.get(d, 0.0) >= 0 else "-")
        unit = per_unit[pole]
        coefficients[pole] = float(min(abs(shifts.get(d, 0.0)) / unit, MAX_COEFFICIENT)) if unit > 0 else 0.0
    return coefficients, shifts


def _pole_per_unit(scorer: ItemScorer, ids: Sequence[int],
                   poles: Mapping[str, SteeringVector]) -> tuple[dict[str, float], dict[str, float]]:
    """The unprompted model's expected domain scores on ``ids``, and each pole's own-domain shift (toward its
    side) at strength 1 there."""
    from pas.score.assess import assess
    from pas.space.poles import parse_pole

    base = assess(scorer, ids)
    per_unit = {}
    for pole, vec in poles.items():
        domain, sign = parse_pole(pole)
        per_unit[pole] = sign * assess(scorer, ids, steering=vec).shift(base, expected=True)[domain]
    return base.domains_expected, per_unit


def statement_poles(scorer: ItemScorer) -> dict[str, SteeringVector]:
    """The ten trait poles from the statements' keying (:func:`pas.space.poles.pole_vectors`), built once per scorer."""
    from pas.space.poles import pole_vectors

    return STATEMENT_POLES.get(scorer, "statements", lambda: pole_vectors(scorer))


def pole_mixture(scorer: ItemScorer, text: str, ids: Sequence[int], prompted: OptionDistribution,
                 name: str) -> tuple[SteeringVector, PersonaReport]:
    """The ``"poles"`` construction: the ten statement poles weighted by :func:`pole_coefficients` of the
    prompted model's answers ``prompted``."""
    from functools import reduce

    poles = statement_poles(scorer)
    coefficients, shifts = pole_coefficients(scorer, dict(zip(ids, map(float, prompted.expected), strict=False)), ids)
    total = reduce(lambda a, b: a + b, [c * poles[p] for p, c in coefficients.items()])
    vector = total.relabel(subject=name, method="persona", item_hash=item_hash(ids), bank=scorer.bank.fingerprint(),
                           config={"persona": text, "construction": "poles"})
    return vector, PersonaReport("poles", coefficients=coefficients, prompted_shift=shifts)


def context_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Tokens a persona costs on every call as a system prompt (the vector costs none)."""
    return len(tokenizer.encode(text, add_special_tokens=False))

