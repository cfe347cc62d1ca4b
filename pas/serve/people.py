"""The people a server knows and the steering each request gets: a person of the store, a trait pole, an MBTI type.

:meth:`People.find` checks that a parsed name exists here without model work (the API calls it before a
request is queued, to answer 404 at once). :meth:`People.steer` gives the worker a row's steering: the
person's vector (read from the store, or for a pole or type built on the model once through
:func:`pas.space.spec.vector_from_spec`) times a strength: the request's, else the server's ``--strength``,
else the person's chat strength measured as ``pas chat`` measures it (:func:`pas.steer.fluency.chat_strength`,
once per person). No vector file is ever read from a path a client names: the only sources are the store
given at start-up and the poles and types built here.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from typing import TYPE_CHECKING

from pas.serve.decode import RowSteer
from pas.serve.names import PersonName, UnknownPerson
from pas.space.poles import POLES, TYPES
from pas.steer.fluency import chat_strength, check_strength
from pas.steer.signature import ModelSignature

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pas.core.models import CausalLM
    from pas.population.reader import StoreReader
    from pas.score.scorer import ItemScorer
    from pas.steer.vector import SteeringVector


class People:
    """Who may be named (see the module docstring). ``store``: a population store opened for reading;
    ``data_dir``: the PAPI data dir whose item bank builds poles and types (None: none served); ``strength``:
    the default strength for everyone instead of measuring each person's chat strength; ``allow_other_weights``:
    accept store vectors made on other weights of the same architecture. :meth:`steer` does model work: call it
    from the thread that owns the model."""

    def __init__(self, model: CausalLM, tokenizer: PreTrainedTokenizerBase, store: StoreReader | None = None, *,
                 data_dir: str | os.PathLike[str] | None = None, strength: float | None = None,
                 allow_other_weights: bool = False, cache_size: int = 4096) -> None:
        self.model = model
        self.tokenizer = copy.deepcopy(tokenizer)  # the worker's own: the API tokenizes on another thread
        self.store, self.data_dir = store, data_dir
        self.default_strength = None if strength is None else check_strength(strength)
        self.allow_other_weights = allow_other_weights
        self.signature = ModelSignature.of(model)
        self._built: dict[str, SteeringVector] = {}  # poles and types: built once
        self._chat: dict[str, float] = {}  # person id -> chat strength
        self._steers: OrderedDict[tuple[str, float], RowSteer] = OrderedDict()  # the most recent cache_size
        self._cache_size = cache_size
        self._scorer: ItemScorer | None = None

    def find(self, name: PersonName) -> PersonName:
        """``name`` if it names someone here; :class:`UnknownPerson` (saying what is here) if not. No model work."""
        if name.kind == "case":
            if self.store is None:
                raise UnknownPerson(f"{name.id}: this server has no population store (start it with --store STORE); "
                                    f"pas:trait:E+, pas:type:INFP and base need none")
            if name.key not in self.store:
                raise UnknownPerson(f"{name.id}: no person {name.key!r} in the population store "
                                    f"({len(self.store)} people; GET /v1/models lists them)")
        elif name.kind in ("trait", "type") and self.data_dir is None:
            raise UnknownPerson(f"{name.id}: trait poles and types are built from the item bank; start the server "
                                f"with --data-dir (a PAPI data dir)")
        return name

    def ids(self, limit: int = 1000) -> list[str]:
        """Model ids for GET /v1/models: base, the poles and types when served, then store people (``limit`` in all)."""
        ids = ["base"]
        if self.data_dir is not None:
            ids += [f"pas:trait:{p}" for p in POLES] + [f"pas:type:{t}" for t in TYPES]
        if self.store is not None:
            ids += [f"pas:{case}" for case in self.store.cases()[: max(limit - len(ids), 0)]]
        return ids[:limit]

    def steer(self, name: PersonName, strength: float | None = None) -> tuple[RowSteer | None, float | None]:
        """The row steering for ``name`` at ``strength`` (None: the default, see the module docstring) and the
        strength used; ``(None, None)`` for base. Model work, cached per person and strength."""
        self.find(name)
        if not name.steered:
            return None, None
        known = strength if strength is not None else self.default_strength
        s = check_strength(known) if known is not None else self._chat.get(name.id)
        steer = None if s is None else self._steers.get((name.id, s))
        if steer is None or s is None:
            vector = self.vector(name)
            assert vector is not None  # a steered name has a vector
            s = s if s is not None else self.strength_of(name, vector)
            steer = RowSteer.of(self.model, vector * s)
            self._steers[(name.id, s)] = steer
            if len(self._steers) > self._cache_size:
                self._steers.popitem(last=False)
        self._steers.move_to_end((name.id, s))
        return steer, s

    def vector(self, name: PersonName) -> SteeringVector | None:
        """``name``'s vector at strength 1, checked against the model (None for base). A pole or type is built
        on the model the first time."""
        self.find(name)
        if name.kind == "base":
            return None
        if name.kind == "case":
            assert self.store is not None  # find() refused a case without a store
            vector = self.store[name.key]
            if self.allow_other_weights:
                vector = vector.for_weights_of(self.model)
            if vector.signature != self.signature:
                vector.check_model(self.model)
            return vector
        if name.id not in self._built:
            from pas.space.spec import SteeringSpec, vector_from_spec

            spec = SteeringSpec(trait=name.key) if name.kind == "trait" else SteeringSpec(type=name.key)
            built = vector_from_spec(spec, self.model, self.scorer())
            assert built is not None  # a trait or type spec always builds a vector
            self._built[name.id] = built
        return self._built[name.id]

    def strength_of(self, name: PersonName, vector: SteeringVector) -> float:
        """The default strength for ``name``: the server's ``strength``, else the person's chat strength."""
        if self.default_strength is not None:
            return self.default_strength
        if name.id not in self._chat:
            self._chat[name.id] = chat_strength(self.model, self.tokenizer, vector)[0]
        return self._chat[name.id]

    def scorer(self) -> ItemScorer:
        """The item scorer that builds poles and types (the data dir's item bank, loaded the first time)."""
        if self._scorer is None:
            from pas.core.data import load_items
            from pas.score.scorer import ItemScorer

            self._scorer = ItemScorer(self.model, self.tokenizer, load_items(self.data_dir))
        return self._scorer
