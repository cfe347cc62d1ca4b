"""A population store's header (``store.json``): format, model signature and provenance, and its error class.

The header is written once, when the store is made; it names the people's source (and whether they
are synthetic), the model, the fitting config, the pas version and the creation time.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pas.core.version import __version__
from pas.steer.file import SteeringFileError
from pas.steer.signature import ModelSignature
from pas.steer.vector import Provenance

FORMAT = "pas-population-store"
FORMAT_VERSION = 1
HEADER, INDEX, SHARDS, SHARED, LOCK = "store.json", "index.safetensors", "shards", "shared", ".lock"
FIELDS = tuple(f.name for f in dataclasses.fields(Provenance) if f.name != "subject")  # interned per person
REBUILD = "rebuild the index from the shards with PopulationStore.rebuild_index(path)"


class StoreError(SteeringFileError):
    """A population store that cannot be used: missing, corrupt, truncated, or not ours."""


@dataclass(frozen=True)
class StoreProvenance:
    """Where a store's vectors came from. ``data``: the people's source (a path or dataset id);
    ``synthetic``: whether those people are synthetic (say so: every report that uses the store
    repeats it); ``model``: the model's name (default: the signature's); ``config``: the fitting
    settings; ``pas_version`` and ``created`` (UTC, ISO 8601) are filled in when the store is made."""

    data: str | None
    synthetic: bool
    config: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    pas_version: str = __version__
    created: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.synthetic, bool):
            raise ValueError(f"synthetic must be True or False, not {self.synthetic!r}")
        try:
            json.dumps(self.config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"the store's config must be JSON-serialisable: {e}") from e

    def stamped(self, signature: ModelSignature) -> StoreProvenance:
        """This provenance with the model name and creation time filled in."""
        return dataclasses.replace(self, model=self.model or signature.model_name,
                                   created=self.created or datetime.now(timezone.utc).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class Header:
    """``store.json``: the store's id (checked in every shard and the index), shard size, model and provenance."""

    store_id: str
    shard_size: int
    signature: ModelSignature
    provenance: StoreProvenance

    @classmethod
    def new(cls, signature: ModelSignature, provenance: StoreProvenance, shard_size: int) -> Header:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, not {shard_size}")
        return cls(uuid.uuid4().hex, shard_size, signature, provenance.stamped(signature))

    def text(self) -> str:
        """The ``store.json`` text."""
        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "store_id": self.store_id,
                           "shard_size": self.shard_size, "signature": dataclasses.asdict(self.signature),
                           "provenance": dataclasses.asdict(self.provenance)}, indent=1) + "\n"

    @classmethod
    def read(cls, root: Path) -> Header:
        """The header of the store in ``root``, checked."""
        path = root / HEADER
        if not path.is_file():
            what = "no such folder" if not root.exists() else "not a population store (no store.json)"
            raise StoreError(f"{root}: {what}; make one with PopulationStore.create(path, signature, provenance)")
        try:
            meta = json.loads(path.read_text())
            if meta.get("format") != FORMAT:
                raise StoreError(f"{path}: not a pas population store header (format {meta.get('format')!r})")
            if meta.get("format_version") != FORMAT_VERSION:
                raise StoreError(f"{path}: store format version {meta.get('format_version')!r}, this pas "
                                 f"(version {__version__}) reads {FORMAT_VERSION}; use the pas that wrote it")
            sig = meta["signature"]
            signature = ModelSignature.from_json(sig)
            return cls(str(meta["store_id"]), int(meta["shard_size"]), signature,
                       StoreProvenance(**meta["provenance"]))
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise StoreError(f"{path}: corrupt store header ({type(e).__name__}: {e}); it cannot be rebuilt "
                             f"from the shards, restore it from a copy") from e
