"""llama.cpp control vectors: a pas vector exported to one, and one (llama.cpp's, repeng's) read as a pas vector.

The format (llama.cpp ``common_control_vector_load``, repeng's ``export_gguf``): a GGUF file with
``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model's architecture),
``controlvector.layer_count`` and one F32 tensor ``direction.N`` of length ``n_embd`` per steered layer.
llama.cpp adds ``direction.N`` to the output of block N (after its feed-forward residual add) at every
position; block 0 cannot be targeted.

A pas offset on layer ``l``'s head outputs enters the residual stream as ``W_o delta`` right after that
layer's attention (:func:`pas.steer.fold.output_shift`). The export writes exactly that shift, so it is exact
in *what* is added and approximate in *where*: after the whole block (:data:`MAPPINGS` ``"output"``: block
``l``'s MLP no longer sees it) or at block ``l``'s input (``"input"``: its attention sees it too), and at every
position, where a ``"last"`` vector steers only the answer position. The file says so in ``pas.placement``;
``docs/export.md`` measures both mappings. A gated vector has no constant equivalent and is refused.

Import is the inverse: each ``direction.N`` becomes per-head offsets on the layer the mapping names whose
``W_o delta`` is that direction (least squares; exact where ``W_o`` has full rank, as in the Llama family), a
constant pas vector with ``positions="all"``. Export then import gives back the same offsets.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pas.core.arch import layout
from pas.steer.file import check_writable
from pas.steer.fold import offsets_for_shift, output_shift
from pas.steer.signature import ModelSignature
from pas.steer.vector import Provenance, SteeringVector

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ARCHITECTURE = "controlvector"
MAPPINGS = {"output": 0, "input": -1}  # control-vector layer = pas layer + this
FIRST_BLOCK = 1  # llama.cpp never steers block 0
DEFAULT_MAPPING = "output"  # chosen by measurement: docs/export.md
LLAMA_CPP_ARCH = {"mistral": "llama"}  # transformers model_type -> llama.cpp architecture, where they differ
PLACEMENT = {
    "output": "pas adds W_o.delta after block N's attention; here it is added after block N's MLP, at every position",
    "input": "pas adds W_o.delta after block N+1's attention; here it is added at block N+1's input, at every position",
}


class ControlVectorError(ValueError):
    """A control-vector file or vector that cannot be used: unreadable, not a control vector, or for another model."""


@dataclass(frozen=True)
class ControlVector:
    """Residual-stream offsets as llama.cpp takes them: ``directions[N]`` (``[n_embd]`` float32) is added to block
    ``N``'s output. ``metadata``: further string keys written to (or read from) the file."""

    directions: dict[int, np.ndarray]
    model_hint: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise ControlVectorError("a control vector needs at least one direction")
        widths = {v.shape for v in self.directions.values()}
        if len(widths) != 1 or len(next(iter(widths))) != 1:
            raise ControlVectorError(f"directions must be 1-D and of one length, got shapes {sorted(widths)}")
        if min(self.directions) < 1:
            raise ControlVectorError(f"direction.{min(self.directions)}: llama.cpp cannot steer block 0 or below; "
                                     f"directions start at 1")
        if not all(np.isfinite(v).all() for v in self.directions.values()):
            raise ControlVectorError("a direction contains NaN or inf")

    @property
    def width(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])

    def residual(self, n_layers: int) -> torch.Tensor:
        """``[n_layers, width]``: row N is ``directions[N]`` (zeros elsewhere), as
        :func:`pas.steer.hooks.add_block_outputs` applies it (what llama.cpp computes, in torch)."""
        if max(self.directions) >= n_layers:
            raise ControlVectorError(f"direction.{max(self.directions)} is past the model's {n_layers} layers")
        out = torch.zeros(n_layers, self.width)
        for n, v in self.directions.items():
            out[n] = torch.from_numpy(v)
        return out


def llama_cpp_arch(model_type: str) -> str:
    """The ``controlvector.model_hint`` of a transformers ``model_type`` (llama.cpp's architecture name)."""
    return LLAMA_CPP_ARCH.get(model_type, model_type)


