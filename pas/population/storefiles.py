"""The population store's files: header, shards, shared units and index, each written atomically.

::

    STORE/
      store.json                    header: format version, store id, model signature, provenance
      shards/shard-000000.safetensors   people: ``data`` (their own floats) and per-person records
      shared/shared-<hash>.safetensors  units shared by many people, one tensor per content hash
      index.safetensors             every shard's records in one file: case -> shard, start, recipe
      .lock                         held (flock) by the one process adding people

A shard is self-describing (its records and the recipes and provenance values they use sit in its
metadata), so the index can always be rebuilt from the shards. Each file is written to a hidden
temporary name, fsynced and renamed: a shard is committed by its rename, after the shared units it
uses; the index is rewritten after the shard. A killed writer leaves at most a temporary file
(removed by the next writer) or a committed shard the index does not list yet (adopted on open).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

try:
    import fcntl
except ImportError:  # not POSIX: no writer lock
    fcntl = None  # type: ignore[assignment]

from pas.population.header import (
    FIELDS,
    FORMAT_VERSION,
    HEADER,
    INDEX,
    LOCK,
    REBUILD,
    SHARDS,
    SHARED,
    Header,
    StoreError,
)


@dataclass
class Records:
    """Per-person records of one shard: row ``i`` is ``cases[i]``, whose own floats are
    ``data[start[i] : start[i] + length]`` (length from the recipe) with checksum ``crc[i]``;
    ``recipe[i]`` and ``prov[i, f]`` index the recipe and provenance-value tables that go with it."""

    shard: int
    cases: list[str]
    start: np.ndarray  # int64 [n]
    recipe: np.ndarray  # int32 [n]
    prov: np.ndarray  # int32 [n, len(FIELDS)]
    crc: np.ndarray  # int64 [n]
    nbytes: int = 0  # the shard file's size

    def arrays(self) -> dict[str, torch.Tensor]:
        return {"start": torch.from_numpy(self.start), "recipe": torch.from_numpy(self.recipe),
                "prov": torch.from_numpy(self.prov), "crc": torch.from_numpy(self.crc)}


class Tables:
    """Interned strings: recipes (JSON) and, per provenance field, its values (JSON)."""

    def __init__(self, recipes: list[str] | None = None, values: dict[str, list[str]] | None = None) -> None:
        self.recipes: list[str] = []
        self.values: dict[str, list[str]] = {f: [] for f in FIELDS}
        self._ids: dict[str, dict[str, int]] = {"": {}, **{f: {} for f in FIELDS}}
        for r in recipes or []:
            self.recipe_id(r)
        for f, vs in (values or {}).items():
            for v in vs:
                self.value_id(f, v)

    def recipe_id(self, text: str) -> int:
        return self._intern("", self.recipes, text)

    def value_id(self, name: str, text: str) -> int:
        if name not in self.values:
            raise ValueError(f"unknown provenance field {name!r}")
        return self._intern(name, self.values[name], text)

    def _intern(self, key: str, table: list[str], text: str) -> int:
        ids = self._ids[key]
        if text not in ids:
            ids[text] = len(table)
            table.append(text)
        return ids[text]

    def meta(self) -> dict[str, Any]:
        return {"recipes": self.recipes, "values": self.values, "fields": list(FIELDS)}


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then fsync and rename to ``path``: the file is either the old one or complete."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_header(root: Path, header: Header) -> None:
    write_atomic(root / HEADER, lambda tmp: tmp.write_text(header.text()))


def remove_temporary(root: Path) -> list[Path]:
    """Delete the temporary files a killed writer left (call only while holding the writer lock)."""
    gone = []
    for folder in (root, root / SHARDS, root / SHARED):
        for p in folder.glob(".*.tmp-*") if folder.is_dir() else ():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def shard_path(root: Path, shard: int) -> Path:
    return root / SHARDS / f"shard-{shard:06d}.safetensors"


def shard_files(root: Path) -> dict[int, Path]:
    """Committed shard files by number (temporary files are hidden and never match)."""
    out = {}
    for p in (root / SHARDS).glob("shard-*.safetensors"):
        try:
            out[int(p.name[6:-12])] = p
        except ValueError:
            continue
    return dict(sorted(out.items()))


def write_shard(root: Path, store_id: str, records: Records, tables: Tables, data: np.ndarray) -> int:
    """Commit one shard; returns its size in bytes. The header's metadata stays small (a read opens it);
    the cases and tables, needed only to adopt the shard into an index, are a ``uint8`` JSON tensor."""
    path = shard_path(root, records.shard)
    head = {"format_version": FORMAT_VERSION, "store_id": store_id, "shard": records.shard}
    about = np.frombuffer(json.dumps({"cases": records.cases, **tables.meta()}).encode(), np.uint8)
    write_atomic(path, lambda tmp: save_file({"data": torch.from_numpy(data), "about": torch.from_numpy(about.copy()),
                                              **records.arrays()}, tmp, metadata={"pas-shard": json.dumps(head)}))
    return path.stat().st_size


def open_shard(path: Path, store_id: str) -> tuple[Any, dict[str, Any]]:
    """A ``safe_open`` handle (numpy) on a committed shard, its header checked."""
    try:
        handle = safe_open(path, "np")
        head = json.loads((handle.metadata() or {})["pas-shard"])
    except FileNotFoundError as e:
        raise StoreError(f"{path}: shard file is missing (deleted or moved?); restore it, or {REBUILD} "
                         f"(its people are then absent and must be fitted again)") from e
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise StoreError(f"{path}: not a readable shard (truncated or corrupt?): {e}. Restore it, or delete it "
                         f"and {REBUILD} (its people must then be fitted again)") from e
    if head.get("format_version") != FORMAT_VERSION or head.get("store_id") != store_id:
        raise StoreError(f"{path}: shard of another store or format ({head.get('store_id')}, version "
                         f"{head.get('format_version')}; this store is {store_id}, version {FORMAT_VERSION})")
    return handle, head


def read_shard(path: Path, store_id: str) -> tuple[Records, Tables]:
    """A committed shard's records and its own tables (to adopt it into the index)."""
    handle, head = open_shard(path, store_id)
    try:
        arrays = {k: handle.get_tensor(k) for k in ("start", "recipe", "prov", "crc")}
        about = json.loads(handle.get_tensor("about").tobytes())
        records = Records(int(head["shard"]), list(about["cases"]), nbytes=path.stat().st_size, **arrays)
        return records, Tables(about["recipes"], about["values"])
    except (SafetensorError, KeyError, ValueError, TypeError) as e:
        raise StoreError(f"{path}: shard records unreadable ({e}); delete it and {REBUILD}") from e


