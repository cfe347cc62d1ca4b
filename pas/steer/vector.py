"""The steering vector (stage 6): a frozen dataclass, saved as safetensors with checked metadata.

Two kinds:

- ``constant``: each selected head ``h`` adds a fixed offset ``v_h`` to its output (PAS);
- ``gated``: the offset scales with what the head itself computes,
  ``delta_h(x) = (w_h . x_h + b_h) * v_h``, so the push follows the content of each
  statement (a per-person readout of the head, turned into a push toward an answer).

Apply by hook (``with vector.apply(model): ...``); a constant vector can also be folded
exactly into the attention output projections' bias (``vector.fold(model)`` ...
``.unfold()``). Hook mode can be gated to positions ``>= start`` or to the last position
of each forward (``last_only``); fold mode acts on every position, like ungated hooks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pas.core.arch import ModelLayout, layout, o_proj_modules, o_proj_weight
from pas.steer.hooks import SteeringHandle, add_gated, add_offsets

FORMAT_VERSION = 3  # 2: gated kind (gate_weights, gate_bias); 3: optional gate_limit. Versions 1, 2 still load
READABLE_VERSIONS = (1, 2, 3)
KINDS = ("constant", "gated")
_TENSORS = ("offsets", "gate_weights", "gate_bias", "gate_limit")


class SteeringFileError(ValueError):
    """A steering-vector file that cannot be used: unreadable, corrupt, or not ours."""


class ModelMismatchError(ValueError):
    """A steering vector applied to a model it was not made for."""


def _pas_version() -> str:
    from pas import __version__

    return __version__


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Per-(layer, head) offsets ``[n_layers, n_heads, head_dim]`` for one model, with provenance.

    ``kind="gated"`` adds ``gate_weights [n_layers, n_heads, head_dim]`` and ``gate_bias
    [n_layers, n_heads]``: head ``h`` then adds ``(gate_weights_h . x_h + gate_bias_h) * offsets_h``.
    An optional ``gate_limit [n_layers, n_heads]`` (>= 0, ``inf`` = none) clamps each gate to
    ``[-limit, limit]``: set to the range the gate takes on the questionnaire items it was fitted on,
    it changes nothing there and stops the readout extrapolating on other text (chat).

    ``positions`` is how the offsets were learned and are evaluated on questionnaires:
    ``"last"`` (the answer position only) or ``"all"``. Provenance (``subject``, ``item_hash``
    of the known items, the ``config`` it was fitted with) is stored in the file; how the fit
    went is not (see :class:`pas.fit.align.FitReport`).
    """

    offsets: torch.Tensor
    model_name: str
    model_type: str
    config_fingerprint: str
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    heads: tuple[tuple[int, int], ...] = ()
    probe_accuracies: tuple[float, ...] = ()
    sigmas: tuple[float, ...] = ()
    alpha: float | None = None
    positions: str = "last"
    subject: str | None = None
    item_hash: str | None = None
    config: dict = field(default_factory=dict)
    derived: str | None = None  # how arithmetic made this vector from saved ones ("scaled by 0.3", ...)
    weights_sample: tuple[float, ...] = ()  # see pas.core.models.weights_sample; () = not recorded (older files)
    kind: str = "constant"
    gate_weights: torch.Tensor | None = None
    gate_bias: torch.Tensor | None = None
    gate_limit: torch.Tensor | None = None
    pas_version: str = field(default_factory=_pas_version)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        shape = (self.n_layers, self.n_heads, self.head_dim)
        if tuple(self.offsets.shape) != shape:
            raise ValueError(f"offsets have shape {tuple(self.offsets.shape)}, expected {shape}")
        if not torch.isfinite(self.offsets).all():
            raise ValueError("steering offsets contain NaN or inf")
        if self.positions not in ("last", "all"):
            raise ValueError(f"positions must be 'last' or 'all', not {self.positions!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        gated = self.kind == "gated"
        for name, tensor, want in (("gate_weights", self.gate_weights, shape),
                                   ("gate_bias", self.gate_bias, shape[:2])):
            if (tensor is not None) != gated:
                raise ValueError(f"{name} is {'missing' if gated else 'given'} for a {self.kind} vector")
            if tensor is not None:
                if tuple(tensor.shape) != want:
                    raise ValueError(f"{name} have shape {tuple(tensor.shape)}, expected {want}")
                if not torch.isfinite(tensor).all():
                    raise ValueError(f"steering {name} contain NaN or inf")
        if self.gate_limit is not None:
            if not gated:
                raise ValueError(f"gate_limit is given for a {self.kind} vector")
            if tuple(self.gate_limit.shape) != shape[:2]:
                raise ValueError(f"gate_limit have shape {tuple(self.gate_limit.shape)}, expected {shape[:2]}")
            if bool(torch.isnan(self.gate_limit).any()) or bool((self.gate_limit < 0).any()):
                raise ValueError("steering gate_limit must be >= 0 (inf = unlimited), without NaN")

    # ------------------------------------------------------------ building

    @classmethod
    def for_model(cls, model, offsets: torch.Tensor, **meta) -> SteeringVector:
        """A vector whose shape facts come from ``model``."""
        from pas.core.models import model_name, weights_sample

        lay = layout(model)
        meta.setdefault("weights_sample", weights_sample(model))
        for name, shape in (("gate_weights", (lay.n_layers, lay.n_heads, lay.head_dim)),
                            ("gate_bias", (lay.n_layers, lay.n_heads)), ("gate_limit", (lay.n_layers, lay.n_heads))):
            if meta.get(name) is not None:
                meta[name] = meta[name].detach().float().cpu().reshape(shape).contiguous()
        return cls(
            offsets=offsets.detach().float().cpu().reshape(lay.n_layers, lay.n_heads, lay.head_dim).contiguous(),
            model_name=model_name(model), model_type=lay.model_type, config_fingerprint=lay.fingerprint,
            n_layers=lay.n_layers, n_heads=lay.n_heads, head_dim=lay.head_dim, hidden_size=lay.hidden_size, **meta,
        )

    # ------------------------------------------------------------ arithmetic

    def _with_offsets(self, offsets: torch.Tensor, how: str) -> SteeringVector:
        derived = how if self.derived is None else f"{how} of ({self.derived})"
        return dataclasses.replace(self, offsets=offsets, alpha=None, derived=derived)

    def __mul__(self, k: float) -> SteeringVector:
        """Scaled steering. A gated vector scales its gates and keeps its pushes (the same output), so
        that scaled vectors still add where they push alike (see :meth:`_gated_sum`)."""
        k, how = float(k), f"scaled by {float(k)}"
        if self.kind == "gated":
            limit = self.gate_limit
            if limit is not None:  # inf stays inf (inf * 0 would be NaN)
                limit = torch.where(torch.isinf(limit), limit, limit * abs(k))
            return dataclasses.replace(self._with_offsets(self.offsets, how), gate_weights=self.gate_weights * k,
                                       gate_bias=self.gate_bias * k, gate_limit=limit)
        return self._with_offsets(self.offsets * k, how)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        mismatch = self._mismatch(other.model_type, other.config_fingerprint, other.n_layers, other.n_heads,
                                  other.head_dim)
        if mismatch:
            raise ModelMismatchError(f"cannot add steering vectors of different models: {mismatch}")
        from pas.core.models import same_weights

        if self.weights_sample and other.weights_sample and not same_weights(self.weights_sample, other.weights_sample):
            raise ModelMismatchError("cannot add steering vectors made on different weights of the same architecture")
        heads = tuple(dict.fromkeys(self.heads + other.heads))
        how = f"sum of {self.subject} and {other.subject}"
        if self.kind == other.kind == "constant":
            summed = self._with_offsets(self.offsets + other.offsets, how)
        else:
            summed = self._gated_sum(other, how)
        return dataclasses.replace(summed, heads=heads, probe_accuracies=(), sigmas=(), subject=None)

    def as_gated(self) -> SteeringVector:
        """The same steering as a gated vector (a constant offset is a gate with ``w = 0, b = 1``)."""
        if self.kind == "gated":
            return self
        return dataclasses.replace(self, kind="gated", gate_weights=torch.zeros_like(self.offsets),
                                   gate_bias=self.steered_heads().float())

    def steered_heads(self) -> torch.Tensor:
        """``[n_layers, n_heads]``: True where the head's offset is not zero."""
        return self.offsets.abs().sum(-1) > 0

    @property
    def first_layer(self) -> int:
        """The lowest layer this vector changes (0 when it changes none): layers below it run as unsteered."""
        layers = self.steered_heads().any(-1).nonzero()
        return int(layers[0]) if len(layers) else 0

    def _gated_sum(self, other: SteeringVector, how: str) -> SteeringVector:
        """Sum where at least one side is gated.

        ``(w1.x + b1) v1 + (w2.x + b2) v2`` is one gated offset on a head only when the pushes are
        parallel, ``v2 = c v1``: then it is ``((w1 + c w2).x + b1 + c b2) v1``. Heads steered by one
        side keep theirs; a head both steer with pushes that are not parallel is refused.
        """
        a, b = self.as_gated(), other.as_gated()
        shared = a.steered_heads() & b.steered_heads()
        ratio = torch.zeros(a.gate_bias.shape)  # c per shared head
        bad = []
        for layer, h in shared.nonzero().tolist():
            v1, v2 = a.offsets[layer, h].double(), b.offsets[layer, h].double()
            c = float(v1 @ v2 / (v1 @ v1))
            if float((v2 - c * v1).norm()) > 1e-5 * float(v2.norm()):
                bad.append((layer, h))
            ratio[layer, h] = c
        if bad:
            raise ValueError(f"cannot add gated vectors that push the same heads {bad[:5]} (layer, head) in "
                             f"different directions: the sum of two gated offsets on a head is a gated offset only "
                             f"when their pushes are parallel. Apply them to different heads, or use one at a time")
        own = ~shared
        gate_weights = a.gate_weights + torch.where(shared[..., None], ratio[..., None] * b.gate_weights, b.gate_weights)
        gate_bias = a.gate_bias + torch.where(shared, ratio * b.gate_bias, b.gate_bias)
        offsets = a.offsets + b.offsets * own[..., None]
        limit = None
        if a.gate_limit is not None or b.gate_limit is not None:  # exact wherever neither gate reaches its limit
            la, lb = a.limits(), b.limits()
            limit = torch.where(shared, la + ratio.abs() * lb, torch.where(b.steered_heads(), lb, la))
        summed = a._with_offsets(offsets, how)
        return dataclasses.replace(summed, gate_weights=gate_weights, gate_bias=gate_bias, gate_limit=limit)

    def limits(self) -> torch.Tensor:
        """``[n_layers, n_heads]`` gate limits (``inf`` where none)."""
        if self.gate_limit is not None:
            return self.gate_limit
        return torch.full((self.n_layers, self.n_heads), float("inf"))

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self + (-other)

    # ------------------------------------------------------------ compatibility

    def _mismatch(self, model_type, fingerprint, n_layers, n_heads, head_dim) -> str:
        diffs = []
        for name, mine, theirs in (("architecture", self.model_type, model_type), ("layers", self.n_layers, n_layers),
                                   ("heads", self.n_heads, n_heads), ("head_dim", self.head_dim, head_dim),
                                   ("config fingerprint", self.config_fingerprint, fingerprint)):
            if mine != theirs:
                diffs.append(f"{name}: vector {mine!r} vs model {theirs!r}")
        return "; ".join(diffs)

    def check_model(self, model) -> ModelLayout:
        """Raise :class:`ModelMismatchError` naming every difference if this vector was made for another model.

        Shapes and config must match, and so must the weights (a fixed sample of them): a vector
        learned on SmolLM2 means nothing on a random model of the same shape. For a fine-tuned
        variant of the vector's model, say so explicitly with :meth:`for_weights_of`.
        """
        from pas.core.models import same_weights, weights_digest, weights_sample

        lay = layout(model)
        mismatch = self._mismatch(lay.model_type, lay.fingerprint, lay.n_layers, lay.n_heads, lay.head_dim)
        if mismatch:
            raise ModelMismatchError(f"steering vector for {self.model_name!r} does not fit this model: {mismatch}")
        if self.weights_sample:
            theirs = weights_sample(model)
            if not same_weights(self.weights_sample, theirs):
                raise ModelMismatchError(
                    f"steering vector for {self.model_name!r} was made on other weights: weights fingerprint vector "
                    f"{weights_digest(self.weights_sample)} vs model {weights_digest(theirs)} (same config). If this "
                    f"model is a fine-tuned variant you mean to steer, use vector.for_weights_of(model) "
                    f"(CLI: --allow-other-weights)")
        return lay

    def for_weights_of(self, model) -> SteeringVector:
        """This vector, accepted for ``model``'s weights (a fine-tuned variant of the same architecture)."""
        from pas.core.models import weights_sample

        lay = layout(model)
        mismatch = self._mismatch(lay.model_type, lay.fingerprint, lay.n_layers, lay.n_heads, lay.head_dim)
        if mismatch:
            raise ModelMismatchError(f"steering vector for {self.model_name!r} does not fit this model: {mismatch}")
        return dataclasses.replace(self, weights_sample=weights_sample(model))

    # ------------------------------------------------------------ applying

    def flat_offsets(self, device=None) -> torch.Tensor:
        """``[n_layers, n_heads * head_dim]`` as the hooks take it."""
        return self.offsets.reshape(self.n_layers, -1).to(device)

    def apply(self, model, *, start: int | None = None, last_only: bool = False) -> SteeringHandle:
        """Hook the offsets into ``model`` (mutates it until ``remove()``); usable as a context manager."""
        self.check_model(model)
        if self.kind == "gated":
            w, b, v, lim = (t.to(model.dtype) for t in self.gated_tables(model.device))
            return add_gated(model, w, b, v, lim, start=start, last_only=last_only)
        return add_offsets(model, self.flat_offsets(model.device), start=start, last_only=last_only)

    def gated_tables(self, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(weights [L, H*D], bias [L, H], offsets [L, H*D], limit [L, H])`` as :func:`pas.steer.hooks.add_gated`
        takes them."""
        g = self.as_gated()
        return (g.gate_weights.reshape(self.n_layers, -1).to(device), g.gate_bias.to(device),
                g.flat_offsets(device), g.limits().to(device))

    def fold(self, model) -> FoldedSteering:
        """Add ``W_o @ delta`` (computed in fp32) to each output projection's bias; ``.unfold()`` restores it exactly.

        Mutates the model: a projection without a bias gets one. A gated vector cannot be
        folded (its offset depends on the activation); that raises a ValueError.
        """
        if self.kind == "gated":
            raise ValueError("a gated steering vector cannot be folded into a bias: its offset (w.x + b) v changes "
                             "with each head's activation, and a bias is constant. Use vector.apply(model) "
                             "(hook mode), or pas.score.many.score_many / generate_many for many people at once")
        self.check_model(model)
        return FoldedSteering.fold(model, self)

    # ------------------------------------------------------------ files

    def metadata(self) -> dict:
        meta = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _TENSORS}
        meta["heads"] = [list(h) for h in self.heads]
        return meta

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write safetensors (offsets + JSON metadata) atomically; refuses to replace a file unless ``overwrite``.

        A failed write leaves nothing behind (no temporary file, the old file untouched).
        """
        path = check_writable(path, overwrite=overwrite)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tensors = {n: getattr(self, n).contiguous() for n in _TENSORS if getattr(self, n) is not None}
            save_file(tensors, tmp, metadata={"pas": json.dumps(self.metadata())})
            os.replace(tmp, path)
        except (OSError, SafetensorError) as e:
            tmp.unlink(missing_ok=True)
            raise SteeringFileError(f"cannot write steering vector to {path}: {e}") from e
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SteeringVector:
        """Read and validate a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise SteeringFileError(f"{path}: no such steering-vector file")
        try:
            tensors = load_file(path)
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                raw = (f.metadata() or {}).get("pas")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise SteeringFileError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
        if raw is None or "offsets" not in tensors:
            raise SteeringFileError(f"{path}: not a pas steering vector (no 'pas' metadata or 'offsets' tensor)")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SteeringFileError(f"{path}: corrupt metadata: {e}") from e
        if meta.get("format_version") not in READABLE_VERSIONS:
            raise SteeringFileError(f"{path}: format version {meta.get('format_version')!r}, this pas reads "
                                    f"{list(READABLE_VERSIONS)}")
        meta["format_version"] = FORMAT_VERSION  # read as the current format (version 1 = constant, no gate tensors)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _TENSORS}
        names = set(fields)
        required = {n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - meta.keys())
        if missing:
            raise SteeringFileError(f"{path}: metadata lacks {missing}")
        meta = {k: meta[k] for k in names if k in meta}  # older files: optional fields absent, "extra" ignored
        if "heads" in meta:
            meta["heads"] = tuple(tuple(h) for h in meta["heads"])
        for key in ("probe_accuracies", "sigmas", "weights_sample"):
            if key in meta:
                meta[key] = tuple(meta[key])
        extra = set(tensors) - set(_TENSORS)
        if extra:
            raise SteeringFileError(f"{path}: unexpected tensors {sorted(extra)}")
        gates = {n: tensors[n].float() for n in _TENSORS[1:] if n in tensors}
        try:
            return cls(offsets=tensors["offsets"].float(), **gates, **meta)
        except (TypeError, ValueError) as e:
            raise SteeringFileError(f"{path}: invalid steering vector: {e}") from e

    def __repr__(self) -> str:
        norm = float(self.offsets.norm())
        return (f"SteeringVector(model={self.model_name!r}, kind={self.kind!r}, subject={self.subject!r}, "
                f"heads={len(self.heads)}, alpha={self.alpha}, positions={self.positions!r}, norm={norm:.3g})")


@dataclass
class FoldedSteering:
    """A vector folded into output-projection biases; ``unfold()`` puts the originals back bit for bit."""

    model: torch.nn.Module
    saved: list[tuple[torch.nn.Module, torch.Tensor | None]]

    @classmethod
    def fold(cls, model, vector: SteeringVector) -> FoldedSteering:
        lay = layout(model)
        saved = []
        with torch.no_grad():
            for layer, proj in enumerate(o_proj_modules(model)):
                delta = vector.offsets[layer].reshape(-1).to(proj.weight.device, torch.float32)
                if not bool(delta.any()):
                    continue
                shift = o_proj_weight(proj, lay.conv1d).float() @ delta  # [out]
                original = None if proj.bias is None else proj.bias.detach().clone()
                saved.append((proj, original))
                base = torch.zeros_like(shift) if original is None else original.float()
                proj.bias = torch.nn.Parameter((base + shift).to(proj.weight.dtype), requires_grad=False)
        return cls(model, saved)

    def unfold(self) -> None:
        with torch.no_grad():
            for proj, original in self.saved:
                if original is None:
                    proj.bias = None
                else:
                    proj.bias = torch.nn.Parameter(original, requires_grad=False)
        self.saved.clear()

    def __enter__(self) -> FoldedSteering:
        return self

    def __exit__(self, *exc) -> None:
        self.unfold()


PHASES = ("prompt", "answer", "generate", "reply")


@dataclass(frozen=True)
class Gate:
    """Which positions of a forward call a vector steers: none, all, ``>= start``, or the last only."""

    steer: bool
    start: int | None = None
    last_only: bool = False


def gate(positions: str, phase: str, prompt_len: int | None = None) -> Gate:
    """The one rule for how a vector of kind ``positions`` ("last"/"all") is applied in each ``phase``.

    - ``prompt``: the forward over a questionnaire prompt *before* its answer token (the
      body whose KV cache scoring reuses): "all" steers it, "last" does not;
    - ``answer``: the forward over the answer token alone: both steer it;
    - ``generate``: ``model.generate`` on a chat prompt: "last" steers every position that
      produces a token (the prompt's last, then each new token), "all" every position;
    - ``reply``: prompt + reply in one forward (teacher forcing, e.g. perplexity): the same
      positions as ``generate``, i.e. ``>= prompt_len - 1`` for "last".
    """
    if positions not in ("last", "all") or phase not in PHASES:
        raise ValueError(f"no rule for positions={positions!r} in phase {phase!r}")
    if positions == "all":
        return Gate(True)
    if phase == "prompt":
        return Gate(False)
    if phase == "generate":
        return Gate(True, last_only=True)
    if phase == "reply":
        if prompt_len is None:
            raise ValueError("phase 'reply' needs prompt_len")
        return Gate(True, start=prompt_len - 1)
    return Gate(True)


def steer(model, vector: SteeringVector | None, phase: str, prompt_len: int | None = None):
    """Apply ``vector`` to ``model`` as :func:`gate` says for ``phase`` (a context manager; None = unsteered)."""
    from contextlib import nullcontext

    if vector is None:
        return nullcontext()
    g = gate(vector.positions, phase, prompt_len)
    return vector.apply(model, start=g.start, last_only=g.last_only) if g.steer else nullcontext()


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that a steering vector can be written to ``path`` (creating its folder); call it before long work.

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


def item_hash(ids) -> str:
    import hashlib

    return hashlib.sha256(",".join(map(str, sorted(ids))).encode()).hexdigest()[:16]

