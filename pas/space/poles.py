"""Personality space: steering vectors for a trait pole (E+, N-, ...), an MBTI type, or a group of people.

A *profile* is an answer sheet on the IPIP-NEO-120 items (the short form; the other 180
items stay free to assess the result, so nothing is circular):

- a **pole** (``"E+"``): "Very Accurate" to the domain's +keyed statements, "Very Inaccurate"
  to its -keyed ones (mirrored for ``"E-"``), "Neither" to every other statement;
- a **type** (``"INFP"``): the four poles its letters map to, after McCrae & Costa (1989):
  E/I <-> Extraversion, S/N <-> Openness (N = open), T/F <-> Agreeableness (F = agreeable),
  J/P <-> Conscientiousness (J = conscientious); Neuroticism is left at "Neither";
- a **group**: the mean response of a set of people on each item.

A pole's sheet has two sources (``POLE_SOURCES``, chosen by measurement in ``benchmarks/traits.py
--source``): ``"statements"`` (above: the keying of the domain's statements, no person's answers)
or ``"people"`` (:func:`quartile_sheet`: how the data dir's top quartile of the domain answers each
short-form statement minus how its bottom quartile does, scaled so the domain's own statements sit
2 points from "Neither" on average; real effect sizes, and the domain's real correlates).

A profile becomes a *gated* vector (:mod:`pas.fit.gated`'s machinery, without the person fit):
each head of the gated layer reads its own output with a ridge readout of the profile's
answers (so the gate follows what the statement says), and pushes the answer letters by the
model's mean letter Jacobian, ``gain * (readout - 3)`` logits per answer point at strength 1.
Each gate is limited to the range it takes on the 120 questionnaire items (``gate_limit``):
nothing changes there, and on free text the readout cannot extrapolate (without the limit the
pole vectors' perplexity on neutral chat replies was 10^2..10^9 x base).
Every profile of one model shares that push, so vectors add where the arithmetic is defined
(:meth:`pas.steer.vector.SteeringVector._gated_sum`): a type is the sum of its poles, and a person
+ 0.5 * (C+) works. No letter correction is added: a pole aims at the extreme answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from pas.core.arch import layout
from pas.core.data import DOMAINS, ItemBank, Subject
from pas.fit.activations import answer_states
from pas.fit.gated import NEUTRAL, calibrations, fit_head_readouts, gate_range, pushes, readout_gates
from pas.score.scorer import ItemScorer
from pas.steer.vector import Provenance, SteeringVector, item_hash

POLES: tuple[str, ...] = tuple(f"{d}{s}" for d in DOMAINS for s in "+-")
POLE_SOURCES = ("statements", "people")
POLE_GAIN = 4.0  # logits of letter tilt per answer point the readout predicts, at strength 1
# MBTI letter -> (Big-Five domain, direction), McCrae & Costa (1989)
MBTI_LETTERS: dict[str, tuple[str, int]] = {
    "E": ("E", +1), "I": ("E", -1),
    "N": ("O", +1), "S": ("O", -1),
    "F": ("A", +1), "T": ("A", -1),
    "J": ("C", +1), "P": ("C", -1),
}
MBTI_AXES = ("EI", "SN", "TF", "JP")
TYPES: tuple[str, ...] = tuple(a + b + c + d for a in "EI" for b in "SN" for c in "TF" for d in "JP")


def parse_pole(pole: str) -> tuple[str, int]:
    """``"E+"`` -> ``("E", +1)``; a clear error for anything else."""
    p = pole.strip().upper()
    if len(p) != 2 or p[0] not in DOMAINS or p[1] not in "+-":
        raise ValueError(f"a trait pole is a domain letter and a sign, one of {', '.join(POLES)}; got {pole!r}")
    return p[0], (+1 if p[1] == "+" else -1)


def pole_name(pole: str) -> str:
    """The canonical spelling of a pole (``"e+"`` -> ``"E+"``)."""
    domain, sign = parse_pole(pole)
    return domain + ("+" if sign > 0 else "-")


def type_poles(mbti: str) -> tuple[str, ...]:
    """``"INFP"`` -> ``("E-", "O+", "A+", "C-")``: the four poles of a type (one letter per axis)."""
    t = mbti.strip().upper()
    if len(t) != 4 or any(t[k] not in MBTI_AXES[k] for k in range(4)):
        raise ValueError(f"an MBTI type has one letter from each of {', '.join(MBTI_AXES)} in that order "
                         f"(e.g. INFP); got {mbti!r}")
    return tuple(MBTI_LETTERS[c][0] + ("+" if MBTI_LETTERS[c][1] > 0 else "-") for c in t)


def pole_sheet(bank: ItemBank, pole: str, ids: Sequence[int] | None = None) -> dict[int, float]:
    """The answer sheet of a pole on items ``ids`` (default the short form): extreme on its domain, 3 elsewhere."""
    domain, sign = parse_pole(pole)
    by_id = bank.by_id
    sheet = {}
    for i in bank.train_ids if ids is None else ids:
        item = by_id[i]
        agree = sign * (1 if item.keyed == "+" else -1)
        sheet[i] = NEUTRAL + 2.0 * agree if item.domain == domain else NEUTRAL
    return sheet


def group_sheet(bank: ItemBank, people: Sequence[Subject], ids: Sequence[int] | None = None) -> dict[int, float]:
    """Mean response of ``people`` on each item of ``ids`` (default the short form; missing answers left out)."""
    if not people:
        raise ValueError("a group profile needs at least one person")
    sheet = {}
    for i in bank.train_ids if ids is None else ids:
        answers = [p.responses[i] for p in people if i in p.responses]
        if answers:
            sheet[i] = float(np.mean(answers))
    return sheet


def quartile_sheet(bank: ItemBank, people: Sequence[Subject], pole: str, ids: Sequence[int] | None = None,
                   *, fraction: float = 0.25) -> dict[int, float]:
    """A pole's sheet from real people on items ``ids`` (default the short form): the mean response of the
    ``fraction`` of ``people`` highest on the pole's domain minus that of the lowest (domain score: mean keyed
    answer on the domain's items among ``ids``), mirrored for a ``-`` pole, scaled so that the mean |contrast| on
    the domain's own items is 2 points, around "Neither" and clipped to 1..5."""
    domain, sign = parse_pole(pole)
    ids = list(bank.train_ids if ids is None else ids)
    by_id = bank.by_id
    own = [i for i in ids if by_id[i].domain == domain]
    if not own:
        raise ValueError(f"no {domain} items among the {len(ids)} items to build the {pole_name(pole)} sheet from")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5]; got {fraction}")
    scored = [(float(np.mean(list(keyed.values()))), p) for p in people if (keyed := p.keyed_scores(own))]
    k = int(round(fraction * len(scored)))
    if k < 1:
        raise ValueError(f"{len(scored)} people answered {domain} items: too few for a {fraction:.0%} split")
    ranked = [p for _, p in sorted(scored, key=lambda t: t[0])]
    top, bottom = group_sheet(bank, ranked[-k:], ids), group_sheet(bank, ranked[:k], ids)
    contrast = {i: top[i] - bottom[i] for i in ids if i in top and i in bottom}
    spread = float(np.mean([abs(contrast[i]) for i in own if i in contrast]))
    if spread == 0:
        raise ValueError(f"the top and bottom {fraction:.0%} on {domain} answer its items alike: no pole to build")
    return {i: float(np.clip(NEUTRAL + sign * 2.0 * c / spread, 1.0, 5.0)) for i, c in contrast.items()}