def _mapping(mapping: str) -> int:
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {sorted(MAPPINGS)}, got {mapping!r}")
    return MAPPINGS[mapping]


def to_control_vector(vector: SteeringVector, model: PreTrainedModel, *, mapping: str = DEFAULT_MAPPING,
                      scale: float = 1.0) -> ControlVector:
    """``vector`` (constant) as a llama.cpp control vector for ``model``: each steered layer's ``W_o delta`` times
    ``scale``, on the layer ``mapping`` names; what would land below block 1 (which llama.cpp cannot steer: pas
    layer 0, or 1 with mapping ``"input"``) is added at block 1 instead, and ``pas.moved`` says so. A gated
    vector is refused with the reason and what can be exported instead."""
    if vector.gates is not None:
        raise ControlVectorError(
            "a gated vector cannot be a llama.cpp control vector: its push is scaled per statement by gates that "
            "read the model's own head outputs, and a control vector is one constant offset per layer. Export a "
            "constant vector instead: the same person's (pas align --kind constant, or a store of --kind "
            "constant). Trait poles, types, groups and personas are gated in pas, so they are refused too")
    vector.check_model(model)
    shift = _mapping(mapping)
    residual = output_shift(model, vector.offsets) * scale  # [L, hidden]
    steered = [layer for layer in range(residual.shape[0]) if bool(residual[layer].any())]
    if not steered:
        raise ControlVectorError("the vector steers no layer (all offsets are zero): nothing to export")
    directions: dict[int, np.ndarray] = {}
    moved = [layer for layer in steered if layer + shift < FIRST_BLOCK]
    for layer in steered:  # below block 1 (which llama.cpp cannot steer): added at block 1's output instead
        block = max(layer + shift, FIRST_BLOCK)
        directions[block] = directions.get(block, 0) + residual[layer].numpy().astype(np.float32)
    prov = vector.provenance
    meta = {"pas.mapping": mapping, "pas.placement": PLACEMENT[mapping], "pas.positions": vector.positions,
            "pas.scale": repr(float(scale)), "pas.model": vector.signature.model_name,
            "pas.provenance": json.dumps(dataclasses.asdict(prov), default=str)}
    if prov.subject is not None:
        meta["pas.subject"] = str(prov.subject)
    if moved:
        meta["pas.moved"] = (f"layer(s) {', '.join(map(str, moved))} map below block {FIRST_BLOCK}, which llama.cpp "
                             f"cannot steer; added at block {FIRST_BLOCK}'s output instead")
    return ControlVector(directions, llama_cpp_arch(vector.signature.model_type), meta)


def from_control_vector(cv: ControlVector, model: PreTrainedModel, *, mapping: str = DEFAULT_MAPPING,
                        source: str | None = None) -> SteeringVector:
    """``cv`` as a constant pas vector on ``model`` (``positions="all"``, as llama.cpp applies it): each direction
    becomes the per-head offsets whose ``W_o delta`` it is, on the layer ``mapping`` names (the inverse of
    :func:`to_control_vector`). Checked against the model: architecture, width, layer count."""
    lay = layout(model)
    hint = llama_cpp_arch(lay.model_type)
    if cv.model_hint != hint:
        raise ControlVectorError(f"the control vector is for {cv.model_hint!r} models, this model is {hint!r}; "
                                 f"use the model it was made for")
    if cv.width != lay.hidden_size:
        raise ControlVectorError(f"the control vector's directions have {cv.width} values, this model's width is "
                                 f"{lay.hidden_size}: it was made for another model")
    shift = _mapping(mapping)
    layers = {n: n - shift for n in cv.directions}
    if max(layers.values()) >= lay.n_layers:
        raise ControlVectorError(f"direction.{max(cv.directions)} maps to layer {max(layers.values())}, past this "
                                 f"model's {lay.n_layers} layers: it was made for another model")
    residual = torch.zeros(lay.n_layers, lay.hidden_size)
    for n, layer in layers.items():
        residual[layer] = torch.from_numpy(cv.directions[n])
    try:
        offsets = offsets_for_shift(model, residual)
    except ValueError as e:
        raise ControlVectorError(f"cannot express the control vector as pas head offsets: {e}") from e
    prov = Provenance(subject=cv.metadata.get("pas.subject"), method="llama.cpp-control-vector",
                      derived=f"imported from {source or 'a control vector'} (mapping {mapping!r}: "
                              f"{PLACEMENT[mapping]})")
    return SteeringVector(offsets, ModelSignature.of(model), positions="all", provenance=prov)


