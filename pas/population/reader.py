"""Reading a population store: ``store[case]`` in milliseconds, batches for scoring many people.

:class:`StoreReader` holds the index in memory (case -> shard, row), opens shards lazily (memory-mapped
``safe_open`` handles, the most recent ``open_shards`` kept) and reads exactly one person's floats
per lookup. Every person read is checked against their checksum and rebuilt through the
:class:`~pas.steer.vector.SteeringVector` constructor, which refuses NaN/inf as a vector file does.
Writing is :class:`pas.population.store.PopulationStore`, which extends this class.
"""

from __future__ import annotations

import bisect
import json
import os
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError, safe_open

from pas.core.arch import ModelLayout
from pas.population.header import FIELDS, HEADER, INDEX, REBUILD, SHARDS, SHARED, Header, StoreError, StoreProvenance
from pas.population.packing import Packed, Packer, Recipe, digest
from pas.population.storefiles import (
    Records,
    adopt,
    open_shard,
    read_index,
    read_shard,
    shard_files,
    shard_path,
    shared_files,
)
from pas.steer.gates import Gates
from pas.steer.signature import ModelSignature
from pas.steer.vector import Provenance, SteeringVector

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class StoreStats:
    """``people`` committed (``pending``: added, not yet committed), files, and bytes on disk."""

    people: int
    pending: int
    shards: int
    shared_units: int
    bytes: int
    bytes_per_person: float


@dataclass(frozen=True)
class Pending:
    """A person added but not yet committed to a shard."""

    case: str
    packed: Packed
    prov: tuple[str, ...]  # JSON per provenance field