def profile_vector(scorer: ItemScorer, sheet: Mapping[int, float], name: str, *, layer: int = -1,
                   gain: float = POLE_GAIN, seed: int = 0, source: str | None = None) -> SteeringVector:
    """A gated vector that answers the short-form items like ``sheet`` (see the module docstring).

    Only the sheet's items are read (their prompts' answer-position head outputs); ``name``
    becomes the vector's ``subject``.
    """
    model, bank = scorer.model, scorer.bank
    lay = layout(model)
    layer = layer % lay.n_layers
    ids = sorted(sheet)
    y = np.array([sheet[i] for i in ids], dtype=np.float64)
    # the sheet's answers may be fractional (a group's means): the readouts and the metric read them as numbers
    person = Subject(name, cast("dict[int, int]", dict(sheet)), bank=bank)
    known = answer_states(scorer, bank.train_ids)
    reads = fit_head_readouts(known.rows(ids).heads[:, layer], y, bank, person, ids, seed=seed)
    tilt, _ = pushes(calibrations(scorer, bank.train_ids, both_orders=False), layer)
    shape = (lay.n_layers, lay.n_heads, lay.head_dim)
    w, b, v = torch.zeros(shape), torch.zeros(shape[:2]), torch.zeros(shape)
    w[layer], b[layer] = readout_gates(reads.weights, reads.intercepts, gain)
    v[layer] = tilt
    limit = torch.full(shape[:2], float("inf"))
    limit[layer] = gate_range(known.heads[:, layer], w[layer], b[layer])
    provenance = Provenance(subject=name, method="profile", item_hash=item_hash(ids), bank=bank.fingerprint(),
                            config={"profile": name, "gain": gain, "layer": layer, "items": len(ids),
                                    **({"source": source} if source else {})})
    return SteeringVector.for_model(model, v, gate_weights=w, gate_bias=b, gate_limit=limit, positions="last",
                                    provenance=provenance)


