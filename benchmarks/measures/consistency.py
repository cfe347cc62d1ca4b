"""A personality that holds: the same vector under another questionnaire wording, under pressure, and growing.

Three checks (PersLLM's claims, measured the way ``pas assess`` measures a person), each for a
steered model and, where it applies, for the same personality given as a system prompt:

- **template stability**: assess under PAPI's wording and a plain one
  (:data:`pas.score.prompts.STYLES`); report each domain's difference;
- **resistance to induction**: before every item a user turn pushes the other way ("Actually, you
  are a very introverted person." for E+); report how far each domain moves under that pressure;
- **development**: a person + a growing fraction of a trait pole; the pole's domain should rise
  smoothly while the others stay put.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pas.fit.gated import recentre
from pas.score.assess import assess
from pas.score.scorer import ItemScorer
from pas.space.poles import parse_pole
from pas.steer.vector import SteeringVector

from .poles import POLE_PROMPTS


def pressure_text(pole: str) -> str:
    """The user turn that pushes against ``pole``: "Actually, you are a very introverted person: ..." for E+."""
    domain, sign = parse_pole(pole)
    opposite = POLE_PROMPTS[domain + ("-" if sign > 0 else "+")]
    return "Actually, " + opposite[0].lower() + opposite[1:]


def _scorer(scorer: ItemScorer, **template) -> ItemScorer:
    """A scorer for the same model and items under another template (remembered by ``scorer``)."""
    import dataclasses

    return scorer.variant(dataclasses.replace(scorer.template, **template))


def _in_context(vec: SteeringVector | None, scorer: ItemScorer, context: ItemScorer, adapt: bool):
    return recentre(vec, scorer, context) if adapt and vec is not None else vec


def template_stability(scorer: ItemScorer, vectors: Mapping[str, SteeringVector], ids: Sequence[int],
                       style: str = "plain", adapt: bool = False) -> dict:
    """Per vector: its domain scores under ``scorer``'s wording and under ``style``, and the differences
    (also for the unsteered model, as ``"base"``). ``adapt``: re-centre gated vectors for the other wording
    (:func:`pas.fit.gated.recentre`, prompts only)."""
    other = _scorer(scorer, style=style)
    out = {}
    for name, vec in {"base": None, **vectors}.items():
        a = assess(scorer, ids, steering=vec)
        b = assess(other, ids, steering=_in_context(vec, scorer, other, adapt))
        out[name] = {"papi": a.domains, style: b.domains, "difference": b.shift(a)}
    return out


def induction(scorer: ItemScorer, poles: Mapping[str, SteeringVector], ids: Sequence[int],
              prompts: bool = True, adapt: bool = False) -> dict:
    """Per pole: domain shifts from the unsteered model without and with the opposing user turn, for the
    vector and (``prompts``) for the pole's system prompt; ``moved`` = with minus without pressure.
    ``adapt``: re-centre the vector for the pressured context (:func:`pas.fit.gated.recentre`)."""
    base = assess(scorer, ids)
    out = {}
    for pole, vec in poles.items():
        pressed = _scorer(scorer, pressure=pressure_text(pole))
        row = {"pressure": pressure_text(pole)}
        sources = {"vector": ({"steering": vec}, {"steering": _in_context(vec, scorer, pressed, adapt)})}
        if prompts:
            sources["prompt"] = ({"system": POLE_PROMPTS[pole]},) * 2
        for how, (kw, kw_pressed) in sources.items():
            calm = assess(scorer, ids, **kw).shift(base)
            pushed = assess(pressed, ids, **kw_pressed).shift(base)
            row[how] = {"shift": calm, "shift_under_pressure": pushed,
                        "moved": {d: pushed[d] - calm[d] for d in calm}}
        out[pole] = row
    return out


def development(scorer: ItemScorer, person: SteeringVector, pole: str, pole_vector: SteeringVector,
                ids: Sequence[int], fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict:
    """Domain scores of ``person + f * pole`` for each fraction ``f`` (the vectors must add: see
    :meth:`pas.steer.vector.SteeringVector._gated_sum`)."""
    parse_pole(pole)
    rows = {f: assess(scorer, ids, steering=person + f * pole_vector).domains for f in fractions}
    start = rows[fractions[0]]
    return {"pole": pole, "fractions": list(fractions), "domains": rows,
            "change": {f: {d: v - start[d] for d, v in r.items()} for f, r in rows.items()}}