class StoreReader:
    """A population store opened for reading (see :class:`pas.population.store.PopulationStore`)."""

    def __init__(self, path: str | os.PathLike, *, open_shards: int = 64) -> None:
        self.path = Path(path)
        self._header = Header.read(self.path)
        self._open_shards = open_shards
        self._handles: OrderedDict[int, Any] = OrderedDict()  # shard -> safe_open handle
        self._recipes: OrderedDict[int, Recipe] = OrderedDict()
        self._unit_cache: dict[str, np.ndarray] = {}
        # a writer's state (PopulationStore): people added but not committed, the packer, the lock
        self._pending: list[Pending] = []
        self._pending_at: dict[str, int] = {}
        self._packer: Packer | None = None
        self._lock: int | None = None
        self._load()

    def _load(self) -> None:
        """Read the index; adopt shards committed after it was last written (a writer killed in between)."""
        root, store_id = self.path, self._header.store_id
        self._shards, self._tables = read_index(root, store_id)
        self._handles.clear()
        self._recipes.clear()
        on_disk = shard_files(root)
        for r in self._shards:
            path = on_disk.get(r.shard)
            if path is None:
                raise StoreError(f"{shard_path(root, r.shard)}: shard file is missing ({len(r.cases)} people); "
                                 f"restore it, or {REBUILD} and fit them again")
            if path.stat().st_size != r.nbytes:
                raise StoreError(f"{path}: {path.stat().st_size} bytes, the index says {r.nbytes} (truncated or "
                                 f"changed); restore it, or delete it, {REBUILD} and fit its people again")
        self._row: dict[str, int] = {}
        self._first: list[int] = []
        for r in self._shards:
            self._index_shard(r)
        listed = {r.shard for r in self._shards}
        self._adopted = [n for n in on_disk if n not in listed]
        for n in self._adopted:
            adopt(self._shards, self._tables, *read_shard(on_disk[n], store_id), on_disk[n], self._row.keys())
            self._index_shard(self._shards[-1])
        self._where = shared_files(root)
        self._next = max(on_disk, default=-1) + 1

    def _index_shard(self, r: Records) -> None:
        """Add shard ``r``'s people to the lookup (its rows follow every earlier shard's)."""
        first = self._first[-1] + len(self._shards[len(self._first) - 1].cases) if self._first else 0
        self._first.append(first)
        self._row.update((c, first + i) for i, c in enumerate(r.cases))
        if len(self._row) != first + len(r.cases):
            raise StoreError(f"{self.path / INDEX}: lists a case twice (shard {r.shard}); {REBUILD}")

    # ------------------------------------------------------------ what it holds

    @property
    def signature(self) -> ModelSignature:
        return self._header.signature

    @property
    def provenance(self) -> StoreProvenance:
        return self._header.provenance

    @property
    def shard_size(self) -> int:
        return self._header.shard_size

    def check_model(self, model: PreTrainedModel) -> ModelLayout:
        """Raise :class:`ModelMismatchError` if ``model`` is not the one this store's vectors were made for."""
        return self.signature.check(model)

    def cases(self) -> list[str]:
        """Every person's case id, in the order added (committed first, then pending)."""
        return [c for r in self._shards for c in r.cases] + [p.case for p in self._pending]

    def __len__(self) -> int:
        return len(self._row) + len(self._pending)

    def __contains__(self, case: object) -> bool:
        return case in self._row or case in self._pending_at

    def __iter__(self) -> Iterator[str]:
        return iter(self.cases())

    def stats(self) -> StoreStats:
        files = [self.path / HEADER, self.path / INDEX, *self.path.glob(f"{SHARDS}/shard-*"),
                 *self.path.glob(f"{SHARED}/shared-*")]
        size = sum(p.stat().st_size for p in files if p.exists())
        people = len(self._row)
        return StoreStats(people, len(self._pending), len(self._shards), len(self._where), size,
                          size / people if people else 0.0)

    def __repr__(self) -> str:
        return (f"PopulationStore({str(self.path)!r}, people={len(self)}, model={self.signature.model_name!r}, "
                f"synthetic={self.provenance.synthetic})")

    # ------------------------------------------------------------ reading

    def __getitem__(self, case: str) -> SteeringVector:
        if case in self._pending_at:
            p = self._pending[self._pending_at[case]]
            prov = [self._tables.value_id(f, v) for f, v in zip(FIELDS, p.prov, strict=True)]
            return self._vector(case, self._tables.recipe_id(p.packed.recipe), p.packed.own, prov, None)
        row = self._row.get(case)
        if row is None:
            raise KeyError(f"case {case!r} is not in the population store {self.path} ({len(self)} people)")
        at = bisect.bisect_right(self._first, row) - 1
        r, i = self._shards[at], row - self._first[at]
        recipe = self._recipe(int(r.recipe[i]))
        own = self._read(r, int(r.start[i]), int(r.start[i]) + recipe.size)
        return self._checked(r, i, own)

    def get_many(self, cases: Iterable[str]) -> list[SteeringVector]:
        """The vectors of ``cases``, in that order (every case checked before any is read)."""
        cases = list(cases)
        missing = [c for c in cases if c not in self]
        if missing:
            raise KeyError(f"{len(missing)} cases are not in the population store {self.path} ({len(self)} people), "
                           f"e.g. {missing[:3]}")
        return [self[c] for c in cases]

    def iter_batches(self, batch_size: int) -> Iterator[list[SteeringVector]]:
        """Every person in order, ``batch_size`` at a time (the last batch may be smaller); reads each
        batch's floats from its shard in one slice, so memory is bounded by the batch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        batch: list[SteeringVector] = []
        for r in self._shards:
            for a in range(0, len(r.cases), batch_size):
                rows = range(a, min(a + batch_size, len(r.cases)))
                sizes = [self._recipe(int(r.recipe[i])).size for i in rows]
                lo = int(r.start[a])
                hi = max(int(r.start[i]) + s for i, s in zip(rows, sizes, strict=True))
                chunk = self._read(r, lo, hi)
                for i, s in zip(rows, sizes, strict=True):
                    batch.append(self._checked(r, i, chunk[int(r.start[i]) - lo : int(r.start[i]) - lo + s]))
                    if len(batch) == batch_size:
                        yield batch
                        batch = []
        for p in list(self._pending):
            batch.append(self[p.case])
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _checked(self, r: Records, i: int, own: np.ndarray) -> SteeringVector:
        if zlib.crc32(own.tobytes()) != int(r.crc[i]):
            raise StoreError(f"{shard_path(self.path, r.shard)}: the floats of case {r.cases[i]!r} fail their "
                             f"checksum (the file is corrupt); restore it, or delete it, {REBUILD} and fit its "
                             f"people again")
        return self._vector(r.cases[i], int(r.recipe[i]), own, r.prov[i].tolist(), r.shard)

    def _vector(self, case: str, recipe_id: int, own: np.ndarray, prov: Sequence[int],
                shard: int | None) -> SteeringVector:
        """The vector of ``case`` from its recipe, own floats and provenance ids (``shard``: where it was
        read; ``None``: pending, not yet written), validated by the vector's constructor."""
        recipe = self._recipe(recipe_id)
        try:
            t = recipe.build(own)
            fields = {f: json.loads(self._tables.values[f][int(k)]) for f, k in zip(FIELDS, prov, strict=True)}
            gates = None if "gate_weights" not in t else Gates(t["gate_weights"], t["gate_bias"], t.get("gate_limit"))
            return SteeringVector(t["offsets"], self.signature, gates, recipe.positions,
                                  Provenance(subject=case, **fields))
        except (ValueError, TypeError, KeyError, IndexError) as e:
            where = "(not yet written)" if shard is None else shard_path(self.path, shard)
            raise StoreError(f"{where}: invalid vector for case {case!r}: {e}") from e

    def _recipe(self, k: int) -> Recipe:
        recipe = self._recipes.get(k)
        if recipe is None:
            try:
                recipe = Recipe(self._tables.recipes[k], self.signature.shape, self._unit)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise StoreError(f"{self.path / INDEX}: recipe {k} is unusable ({e}); rebuild the index with "
                                 f"PopulationStore.rebuild_index(path)") from e
            self._recipes[k] = recipe
            if len(self._recipes) > 1024:
                self._recipes.popitem(last=False)
        return recipe

    def _unit(self, h: str) -> np.ndarray:
        """A shared unit by its hash (checked against it once, then kept)."""
        unit = self._unit_cache.get(h)
        if unit is None and self._packer is not None:
            unit = self._packer.new.get(h)
        if unit is None:
            path = self._where.get(h)
            if path is None:
                raise StoreError(f"{self.path / SHARED}: no file holds shared unit {h}; restore the store's "
                                 f"{SHARED}/ folder from a copy")
            try:
                with safe_open(path, "np") as f:
                    unit = f.get_tensor(h)
            except (SafetensorError, OSError) as e:
                raise StoreError(f"{path}: unreadable shared-units file: {e}; restore it from a copy") from e
            if digest(unit) != h:
                raise StoreError(f"{path}: shared unit {h} does not match its hash (corrupt file); restore it")
            self._unit_cache[h] = unit
        return unit

    def _read(self, r: Records, a: int, b: int) -> np.ndarray:
        handle = self._handles.get(r.shard)
        if handle is None:
            path = shard_path(self.path, r.shard)
            if path.exists() and path.stat().st_size != r.nbytes:
                raise StoreError(f"{path}: {path.stat().st_size} bytes, the index says {r.nbytes} (truncated or "
                                 f"changed); restore it, or delete it and PopulationStore.rebuild_index(path)")
            handle = open_shard(path, self._header.store_id)[0]
            self._handles[r.shard] = handle
            if len(self._handles) > self._open_shards:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(r.shard)
        if b <= a:
            return np.zeros(0, np.float32)
        try:
            return handle.get_slice("data")[a:b]
        except (SafetensorError, OSError) as e:
            raise StoreError(f"{shard_path(self.path, r.shard)}: cannot read people's floats: {e}") from e