def pole_vectors(scorer: ItemScorer, poles: Sequence[str] = POLES, *, source: str = "statements",
                 people: Sequence[Subject] | None = None, **kw: Any) -> dict[str, SteeringVector]:
    """One vector per pole from the short-form items: from their keying (``source="statements"``, no person's
    answers) or from ``people``'s answers (``"people"``, :func:`quartile_sheet`)."""
    if source not in POLE_SOURCES:
        raise ValueError(f"source must be one of {', '.join(POLE_SOURCES)}; got {source!r}")
    if source == "people" and not people:
        raise ValueError("source='people' needs the people to build the poles from (e.g. load_papi().subjects)")

    def sheet(p: str) -> dict[int, float]:
        return pole_sheet(scorer.bank, p) if source == "statements" else quartile_sheet(scorer.bank, people or (), p)

    return {pole_name(p): profile_vector(scorer, sheet(p), pole_name(p), source=source, **kw).relabel(method="pole")
            for p in poles}


def combine(poles: Mapping[str, SteeringVector], names: Sequence[str], label: str) -> SteeringVector:
    """The sum of the named pole vectors (they share their push, so the gates add), labelled ``label``."""
    total = poles[names[0]]
    for n in names[1:]:
        total = total + poles[n]
    config = {**poles[names[0]].provenance.config, "profile": label, "poles": list(names)}
    return total.relabel(subject=label, method="type", config=config)


def type_vector(scorer: ItemScorer | None, mbti: str, poles: Mapping[str, SteeringVector] | None = None,
                **kw: Any) -> SteeringVector:
    """An MBTI type's vector: the sum of its four poles (built here with ``scorer`` unless ``poles`` are given)."""
    names = type_poles(mbti)
    if poles is None:
        if scorer is None:
            raise ValueError(f"the {mbti!r} vector needs its poles or an ItemScorer to build them")
        poles = pole_vectors(scorer, names, **kw)
    return combine(poles, names, mbti.strip().upper())


def group_vector(scorer: ItemScorer, people: Sequence[Subject], name: str = "group", **kw: Any) -> SteeringVector:
    """A group's vector from its members' mean short-form answers."""
    return profile_vector(scorer, group_sheet(scorer.bank, people), name, **kw).relabel(method="group")
