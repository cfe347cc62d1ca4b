"""What a population fit is made of: a plan (the person-independent work, done once) that fits people in batches.

Every kind of population fit (exact gated, its table fast path, constant PAS) is a :class:`PopulationPlan`:
built once per model, scorer and config, then :meth:`PopulationPlan.fit_many` fits a chunk of people and
returns one :class:`PersonFit` each, or the reason a person was skipped. ``align_population`` (and its
Ray executor) only drive plans: reading people, chunking, the store, progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch

from pas.core.data import Subject
from pas.core.items import ItemBank
from pas.score.prompts import PromptTemplate
from pas.score.scorer import ItemScorer
from pas.steer.signature import ModelSignature
from pas.steer.vector import SteeringVector

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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

    def prepare(self) -> None:
        """Per-process set-up that must not land in the middle of a run (e.g. compiling kernels for every shape
        a fit meets); called when the plan is built and when a worker attaches it."""
        ...


class ChunkFits(NamedTuple):
    """One chunk fitted: every ``case`` it held (fitted or skipped), the fits, and ``(case, reason)`` per skip."""

    cases: list[str]
    fits: list[PersonFit]
    skipped: list[tuple[str, str]]


class Executor(Protocol):
    """How chunks get fitted: ``executor(plan, chunks)`` yields one :class:`ChunkFits` per chunk, in any order,
    reading ``chunks`` lazily (only a bounded number in flight). :func:`fit_here` fits in this process;
    :class:`pas.population.distributed.RayExecutor` on Ray workers."""

    def __call__(self, plan: PopulationPlan, chunks: Iterable[Sequence[Subject]]) -> Iterator[ChunkFits]: ...


def fit_here(plan: PopulationPlan, chunks: Iterable[Sequence[Subject]]) -> Iterator[ChunkFits]:
    """The local executor: each chunk fitted in this process, in order, one at a time."""
    for people in chunks:
        yield ChunkFits([s.case for s in people], *plan.fit_many(people))


@dataclass(frozen=True)
class SharedPlan:
    """A plan without its model: the person-independent state (tensors, arrays, config), the item bank and the
    scorer's settings. Picklable, so a driver makes the plan once and sends this once to every worker process,
    which rebuilds the plan on its own copy of the model (:meth:`attach`) instead of redoing the one-time work.

    Made by :meth:`of` for any plan whose only link to the model is its ``scorer`` attribute (``state``: every
    other attribute; ``kind``: the plan's class, rebuilt without calling its ``__init__``)."""

    kind: type
    state: dict[str, Any]
    signature: ModelSignature
    bank: ItemBank
    template: PromptTemplate
    batch_size: int

    @classmethod
    def of(cls, plan: Any) -> SharedPlan:
        """``plan``'s state without its scorer; refuses a plan that holds a model elsewhere."""
        scorer: ItemScorer = plan.scorer
        state = {k: v for k, v in vars(plan).items() if k != "scorer"}
        held = [k for k, v in state.items() if isinstance(v, torch.nn.Module)]
        if held:
            raise ValueError(f"{type(plan).__name__} holds a model in {held}; only its scorer may hold one")
        return cls(type(plan), state, ModelSignature.of(scorer.model), scorer.bank, scorer.template,
                   scorer.batch_size)

    def attach(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PopulationPlan:
        """The plan on ``model`` (the driver's model, loaded here): it fits exactly what the driver's plan fits.
        The plan takes over this object's state (attach each deserialised copy once). Raises
        :class:`pas.steer.signature.ModelMismatchError` when ``model`` is another model than the plan's."""
        self.signature.check(model)
        plan: Any = object.__new__(self.kind)
        vars(plan).update(self.state)
        plan.scorer = ItemScorer(model, tokenizer, self.bank, self.template, batch_size=self.batch_size)
        plan.prepare()
        return plan