def write_index(root: Path, store_id: str, shards: list[Records], tables: Tables) -> None:
    def cat(name: str, dtype: type, width: int = 0) -> torch.Tensor:
        parts = [getattr(r, name) for r in shards]
        empty: np.ndarray = np.zeros((0, width) if width else 0, dtype)
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts) if parts else empty))

    tensors = {"start": cat("start", np.int64), "recipe": cat("recipe", np.int32),
               "prov": cat("prov", np.int32, len(FIELDS)), "crc": cat("crc", np.int64)}
    meta = {"format_version": FORMAT_VERSION, "store_id": store_id, **tables.meta(),
            "shards": [{"shard": r.shard, "people": len(r.cases), "bytes": r.nbytes} for r in shards],
            "cases": [c for r in shards for c in r.cases]}
    write_atomic(root / INDEX, lambda tmp: save_file(tensors, tmp, metadata={"pas-index": json.dumps(meta)}))


def read_index(root: Path, store_id: str) -> tuple[list[Records], Tables]:
    path = root / INDEX
    if not path.exists():
        return [], Tables()
    try:
        with safe_open(path, "np") as f:
            meta = json.loads((f.metadata() or {})["pas-index"])
            arrays = {k: f.get_tensor(k) for k in ("start", "recipe", "prov", "crc")}
        if meta.get("format_version") != FORMAT_VERSION or meta.get("store_id") != store_id:
            raise StoreError(f"{path}: index of another store or format ({meta.get('store_id')}, version "
                             f"{meta.get('format_version')}); {REBUILD}")
        if meta.get("fields") != list(FIELDS):
            raise ValueError(f"provenance fields {meta.get('fields')} differ from {list(FIELDS)}")
        shards, at = [], 0
        for s in meta["shards"]:
            n = int(s["people"])
            rows = slice(at, at + n)
            shards.append(Records(int(s["shard"]), meta["cases"][rows], arrays["start"][rows],
                                  arrays["recipe"][rows], arrays["prov"][rows], arrays["crc"][rows], int(s["bytes"])))
            at += n
        if at != len(meta["cases"]) or any(len(a) != at for a in arrays.values()):
            raise ValueError(f"index lists {at} people in its shards, {len(meta['cases'])} cases")
        return shards, Tables(meta["recipes"], meta["values"])
    except StoreError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
        raise StoreError(f"{path}: corrupt or truncated index ({e}); {REBUILD}") from e