def write_control_vector(cv: ControlVector, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``cv`` as a GGUF control vector (atomic: a temporary file renamed into place; an existing file is
    replaced only with ``overwrite``). Returns the path."""
    from gguf import GGUFWriter

    out = check_writable(path, overwrite=overwrite)
    tmp = out.with_name(out.name + ".tmp")
    writer = GGUFWriter(str(tmp), ARCHITECTURE)
    writer.add_string(f"{ARCHITECTURE}.model_hint", cv.model_hint)
    writer.add_int32(f"{ARCHITECTURE}.layer_count", len(cv.directions))
    for key, value in sorted(cv.metadata.items()):
        writer.add_string(key, value)
    for n in sorted(cv.directions):
        writer.add_tensor(f"direction.{n}", np.ascontiguousarray(cv.directions[n], dtype=np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return out


def read_control_vector(path: str | os.PathLike[str]) -> ControlVector:
    """A GGUF control vector (llama.cpp's ``cvector-generator``, repeng, or :func:`write_control_vector`), checked:
    a clear :class:`ControlVectorError` for a missing, corrupt or foreign file."""
    from gguf import GGMLQuantizationType, GGUFReader

    where = Path(path)
    if not where.is_file():
        raise ControlVectorError(f"{where}: no such file")
    try:
        reader = GGUFReader(str(where))
    except Exception as e:  # the reader raises ValueError, struct errors, IndexError... on a damaged file
        raise ControlVectorError(f"{where}: not a readable GGUF file ({type(e).__name__}: {e})") from e
    fields = {name: _value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    arch = fields.get("general.architecture")
    if arch != ARCHITECTURE:
        raise ControlVectorError(f"{where}: general.architecture is {arch!r}, not {ARCHITECTURE!r}: a model or "
                                 f"another adapter, not a control vector")
    hint = fields.get(f"{ARCHITECTURE}.model_hint")
    if not isinstance(hint, str) or not hint:
        raise ControlVectorError(f"{where}: no {ARCHITECTURE}.model_hint (which model it is for)")
    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        layer = _direction_layer(t.name, where)
        if t.tensor_type != GGMLQuantizationType.F32:
            raise ControlVectorError(f"{where}: {t.name} is {t.tensor_type.name}, llama.cpp takes F32 only")
        values = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if values.size != int(np.prod(t.shape)) or len([d for d in t.shape if d != 1]) > 1:
            raise ControlVectorError(f"{where}: {t.name} has shape {tuple(int(d) for d in t.shape)}, expected 1-D")
        if layer in directions:
            raise ControlVectorError(f"{where}: {t.name} appears twice")
        directions[layer] = values.copy()
    if not directions:
        raise ControlVectorError(f"{where}: no direction.N tensors")
    meta = {k: str(v) for k, v in fields.items() if k.startswith("pas.")}
    try:
        return ControlVector(directions, hint, meta)
    except ControlVectorError as e:
        raise ControlVectorError(f"{where}: {e}") from e


def _direction_layer(name: str, where: Path) -> int:
    prefix, _, number = name.partition(".")
    if prefix != "direction" or not number.isdigit():
        raise ControlVectorError(f"{where}: unexpected tensor {name!r} (a control vector holds direction.N only)")
    return int(number)


def _value(f: Any) -> Any:
    """A GGUF field's value: a string decoded, a scalar as a number, an array as a list."""
    try:
        return f.contents()
    except Exception:  # an unusual type: keep its raw form, never fail on metadata we do not read
        return None
