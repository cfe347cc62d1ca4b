"""Take the inventory: a model (steered or prompted) answers IPIP-NEO items and is scored like a person.

Scales are scored the way psychologists score them: each answer is *keyed* (a reverse-keyed
item counts 6 - response, through :func:`pas.core.data.keyed_score`, the one conversion) and a
domain or facet score is the mean keyed answer, 1..5. Two versions: from the chosen option
(what a person would have ticked) and from the expected answer under the model's 5-way
distribution (smoother, for small shifts). Percentiles place a domain score among the
people of a data dir, scored on the same items.

The prompt and scorer are the ones ``pas eval`` uses (:class:`pas.score.scorer.ItemScorer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pas.core.data import DOMAINS, ItemBank, Subject, keyed_score
from pas.score.scorer import ItemScorer

if TYPE_CHECKING:
    from pas.steer.vector import SteeringVector

ITEM_SETS = ("120", "180", "300")  # short form (known answers), the other 180, the whole inventory


def inventory_ids(bank: ItemBank, items: str) -> tuple[int, ...]:
    """Item ids of an item set: ``"120"`` the short form, ``"180"`` the rest, ``"300"`` all."""
    if items == "120":
        return bank.train_ids
    if items == "180":
        return bank.test_ids
    if items == "300":
        return tuple(it.id for it in bank.items)
    raise ValueError(f"items must be one of {ITEM_SETS}, not {items!r}")


def keyed_means(bank: ItemBank, answers: Mapping[int, float]) -> tuple[dict[str, float], dict[str, float]]:
    """``(domains, facets)``: mean keyed answer per domain (O C E A N) and per facet (``"E1"``...), 1..5.

    ``answers`` are responses to the items as worded (ints or expected values); scales with no
    answered item are left out.
    """
    by_id = bank.by_id
    domains: dict[str, list[float]] = {}
    facets: dict[str, list[float]] = {}
    for i, value in answers.items():
        item = by_id[i]
        keyed = keyed_score(item, value)
        domains.setdefault(item.domain, []).append(keyed)
        facets.setdefault(item.facet, []).append(keyed)
    order = {d: k for k, d in enumerate(DOMAINS)}
    return ({d: float(np.mean(domains[d])) for d in sorted(domains, key=lambda d: order.get(d, 99))},
            {f: float(np.mean(v)) for f, v in sorted(facets.items())})


def percentile(score: float, population: Sequence[float]) -> float:
    """Share of ``population`` below ``score`` (ties count half), in percent."""
    pop = np.asarray(population, dtype=np.float64)
    return float(100.0 * (np.sum(pop < score) + 0.5 * np.sum(pop == score)) / len(pop))


def population_domains(bank: ItemBank, people: Sequence[Subject], ids: Sequence[int]) -> dict[str, list[float]]:
    """Each domain's keyed mean for every person, on items ``ids`` (their missing answers left out)."""
    out: dict[str, list[float]] = {d: [] for d in DOMAINS}
    for person in people:
        domains, _ = keyed_means(bank, person.responses_to(ids))
        for d, v in domains.items():
            out.setdefault(d, []).append(v)
    return out


@dataclass(frozen=True)
class Assessment:
    """A model's inventory result: per-item answers and keyed domain/facet scores (1..5)."""

    items: tuple[int, ...]
    answers: dict[int, int]  # chosen option, as worded (1 Very Inaccurate .. 5 Very Accurate)
    expected: dict[int, float]  # expected answer under the 5-way distribution
    domains: dict[str, float]
    facets: dict[str, float]
    domains_expected: dict[str, float]
    facets_expected: dict[str, float]
    letter_mass: float
    percentiles: dict[str, float] | None = None  # domain score among the data dir's people, same items

    def to_json(self) -> dict:
        """Plain JSON: ``domains`` and ``facets`` (from chosen options), their expected versions, percentiles."""
        return {
            "n_items": len(self.items),
            "domains": self.domains,
            "facets": self.facets,
            "domains_expected": self.domains_expected,
            "facets_expected": self.facets_expected,
            "percentiles": self.percentiles,
            "letter_mass": self.letter_mass,
            "items": [{"item": i, "answer": self.answers[i], "expected": self.expected[i]} for i in self.items],
        }

    def shift(self, other: Assessment, expected: bool = False) -> dict[str, float]:
        """Domain scores minus ``other``'s (e.g. steered minus base)."""
        mine, theirs = (self.domains_expected, other.domains_expected) if expected else (self.domains, other.domains)
        return {d: mine[d] - theirs[d] for d in mine if d in theirs}


def assess(scorer: ItemScorer, ids: Sequence[int] | None = None, *, steering: SteeringVector | None = None,
           system: str | None = None, people: Sequence[Subject] = ()) -> Assessment:
    """The model of ``scorer`` takes the inventory (items ``ids``, default all 300) and is scored like a person.

    ``steering``: a :class:`pas.steer.vector.SteeringVector` (applied as for ``pas eval``);
    ``system``: a system prompt; ``people``: whom to rank the domain scores among (percentiles).
    """
    bank = scorer.bank
    ids = tuple(inventory_ids(bank, "300") if ids is None else ids)
    scores = scorer.score(ids, system, steering=steering)
    answers = {i: int(a) for i, a in zip(ids, scores.answers, strict=True)}
    expected = {i: float(e) for i, e in zip(ids, scores.expected, strict=True)}
    domains, facets = keyed_means(bank, answers)
    domains_e, facets_e = keyed_means(bank, expected)
    pct = None
    if people:
        pop = population_domains(bank, people, ids)
        pct = {d: percentile(v, pop[d]) for d, v in domains.items() if pop.get(d)}
    return Assessment(ids, answers, expected, domains, facets, domains_e, facets_e,
                      float(np.mean(scores.letter_mass)), pct)