def write_shared(root: Path, units: dict[str, np.ndarray]) -> Path:
    """Write newly shared units (hash -> unit) to a file named by its content, so that units a killed writer
    left (and a resumed one already uses) are never replaced by other units; returns its path."""
    (root / SHARED).mkdir(exist_ok=True)
    name = hashlib.blake2b(",".join(sorted(units)).encode(), digest_size=8).hexdigest()
    path = root / SHARED / f"shared-{name}.safetensors"
    write_atomic(path, lambda tmp: save_file({h: torch.from_numpy(u) for h, u in units.items()}, tmp,
                                             metadata={"pas-shared": str(FORMAT_VERSION)}))
    return path


def shared_files(root: Path) -> dict[str, Path]:
    """Which file holds each shared unit, by its hash."""
    where = {}
    for p in sorted((root / SHARED).glob("shared-*.safetensors")):
        try:
            with safe_open(p, "pt") as f:
                where.update(dict.fromkeys(f.keys(), p))
        except (SafetensorError, OSError) as e:
            raise StoreError(f"{p}: unreadable shared-units file (truncated or corrupt?): {e}. Restore it from a "
                             f"copy: every person using its units depends on it") from e
    return where


def adopt(shards: list[Records], tables: Tables, records: Records, local: Tables, path: Path,
           seen: Container[str]) -> None:
    """Append a shard's records to ``shards``, its local table ids mapped to ``tables``' ids; refuses a shard
    that repeats a case of ``seen`` (the cases stored so far)."""
    again = [c for c in records.cases if c in seen]
    if again or len(set(records.cases)) != len(records.cases):
        raise StoreError(f"{path}: repeats cases already stored (e.g. {again[:3]}): shards were copied in by hand? "
                         f"Remove the duplicate shard and rebuild the index with PopulationStore.rebuild_index(path)")
    recipe = np.array([tables.recipe_id(t) for t in local.recipes] or [0], np.int32)
    prov = np.empty_like(records.prov)
    for j, f in enumerate(FIELDS):
        ids = np.array([tables.value_id(f, v) for v in local.values.get(f, [])] or [0], np.int32)
        prov[:, j] = ids[records.prov[:, j]]
    shards.append(Records(records.shard, records.cases, records.start, recipe[records.recipe], prov, records.crc,
                          records.nbytes))


def acquire_lock(root: Path) -> int:
    """Hold the store's writer lock (released when the process ends, even by ``kill -9``)."""
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{root}: another process is adding people to this store (it holds {root / LOCK}); "
                             f"a store has one writer at a time: wait for it, or stop it") from None
    return fd

