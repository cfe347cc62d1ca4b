"""The steering-vector file: safetensors tensors plus one JSON metadata entry, checked on load.

Format 4 stores ``offsets`` (and for a gated vector ``gate_weights``, ``gate_bias``, optionally
``gate_limit``) and the metadata ``{"format_version", "positions", "signature": {...},
"provenance": {...}}``. Files of formats 1-3 (flat metadata; version 1 has no kind; the fit facts
``alpha``, ``sigmas``, ``probe_accuracies`` and ``heads`` they carried are dropped) still load.
Writes are atomic and refuse to replace a file unless asked; files get the user's umask.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pas.steer.gates import Gates
from pas.steer.signature import ModelSignature

if TYPE_CHECKING:
    from pas.steer.vector import Provenance, SteeringVector

FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
TENSORS = ("offsets", "gate_weights", "gate_bias", "gate_limit")


class SteeringFileError(ValueError):
    """A steering-vector file that cannot be used: unreadable, corrupt, or not ours."""


def metadata(vector: SteeringVector) -> dict[str, Any]:
    """The JSON metadata of ``vector``'s file (format 4)."""
    return {"format_version": FORMAT_VERSION, "positions": vector.positions,
            "signature": dataclasses.asdict(vector.signature), "provenance": dataclasses.asdict(vector.provenance)}


def tensors(vector: SteeringVector) -> dict[str, torch.Tensor]:
    """The tensors of ``vector``'s file."""
    out = {"offsets": vector.offsets}
    if vector.gates is not None:
        out.update(gate_weights=vector.gates.weights, gate_bias=vector.gates.bias)
        if vector.gates.limit is not None:
            out["gate_limit"] = vector.gates.limit
    return {k: t.contiguous() for k, t in out.items()}


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that a file can be written to ``path`` (creating its folder); call it before long work.

    Raises :class:`FileExistsError` for an existing file without ``overwrite`` and
    :class:`SteeringFileError` for a directory, a parent that is a file, or a folder that
    cannot be written; leaves no file behind.
    """
    path = Path(path)
    if path.is_dir():
        raise SteeringFileError(f"{path} is a directory; give a file path such as {path / 'vector.safetensors'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise SteeringFileError(f"cannot write {path}: {blocker} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise SteeringFileError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(vector: SteeringVector, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``vector`` atomically; refuses to replace a file unless ``overwrite``. A failed write leaves
    nothing behind (no temporary file, the old file untouched). The file's mode follows the umask."""
    path = check_writable(path, overwrite=overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors(vector), tmp, metadata={"pas": json.dumps(metadata(vector))})
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        raise SteeringFileError(f"cannot write steering vector to {path}: {e}") from e
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if path.is_dir():
        raise SteeringFileError(f"{path} is a directory, not a steering-vector file (.safetensors)")
    if not path.is_file():
        raise SteeringFileError(f"{path}: no such steering-vector file")
    try:
        found = load_file(path)
        with safe_open(path, "pt") as f:
            raw = (f.metadata() or {}).get("pas")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SteeringFileError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    if raw is None or "offsets" not in found:
        raise SteeringFileError(f"{path}: not a pas steering vector (no 'pas' metadata or 'offsets' tensor)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SteeringFileError(f"{path}: corrupt metadata: {e}") from e
    if not isinstance(meta, dict) or meta.get("format_version") not in READABLE_VERSIONS:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise SteeringFileError(f"{path}: format version {version!r}, this pas reads {list(READABLE_VERSIONS)}")
    extra = set(found) - set(TENSORS)
    if extra:
        raise SteeringFileError(f"{path}: unexpected tensors {sorted(extra)}")
    return found, meta


def _from_flat(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(signature, provenance)`` fields of a format 1-3 file's flat metadata."""
    sig = {f.name: meta[f.name] for f in dataclasses.fields(ModelSignature) if f.name in meta}
    prov = {k: meta[k] for k in ("subject", "item_hash", "config", "derived", "pas_version") if meta.get(k) is not None}
    config = meta.get("config") or {}
    if meta.get("kind") == "gated" and "gate_layer" in config:  # what fitted it, as format 4 names it
        prov["method"] = "pas-gated"
    elif meta.get("kind", "constant") == "constant" and "learn" in config:
        prov["method"] = "pas-learned" if config["learn"] else "pas"
    return sig, prov


def _required(cls: type, given: dict[str, Any]) -> list[str]:
    need = [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return sorted(set(need) - set(given))


def load(path: str | os.PathLike[str]) -> SteeringVector:
    """Read and validate a steering-vector file of any readable format."""
    from pas.steer.vector import Provenance, SteeringVector

    path = Path(path)
    found, meta = _read(path)
    if meta["format_version"] < 4:
        sig, prov = _from_flat(meta)
    else:
        sig, prov = meta.get("signature") or {}, meta.get("provenance") or {}
    missing = _required(ModelSignature, sig)
    if missing:
        raise SteeringFileError(f"{path}: metadata lacks {missing}")
    try:
        signature = ModelSignature.from_json(sig)
        provenance = _provenance(Provenance, prov)
        gates = None
        if "gate_weights" in found or "gate_bias" in found:
            if "gate_weights" not in found or "gate_bias" not in found:
                raise ValueError("a gated vector needs both gate_weights and gate_bias")
            limit = found["gate_limit"].float() if "gate_limit" in found else None
            gates = Gates(found["gate_weights"].float(), found["gate_bias"].float(), limit)
        elif "gate_limit" in found:
            raise ValueError("gate_limit is given for a constant vector")
        return SteeringVector(found["offsets"].float(), signature, gates=gates,
                              positions=meta.get("positions", "last"), provenance=provenance)
    except (TypeError, ValueError) as e:
        raise SteeringFileError(f"{path}: invalid steering vector: {e}") from e


def _provenance(cls: type[Provenance], given: dict[str, Any]) -> Provenance:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in given.items() if k in known})
