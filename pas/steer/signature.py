"""Which model a steering vector was made for, and the one check that it fits another.

A :class:`ModelSignature` holds the shape facts a vector must match (architecture, layers, heads,
head_dim, the config fingerprint) and a sample of the weights: a vector learned on SmolLM2 means
nothing on a random model of the same shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pas.core.arch import ModelLayout, layout
from pas.core.models import model_name, same_weights, weights_digest, weights_sample

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class ModelMismatchError(ValueError):
    """A steering vector applied to a model it was not made for."""


@dataclass(frozen=True)
class ModelSignature:
    """The model a vector belongs to. ``weights_sample`` ``()`` means not recorded (files of format 1)."""

    model_name: str
    model_type: str
    config_fingerprint: str
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    weights_sample: tuple[float, ...] = ()

    @classmethod
    def of(cls, model: PreTrainedModel) -> ModelSignature:
        lay = layout(model)
        return cls(model_name(model), lay.model_type, lay.fingerprint, lay.n_layers, lay.n_heads, lay.head_dim,
                   lay.hidden_size, weights_sample(model))

    @classmethod
    def from_json(cls, fields: Mapping[str, Any]) -> ModelSignature:
        """The signature from its fields as a file's JSON metadata holds them (a list back into a tuple)."""
        return cls(**{**fields, "weights_sample": tuple(fields.get("weights_sample", ()))})

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_layers, n_heads, head_dim)``: the shape of a vector's offsets."""
        return self.n_layers, self.n_heads, self.head_dim

    def differences(self, other: ModelSignature) -> str:
        """The shape and config facts that differ (``""`` when none), named for an error message."""
        diffs = []
        for name, mine, theirs in (("architecture", self.model_type, other.model_type),
                                   ("layers", self.n_layers, other.n_layers), ("heads", self.n_heads, other.n_heads),
                                   ("head_dim", self.head_dim, other.head_dim),
                                   ("config fingerprint", self.config_fingerprint, other.config_fingerprint)):
            if mine != theirs:
                diffs.append(f"{name}: vector {mine!r} vs model {theirs!r}")
        return "; ".join(diffs)

    def same_weights_as(self, other: ModelSignature) -> bool:
        """Whether both were taken from the same weights (true when either did not record them)."""
        return not (self.weights_sample and other.weights_sample) or same_weights(self.weights_sample,
                                                                                  other.weights_sample)

    def check(self, model: PreTrainedModel) -> ModelLayout:
        """Raise :class:`ModelMismatchError` naming every difference if ``model`` is not the one signed."""
        theirs = ModelSignature.of(model)
        mismatch = self.differences(theirs)
        if mismatch:
            raise ModelMismatchError(f"steering vector for {self.model_name!r} does not fit this model: {mismatch}")
        if not self.same_weights_as(theirs):
            raise ModelMismatchError(
                f"steering vector for {self.model_name!r} was made on other weights: weights fingerprint vector "
                f"{weights_digest(self.weights_sample)} vs model {weights_digest(theirs.weights_sample)} (same "
                f"config). If this model is a fine-tuned variant you mean to steer, use vector.for_weights_of(model) "
                f"(CLI: --allow-other-weights)")
        return layout(model)

    def check_addable(self, other: ModelSignature) -> None:
        """Raise if two vectors of these signatures cannot be added (other model, or other weights)."""
        mismatch = self.differences(other)
        if mismatch:
            raise ModelMismatchError(f"cannot add steering vectors of different models: {mismatch}")
        if not self.same_weights_as(other):
            raise ModelMismatchError("cannot add steering vectors made on different weights of the same architecture")

    def for_weights_of(self, model: PreTrainedModel) -> ModelSignature:
        """This signature, accepted for ``model``'s weights (a fine-tuned variant of the same architecture)."""
        theirs = ModelSignature.of(model)
        mismatch = self.differences(theirs)
        if mismatch:
            raise ModelMismatchError(f"steering vector for {self.model_name!r} does not fit this model: {mismatch}")
        return dataclasses.replace(self, weights_sample=theirs.weights_sample)
