"""The steering vector: what is applied to a model, and nothing else.

Per-(layer, head) offsets ``[n_layers, n_heads, head_dim]`` added to each head's output (the input of
the attention output projection), optional :class:`~pas.steer.gates.Gates` that scale each head's
offset by a readout of that head (a *gated* vector: the push follows the content of each statement),
the positions it was learned for, the :class:`~pas.steer.signature.ModelSignature` of its model, and
a short :class:`Provenance`. How a fit went (strength, probe accuracies, traces) is never stored here:
see :class:`pas.fit.align.FitReport` and :class:`pas.space.persona.PersonaReport`.

Apply by hook (``with vector.apply(model): ...``); a constant vector can also be folded exactly into
the output projections' biases (``vector.fold(model)`` ... ``.unfold()``). The file format lives in
:mod:`pas.steer.file`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pas.core.arch import ModelLayout
from pas.core.items import ItemBank
from pas.core.version import __version__
from pas.steer import file
from pas.steer.file import SteeringFileError, check_writable  # noqa: F401  (re-exported: one import for users)
from pas.steer.fold import FoldedSteering
from pas.steer.gates import Gates, gated_sum
from pas.steer.hooks import SteeringHandle, add_gated, add_offsets
from pas.steer.position import POSITIONS
from pas.steer.signature import ModelMismatchError, ModelSignature  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

KINDS = ("constant", "gated")


class ItemBankMismatchError(ValueError):
    """A steering vector used with another item bank than the one it was fitted on."""


@dataclass(frozen=True)
class Provenance:
    """Where a vector came from. ``method``: what made it (``"pas"``, ``"pas-learned"``, ``"pas-gated"``,
    ``"pole"``, ``"type"``, ``"group"``, ``"persona"``...); ``config``: the settings it was made with;
    ``item_hash``: of the items it was fitted on; ``bank``: the fingerprint of the item bank they came from
    (:meth:`pas.core.data.ItemBank.fingerprint`); ``derived``: how arithmetic made it from saved vectors."""

    subject: str | None = None
    method: str | None = None
    item_hash: str | None = None
    bank: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    derived: str | None = None
    pas_version: str = __version__


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Offsets (and gates) for one model. ``kind`` is ``"gated"`` exactly when ``gates`` are given."""

    offsets: torch.Tensor
    signature: ModelSignature
    gates: Gates | None = None
    positions: str = "last"
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        shape = self.signature.shape
        if tuple(self.offsets.shape) != shape:
            raise ValueError(f"offsets have shape {tuple(self.offsets.shape)}, expected {shape}")
        if not torch.isfinite(self.offsets).all():
            raise ValueError("steering offsets contain NaN or inf")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be 'last' or 'all', not {self.positions!r}")
        if self.gates is not None and tuple(self.gates.weights.shape) != shape:
            raise ValueError(f"gate_weights have shape {tuple(self.gates.weights.shape)}, expected {shape}")

    @classmethod
    def for_model(cls, model: PreTrainedModel, offsets: torch.Tensor, *, gate_weights: torch.Tensor | None = None,
                  gate_bias: torch.Tensor | None = None, gate_limit: torch.Tensor | None = None,
                  positions: str = "last", provenance: Provenance | None = None,
                  signature: ModelSignature | None = None) -> SteeringVector:
        """A vector for ``model`` (its signature taken now unless given) from tensors of any shape that
        reshapes to ``[n_layers, n_heads, head_dim]`` (gate bias and limit: ``[n_layers, n_heads]``).
        Gate weights and bias make it gated (both or neither)."""
        signature = signature or ModelSignature.of(model)
        shape = signature.shape

        def own(t: torch.Tensor, s: tuple[int, ...]) -> torch.Tensor:
            return t.detach().float().cpu().reshape(s).contiguous()

        if (gate_weights is None) != (gate_bias is None) or (gate_limit is not None and gate_weights is None):
            raise ValueError("a gated vector needs gate_weights and gate_bias (gate_limit only with them)")
        gates = None if gate_weights is None or gate_bias is None else Gates(
            own(gate_weights, shape), own(gate_bias, shape[:2]),
            None if gate_limit is None else own(gate_limit, shape[:2]))
        return cls(own(offsets, shape), signature, gates, positions, provenance or Provenance())

    @property
    def kind(self) -> str:
        return "constant" if self.gates is None else "gated"

    @property
    def subject(self) -> str | None:
        return self.provenance.subject

    @property
    def heads(self) -> tuple[tuple[int, int], ...]:
        """The (layer, head) pairs this vector steers."""
        return tuple((int(a), int(b)) for a, b in self.steered_heads().nonzero().tolist())

    def steered_heads(self) -> torch.Tensor:
        """``[n_layers, n_heads]``: True where the head's offset is not zero."""
        return self.offsets.abs().sum(-1) > 0

    @property
    def first_layer(self) -> int:
        """The lowest layer this vector changes (0 when it changes none): layers below it run as unsteered."""
        layers = self.steered_heads().any(-1).nonzero()
        return int(layers[0]) if len(layers) else 0

    def relabel(self, **changes: Any) -> SteeringVector:
        """The same steering with other provenance fields (``subject=``, ``method=``, ``config=``...)."""
        return dataclasses.replace(self, provenance=dataclasses.replace(self.provenance, **changes))

    # ------------------------------------------------------------ arithmetic

    def _derived(self, offsets: torch.Tensor, gates: Gates | None, how: str) -> SteeringVector:
        derived = how if self.provenance.derived is None else f"{how} of ({self.provenance.derived})"
        return dataclasses.replace(self, offsets=offsets, gates=gates).relabel(derived=derived)

    def __mul__(self, k: float) -> SteeringVector:
        """Scaled steering. A gated vector scales its gates and keeps its pushes (the same output), so that
        scaled vectors still add where they push alike (see :func:`pas.steer.gates.gated_sum`)."""
        k = float(k)
        if self.gates is not None:
            return self._derived(self.offsets, self.gates.scaled(k), f"scaled by {k}")
        return self._derived(self.offsets * k, None, f"scaled by {k}")

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __add__(self, other: object) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        self.signature.check_addable(other.signature)
        how = f"sum of {self.subject} and {other.subject}"
        if self.gates is None and other.gates is None:
            summed = self._derived(self.offsets + other.offsets, None, how)
        else:
            mine, theirs = self.as_gated().gates, other.as_gated().gates
            assert mine is not None and theirs is not None  # as_gated() always has gates
            offsets, gates = gated_sum(self.offsets, mine, other.offsets, theirs)
            summed = self._derived(offsets, gates, how)
        return summed.relabel(subject=None, method=None)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self + (-other)

    def as_gated(self) -> SteeringVector:
        """The same steering as a gated vector (a constant offset is a gate with ``w = 0, b = 1``)."""
        return self if self.gates is not None else dataclasses.replace(self, gates=Gates.constant(self.offsets))

    # ------------------------------------------------------------ the model

    def check_model(self, model: PreTrainedModel) -> ModelLayout:
        """Raise :class:`ModelMismatchError` naming every difference if this vector was made for another model
        (shapes, config, or weights; for a fine-tuned variant say so with :meth:`for_weights_of`)."""
        return self.signature.check(model)

    def check_bank(self, bank: ItemBank, *, allow_other: bool = False) -> None:
        """Raise :class:`ItemBankMismatchError` if this vector was fitted on another item bank than ``bank``
        (with ``allow_other``, warn instead). Vectors that do not record their bank pass."""
        mine = self.provenance.bank
        if mine is None or mine == bank.fingerprint():
            return
        message = (f"steering vector for {self.subject!r} was fitted on another item bank (fingerprint {mine} vs "
                   f"{bank.fingerprint()} here): its offsets answer those statements, not these")
        if not allow_other:
            raise ItemBankMismatchError(f"{message}. Use the data dir it was made with, or pass "
                                        f"allow_other=True (CLI: --allow-other-items) to use it anyway")
        warnings.warn(message, stacklevel=2)

    def for_weights_of(self, model: PreTrainedModel) -> SteeringVector:
        """This vector, accepted for ``model``'s weights (a fine-tuned variant of the same architecture)."""
        return dataclasses.replace(self, signature=self.signature.for_weights_of(model))

    def flat_offsets(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[n_layers, n_heads * head_dim]`` as the hooks take it."""
        return self.offsets.reshape(self.offsets.shape[0], -1).to(device)

    def gated_tables(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
        """``(weights [L, H*D], bias [L, H], offsets [L, H*D], limit [L, H])`` as
        :func:`pas.steer.hooks.add_gated` takes them (a constant vector as its gated equivalent)."""
        gates = self.as_gated().gates
        assert gates is not None
        return (gates.weights.reshape(self.offsets.shape[0], -1).to(device), gates.bias.to(device),
                self.flat_offsets(device), gates.limits().to(device))

    def apply(self, model: PreTrainedModel, *, start: int | None = None, last_only: bool = False) -> SteeringHandle:
        """Hook the offsets into ``model`` (mutates it until ``remove()``); usable as a context manager."""
        self.check_model(model)
        if self.gates is not None:
            w, b, v, lim = (t.to(model.dtype) for t in self.gated_tables(model.device))
            return add_gated(model, w, b, v, lim, start=start, last_only=last_only)
        return add_offsets(model, self.flat_offsets(model.device), start=start, last_only=last_only)

    def fold(self, model: PreTrainedModel) -> FoldedSteering:
        """Add ``W_o @ delta`` (fp32) to each output projection's bias; ``.unfold()`` restores it exactly.

        Mutates the model. A gated vector cannot be folded (its offset depends on the activation)."""
        if self.gates is not None:
            raise ValueError("a gated steering vector cannot be folded into a bias: its offset (w.x + b) v changes "
                             "with each head's activation, and a bias is constant. Use vector.apply(model) "
                             "(hook mode), or pas.score.many.score_many or pas.steer.rows.generate_many for many "
                             "people at once")
        self.check_model(model)
        return FoldedSteering.fold(model, self.offsets)

    # ------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the file atomically (:func:`pas.steer.file.save`); refuses to replace one unless ``overwrite``."""
        return file.save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringVector:
        """Read and validate a file of any readable format (:func:`pas.steer.file.load`)."""
        return file.load(path)

    def __repr__(self) -> str:
        return (f"SteeringVector(model={self.signature.model_name!r}, kind={self.kind!r}, subject={self.subject!r}, "
                f"heads={len(self.heads)}, positions={self.positions!r}, norm={float(self.offsets.norm()):.3g})")


def item_hash(ids: Iterable[int]) -> str:
    """A short hash of a set of item ids: which items a vector was fitted on."""
    return hashlib.sha256(",".join(map(str, sorted(ids))).encode()).hexdigest()[:16]
