"""``PopulationStore``: many people's steering vectors in one folder, one person loaded in milliseconds.

People are appended in shards (safetensors, up to ``shard_size`` people each) plus an index
(:mod:`pas.population.storefiles`). Each person keeps only what is theirs: units that are filled
with one value are a number in a recipe, units that many people share (a pas-gated fit's correction
and pushes) are stored once (:mod:`pas.population.packing`). ``store[case]`` reads that person's
floats from the memory-mapped shard and rebuilds the exact vector (bit-identical tensors).

Every vector added must fit the store's model signature and be finite; every one loaded is checked
against its checksum and validated like a vector file. Writing is resumable: ``add_many`` commits
each full shard at once (``flush``/``close`` commit the rest), so a writer killed with ``kill -9``
loses at most the people not yet committed, never an indexed one; :meth:`PopulationStore.open`
tells the next run who is done (``case in store``). One process adds at a time (a lock file says so).
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pas.population.header import FIELDS, HEADER, INDEX, LOCK, SHARDS, SHARED, Header, StoreError, StoreProvenance
from pas.population.packing import Packer, checked_arrays
from pas.population.reader import Pending, StoreReader, StoreStats
from pas.population.storefiles import (
    Records,
    Tables,
    acquire_lock,
    adopt,
    read_shard,
    remove_temporary,
    shard_files,
    shard_path,
    write_header,
    write_index,
    write_shard,
    write_shared,
)
from pas.steer.signature import ModelMismatchError, ModelSignature
from pas.steer.vector import SteeringVector

__all__ = ["CaseExistsError", "PopulationStore", "StoreError", "StoreProvenance", "StoreStats"]


class CaseExistsError(ValueError):
    """A person added twice: a store never overwrites or duplicates anyone."""


class PopulationStore(StoreReader):
    """A folder of people's vectors. ``PopulationStore(path)`` (or :meth:`open`) opens one to read and
    to add people; :meth:`create` makes one. Use as a context manager, or call :meth:`close`, so that
    the last, partly filled shard is committed."""

    # ------------------------------------------------------------ making and opening

    @classmethod
    def create(cls, path: str | os.PathLike, signature: ModelSignature, provenance: StoreProvenance, *,
               overwrite: bool = False, shard_size: int = 4096) -> PopulationStore:
        """A new, empty store for ``signature``'s model. Refuses an existing store unless ``overwrite``
        (which deletes its people), and any folder holding other files."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file; give a folder for the store")
        header = Header.new(signature, provenance, shard_size)
        if (root / HEADER).exists() and not overwrite:
            raise FileExistsError(f"{root} already holds a population store; open it with PopulationStore.open(path) "
                                  f"to add people, or pass overwrite=True (CLI: --overwrite) to replace it")
        ours = {HEADER, INDEX, SHARDS, SHARED, LOCK}
        others = sorted(p.name for p in root.iterdir() if p.name not in ours) if root.is_dir() else []
        if others:
            raise StoreError(f"{root} holds other files ({', '.join(others[:5])}); give a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(root)
        for name in (INDEX, HEADER):
            (root / name).unlink(missing_ok=True)
        for folder in (root / SHARDS, root / SHARED):
            for p in folder.iterdir() if folder.is_dir() else ():
                p.unlink()
        (root / SHARDS).mkdir(exist_ok=True)
        write_header(root, header)
        store = cls(root)
        store._lock = lock
        return store

    @classmethod
    def open(cls, path: str | os.PathLike) -> PopulationStore:
        """Open an existing store to read it or to go on adding people (a resumed run)."""
        return cls(path)

    @classmethod
    def rebuild_index(cls, path: str | os.PathLike) -> PopulationStore:
        """Rewrite the index from the shard files (after the index was lost or damaged, or a shard deleted)."""
        root = Path(path)
        header = Header.read(root)
        lock = acquire_lock(root)
        remove_temporary(root)
        tables, shards, seen = Tables(), list[Records](), set[str]()
        for file in shard_files(root).values():
            adopt(shards, tables, *read_shard(file, header.store_id), file, seen)
            seen.update(shards[-1].cases)
        write_index(root, header.store_id, shards, tables)
        store = cls(root)
        store._lock = lock
        return store

    # ------------------------------------------------------------ writing

    def add(self, vector: SteeringVector) -> None:
        """Add one person (see :meth:`add_many`)."""
        self.add_many([vector])

    def add_many(self, vectors: Sequence[SteeringVector]) -> None:
        """Append people (keyed by ``vector.provenance.subject``). Every vector is checked first (model,
        finite tensors, a new case id): on any error nothing is added. Each full shard is committed at
        once; the rest waits for more people or :meth:`flush`/:meth:`close`."""
        self._begin_writing()
        checked: dict[str, tuple[SteeringVector, dict[str, np.ndarray], tuple[str, ...]]] = {}
        for v in vectors:
            case = v.provenance.subject
            if not isinstance(case, str) or not case:
                raise ValueError("a vector without a subject cannot be stored: the store keys people by case id "
                                 "(vector.relabel(subject=case))")
            if case in self or case in checked:
                raise CaseExistsError(f"case {case!r} is already in the population store {self.path}; nothing is "
                                      f"ever overwritten or added twice (check `case in store` before fitting)")
            if v.signature != self.signature:
                mismatch = self.signature.differences(v.signature)
                if mismatch or not self.signature.same_weights_as(v.signature):
                    raise ModelMismatchError(f"case {case!r}: vector for {v.signature.model_name!r} does not fit "
                                             f"this store's model {self.signature.model_name!r}: "
                                             f"{mismatch or 'other weights'}")
            try:
                prov = tuple(json.dumps(getattr(v.provenance, f), sort_keys=True) for f in FIELDS)
            except (TypeError, ValueError) as e:
                raise ValueError(f"case {case!r}: provenance is not JSON-serialisable: {e}") from e
            checked[case] = (v, checked_arrays(v, case), prov)
        assert self._packer is not None
        for case, (v, arrays, prov) in checked.items():
            self._pending_at[case] = len(self._pending)
            self._pending.append(Pending(case, self._packer.pack(arrays, v.positions), prov))
            if len(self._pending) >= self.shard_size:
                self._commit()

    def flush(self) -> None:
        """Commit the people added but not yet written (as a shard of their own)."""
        if self._pending:
            self._commit()

    def close(self) -> None:
        """Commit pending people, release the writer lock and the open shards. Reading still works."""
        try:
            self.flush()
        finally:
            self._handles.clear()
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
                self._packer = None

    def __enter__(self) -> PopulationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_pending", None):
            warnings.warn(f"population store {self.path} dropped with {len(self._pending)} people not written; "
                          f"call store.close() (or use `with`) to commit them", ResourceWarning, stacklevel=1)

    def _begin_writing(self) -> None:
        if self._packer is not None:
            return
        if self._lock is None:
            self._lock = acquire_lock(self.path)
        remove_temporary(self.path)
        self._load()  # what another writer committed before we took the lock
        if self._adopted:
            write_index(self.path, self._header.store_id, self._shards, self._tables)
        self._packer = Packer(self.signature.shape, self._where)

    def _commit(self) -> None:
        """Write the shared units, then the shard of the pending people, then the index."""
        assert self._packer is not None
        take, root, number = self._pending[: self.shard_size], self.path, self._next
        new = self._packer.take_new()
        if new:
            self._where.update(dict.fromkeys(new, write_shared(root, new)))
            self._unit_cache.update(new)
        local = Tables()
        lengths = [len(p.packed.own) for p in take]
        data = np.concatenate([p.packed.own for p in take]).astype(np.float32, copy=False)
        records = Records(number, [p.case for p in take],
                          np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64),
                          np.array([local.recipe_id(p.packed.recipe) for p in take], np.int32),
                          np.array([[local.value_id(f, v) for f, v in zip(FIELDS, p.prov, strict=True)] for p in take],
                                   np.int32).reshape(len(take), len(FIELDS)),
                          np.array([zlib.crc32(p.packed.own.tobytes()) for p in take], np.int64))
        nbytes = write_shard(root, self._header.store_id, records, local, data)
        self._next += 1
        records.nbytes = nbytes
        adopt(self._shards, self._tables, records, local, shard_path(root, number), self._row.keys())
        self._index_shard(self._shards[-1])
        rest = self._pending[len(take):]
        self._pending, self._pending_at = rest, {p.case: i for i, p in enumerate(rest)}
        write_index(root, self._header.store_id, self._shards, self._tables)
