"""What a population fit is made of: a plan (the person-independent work, done once) that fits people in batches.

Every kind of population fit (exact gated, its table fast path, constant PAS) is a :class:`PopulationPlan`:
built once per model, scorer and config, then :meth:`PopulationPlan.fit_many` fits a chunk of people and
returns one :class:`PersonFit` each, or the reason a person was skipped. ``align_population`` (and its
Ray executor) only drive plans: reading people, chunking, the store, progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pas.core.data import Subject
from pas.steer.vector import SteeringVector


@dataclass(frozen=True)
class PersonFit:
    """One person's fitted vector. ``choice``: the hyper-parameters chosen on the known items (gated:
    ``(gain, shift)``; constant PAS: ``(alpha,)``); ``known_composite``: the fit's own known-item composite
    (gated: the readout's out-of-fold composite; constant: the validation composite at the chosen strength)."""

    vector: SteeringVector
    choice: tuple[float, ...]
    known_composite: float


class PopulationPlan(Protocol):
    """The person-independent part of one kind of fit; :meth:`fit_many` fits people with it."""

    method: str  # the vectors' provenance method, e.g. "pas-gated"

    def fit_many(self, people: Sequence[Subject]) -> tuple[list[PersonFit], list[tuple[str, str]]]:
        """``(fits, skipped)``; ``skipped`` holds ``(case, reason)`` for each person the fit refuses."""
        ...
