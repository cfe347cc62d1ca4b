"""Where each model family keeps its attention output projection.

PAS reads and steers per-head attention outputs: the *input* of each layer's
attention output projection, i.e. the concatenated head outputs ``[.., n_heads *
head_dim]``. This module is the one place that knows, per architecture, where
that projection lives. Register a new family with :func:`register_architecture`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class AttnOutSpec:
    """Dotted paths: ``layers`` from the model root, ``o_proj`` within one layer.

    ``conv1d``: the projection is a GPT-2 style ``Conv1D`` (weight ``[in, out]``).
    ``tail``: where the layer goes on after attention, when it is ``residual + mlp(mlp_norm(residual))``
    with the attention output added straight to the residual: ``(mlp_norm, mlp)`` within a layer and the
    final norm from the model root. Optional: it lets the last layer's post-attention part run on its
    own (:func:`last_block_tail`); families without it (e.g. Gemma-2's extra norms) take the general path.
    """

    layers: str
    o_proj: str
    conv1d: bool = False
    tail: tuple[str, str, str] | None = None


_LLAMA_LIKE = AttnOutSpec("model.layers", "self_attn.o_proj", tail=("post_attention_layernorm", "mlp", "model.norm"))
ARCHITECTURES: dict[str, AttnOutSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": AttnOutSpec("model.layers", "self_attn.o_proj"),  # its embeddings and norms differ: no tail
    "gemma2": AttnOutSpec("model.layers", "self_attn.o_proj"),
    "gpt2": AttnOutSpec("transformer.h", "attn.c_proj", conv1d=True, tail=("ln_2", "mlp", "transformer.ln_f")),
}


def register_architecture(model_type: str, spec: AttnOutSpec) -> None:
    """Teach pas a new ``config.model_type``: where its layers and output projections are."""
    ARCHITECTURES[model_type] = spec


class UnsupportedArchitectureError(ValueError):
    pass


@dataclass(frozen=True)
class ModelLayout:
    """Shape facts about a model that steering vectors must match."""

    model_type: str
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    conv1d: bool
    has_bias: bool
    fingerprint: str

    @property
    def attn_width(self) -> int:
        return self.n_heads * self.head_dim


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def spec_for(model: PreTrainedModel) -> AttnOutSpec:
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"pas does not know architecture {model_type!r} (known: {sorted(ARCHITECTURES)}). Register it with "
            f"pas.core.arch.register_architecture({model_type!r}, AttnOutSpec(layers='model.layers', "
            f"o_proj='self_attn.o_proj')) using the paths of your model's decoder layers and attention output "
            f"projection."
        )
    return ARCHITECTURES[model_type]


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's decoder layers, in order (the list itself: callers may swap entries for a pass)."""
    return _get(model, spec_for(model).layers)


def o_proj_modules(model: PreTrainedModel) -> list[nn.Module]:
    """The attention output projection of every layer, in layer order."""
    spec = spec_for(model)
    return [_get(layer, spec.o_proj) for layer in _get(model, spec.layers)]


@dataclass(frozen=True)
class BlockTail:
    """The last layer after its attention: :meth:`__call__` maps the residual stream right after the attention
    output is added, ``[N, hidden]``, to the final (normed) hidden state ``[N, hidden]``; ``mlp_norm`` is the
    module whose input is that residual (hook it to read it)."""

    mlp_norm: nn.Module
    mlp: nn.Module
    final_norm: nn.Module

    def __call__(self, residual: torch.Tensor) -> torch.Tensor:
        return self.final_norm(residual + self.mlp(self.mlp_norm(residual)))


def last_block_tail(model: PreTrainedModel) -> BlockTail | None:
    """The last layer's :class:`BlockTail`, or None where the family declares no ``tail``."""
    spec = spec_for(model)
    if spec.tail is None:
        return None
    mlp_norm, mlp, final_norm = spec.tail
    last = _get(model, spec.layers)[-1]
    return BlockTail(_get(last, mlp_norm), _get(last, mlp), _get(model, final_norm))


def config_fingerprint(config: PretrainedConfig) -> str:
    """Short hash of the config fields that decide whether a steering vector fits a model."""
    keys = (
        "model_type", "num_hidden_layers", "n_layer", "hidden_size", "n_embd", "num_attention_heads", "n_head",
        "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "rope_theta", "max_position_embeddings",
    )
    fields = {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def layout(model: PreTrainedModel) -> ModelLayout:
    """Layers, heads and head_dim of ``model``, checked against its output projections."""
    spec = spec_for(model)
    cfg = model.config
    projs = o_proj_modules(model)
    n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    head_dim = getattr(cfg, "head_dim", None) or hidden // n_heads
    weight = cast(torch.Tensor, projs[0].weight)  # nn.Linear or Conv1D: a weight tensor either way
    in_features = weight.shape[0] if spec.conv1d else weight.shape[1]
    if in_features != n_heads * head_dim:
        raise UnsupportedArchitectureError(
            f"{cfg.model_type}: output projection takes {in_features} features, but config says "
            f"{n_heads} heads x {head_dim} = {n_heads * head_dim}"
        )
    return ModelLayout(
        model_type=cfg.model_type,
        n_layers=len(projs),
        n_heads=n_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        conv1d=spec.conv1d,
        has_bias=projs[0].bias is not None,
        fingerprint=config_fingerprint(cfg),
    )


def o_proj_weight(module: nn.Module, conv1d: bool) -> torch.Tensor:
    """The projection's weight as ``[out, in]`` whatever its storage (Conv1D stores ``[in, out]``)."""
    weight = cast(torch.Tensor, module.weight)
    return weight.T if conv1d else weight
