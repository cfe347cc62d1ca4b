"""ScorerCache: person-independent things computed once per scorer (answer states, letter Jacobians, poles...)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from pas.score.scorer import ItemScorer

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ScorerCache(Generic[K, V]):
    """One purpose's cache of person-independent things computed for a scorer (answer states, letter
    Jacobians, pole vectors...), kept as long as the scorer lives. Each purpose owns its cache, typed
    by its key and value, beside the code that computes it."""

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        self._by_scorer: weakref.WeakKeyDictionary[ItemScorer, dict[K, V]] = weakref.WeakKeyDictionary()

    def get(self, scorer: ItemScorer, key: K, compute: Callable[[], V]) -> V:
        """``compute()`` once per (scorer, key)."""
        mine = self._by_scorer.setdefault(scorer, {})
        if key not in mine:
            mine[key] = compute()
        return mine[key]

    def put(self, scorer: ItemScorer, key: K, value: V) -> None:
        """Set a value (e.g. planted states in a test)."""
        self._by_scorer.setdefault(scorer, {})[key] = value
