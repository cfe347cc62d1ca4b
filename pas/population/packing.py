"""Packing one person's steering tensors compactly: what the population store writes per person.

A vector's tensors (``offsets``, ``gate_weights``, ``gate_bias``, ``gate_limit``) are cut into *units*:
one ``(layer, head)`` row of ``head_dim`` floats for offsets and gate weights, one layer row of
``n_heads`` floats for gate bias and limit. Each unit is one of

- a *fill*: every float has the same bit pattern (zeros, the constant gate ``b = 1``, ``inf`` limits);
- *shared*: bit-identical to a unit already seen (content-addressed by a hash of its bytes, stored
  once for the whole store), e.g. the correction layer and the pushes of a pas-gated fit, which are
  the same for every person of one model;
- *own*: the person's floats, written to their shard.

A :class:`Recipe` (JSON, interned by the store) says which unit is which, in runs; the person's own
floats follow it in order. Unpacking gives back bit-identical tensors (float32, as vector files load).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from pas.steer.file import TENSORS, tensors
from pas.steer.vector import SteeringVector

SEEN_LIMIT = 65536  # units remembered (by hash) to notice a repeat; beyond it the memory starts afresh


def unit_shape(name: str, shape: tuple[int, int, int]) -> tuple[int, int]:
    """``(units, floats per unit)`` of tensor ``name`` for offsets of ``shape = (layers, heads, head_dim)``."""
    n_layers, n_heads, head_dim = shape
    return (n_layers * n_heads, head_dim) if name in ("offsets", "gate_weights") else (n_layers, n_heads)


def digest(unit: np.ndarray) -> str:
    """The content address of one unit (float32 bytes)."""
    return hashlib.blake2b(unit.tobytes(), digest_size=16).hexdigest()


def float32(t: torch.Tensor, what: str) -> np.ndarray:
    """``t`` as contiguous float32 numpy; refuses a conversion that would change a value."""
    t = t.detach().cpu()
    if t.dtype != torch.float32:
        if not t.is_floating_point() or not torch.equal(t.float().to(t.dtype), t):
            raise ValueError(f"{what} is {t.dtype} and does not convert exactly to float32, which the store holds")
        t = t.float()
    return t.contiguous().numpy()


def checked_arrays(vector: SteeringVector, case: str) -> dict[str, np.ndarray]:
    """``vector``'s tensors as float32 arrays (views where they are float32 already). Raises ``ValueError``
    naming ``case`` for NaN/inf (a limit: NaN or < 0) or a dtype that does not convert exactly."""
    out = {}
    for name, t in tensors(vector).items():
        a = float32(t, f"case {case!r}: {name}")
        bad = (np.isnan(a).any() or (a < 0).any()) if name == "gate_limit" else not np.isfinite(a).all()
        if bad:
            rule = "NaN or a negative value" if name == "gate_limit" else "NaN or inf"
            raise ValueError(f"case {case!r}: {name} contains {rule}; such a vector cannot be stored")
        out[name] = a
    return out


@dataclass(frozen=True)
class Packed:
    """One person packed: the recipe (canonical JSON) and their own floats, in recipe order."""

    recipe: str
    own: np.ndarray  # float32 [n]


class Packer:
    """Packs vectors of one shape, sharing every unit seen twice; ``shared``: the hashes already shared."""

    def __init__(self, shape: tuple[int, int, int], shared: Iterable[str]) -> None:
        self.shape = shape
        self.known = set(shared)  # hashes stored (or about to be) as shared
        self.new: dict[str, np.ndarray] = {}  # shared units not yet written
        self._seen: dict[str, None] = {}

    def pack(self, arrays: dict[str, np.ndarray], positions: str) -> Packed:
        """Pack one person's :func:`checked_arrays` (``positions``: the vector's position rule)."""
        runs: dict[str, list] = {}
        own: list[np.ndarray] = []
        for name, a in arrays.items():
            runs[name] = self._runs(a.reshape(unit_shape(name, self.shape)), own)
        recipe = json.dumps({"positions": positions, "tensors": runs}, sort_keys=True, separators=(",", ":"))
        flat = np.concatenate(own) if own else np.zeros(0, np.float32)
        return Packed(recipe, flat)

    def _runs(self, rows: np.ndarray, own: list[np.ndarray]) -> list:
        """Runs ``["f", count, bits]``, ``["s", [hash, ...]]``, ``["o", count]`` covering every unit in order."""
        bits = rows.view(np.int32)
        fill = (bits == bits[:, :1]).all(1)
        kind = np.where(fill, 0, 1)  # 0 fill, 1 own, 2 shared
        hashes: dict[int, str] = {}
        for u in np.flatnonzero(~fill).tolist():
            h = digest(rows[u])
            if self._share(h, rows[u]):
                kind[u], hashes[u] = 2, h
        first = bits[:, 0]
        change = np.ones(len(rows), bool)
        change[1:] = (kind[1:] != kind[:-1]) | ((kind[1:] == 0) & (first[1:] != first[:-1]))
        starts = np.flatnonzero(change).tolist()
        out = []
        for a, b in zip(starts, [*starts[1:], len(rows)], strict=True):
            if kind[a] == 0:
                out.append(["f", b - a, int(first[a])])
            elif kind[a] == 2:
                out.append(["s", [hashes[u] for u in range(a, b)]])
            else:
                out.append(["o", b - a])
                own.append(rows[a:b].reshape(-1))
        return out

    def _share(self, h: str, unit: np.ndarray) -> bool:
        if h in self.known:
            return True
        if h in self._seen:  # the second time: from now on it is shared
            self.known.add(h)
            self.new[h] = unit.copy()
            return True
        if len(self._seen) >= SEEN_LIMIT:
            self._seen.clear()
        self._seen[h] = None
        return False

    def take_new(self) -> dict[str, np.ndarray]:
        """The shared units found since the last call (the store writes them before the shard that uses them)."""
        new, self.new = self.new, {}
        return new


class Recipe:
    """A recipe compiled to copy operations: ``build(own)`` gives the tensors of one person."""

    def __init__(self, text: str, shape: tuple[int, int, int], shared: Callable[[str], np.ndarray]) -> None:
        spec = json.loads(text)
        self.positions: str = spec["positions"]
        self.names = [n for n in TENSORS if n in spec["tensors"]]
        # (tensor, start, stop, what) in the flat tensor: a fill value, a shared unit, an offset into own floats
        self.fills: list[tuple[str, int, int, np.float32]] = []
        self.shared: list[tuple[str, int, int, np.ndarray]] = []
        self.own: list[tuple[str, int, int, int]] = []
        self.size = 0
        for name in self.names:
            units, size = unit_shape(name, shape)
            u = 0
            for run in spec["tensors"][name]:
                if run[0] == "f":
                    value = np.array([run[2]], np.int32).view(np.float32)[0]
                    self.fills.append((name, u * size, (u + run[1]) * size, value))
                    u += run[1]
                elif run[0] == "s":
                    for h in run[1]:
                        self.shared.append((name, u * size, (u + 1) * size, shared(h)))
                        u += 1
                else:
                    n = run[1] * size
                    self.own.append((name, u * size, u * size + n, self.size))
                    self.size += n
                    u += run[1]
            if u != units:
                raise ValueError(f"recipe covers {u} units of {name}, expected {units}")
        self.shape = shape

    def build(self, own: np.ndarray) -> dict[str, torch.Tensor]:
        """``{tensor name: float32 tensor}`` from this person's ``own`` floats (``[self.size]``)."""
        if own.size != self.size:
            raise ValueError(f"{own.size} own floats, the recipe needs {self.size}")
        n_layers, n_heads, head_dim = self.shape
        flat = {n: np.empty(n_layers * n_heads * (head_dim if n in ("offsets", "gate_weights") else 1), np.float32)
                for n in self.names}
        for name, a, b, value in self.fills:
            flat[name][a:b] = value
        for name, a, b, unit in self.shared:
            flat[name][a:b] = unit
        for name, a, b, at in self.own:
            flat[name][a:b] = own[at : at + b - a]
        return {n: torch.from_numpy(t).view(n_layers, n_heads, -1) if n in ("offsets", "gate_weights")
                else torch.from_numpy(t).view(n_layers, n_heads) for n, t in flat.items()}
