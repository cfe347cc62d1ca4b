"""Folding a constant vector into the attention output projections' biases: the one place ``W_o @ delta`` is computed.

``W_o @ delta`` (fp32) is what a per-head offset ``delta`` adds to the residual stream after attention;
:func:`output_shift` computes it, :class:`FoldedSteering` adds it to each projection's bias (``unfold()``
restores the originals bit for bit), and per-row steering uses it as a per-row bias table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from pas.core.arch import layout, o_proj_modules, o_proj_weight

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def output_shift(model: PreTrainedModel, offsets: torch.Tensor) -> torch.Tensor:
    """``[L, hidden]`` fp32: ``W_o @ delta`` per layer for per-head offsets ``[L, H, D]`` (or ``[L, H*D]``)."""
    conv1d = layout(model).conv1d
    flat = offsets.reshape(offsets.shape[0], -1)
    return torch.stack([o_proj_weight(proj, conv1d).float()
                        @ flat[layer].to(cast(torch.Tensor, proj.weight).device, torch.float32)
                        for layer, proj in enumerate(o_proj_modules(model))])


def offsets_for_shift(model: PreTrainedModel, shift: torch.Tensor, *, tolerance: float = 1e-4) -> torch.Tensor:
    """The per-head offsets ``[L, H, D]`` whose :func:`output_shift` is ``shift [L, hidden]``: each layer's least
    squares solution of ``W_o delta = shift``. Raises ValueError naming the layer when no offset adds that shift
    (``W_o`` of less rank than ``hidden``, e.g. fewer head dimensions than the width), relative error above
    ``tolerance``."""
    lay = layout(model)
    if tuple(shift.shape) != (lay.n_layers, lay.hidden_size):
        raise ValueError(f"shift has shape {tuple(shift.shape)}, expected [{lay.n_layers}, {lay.hidden_size}]")
    out = torch.zeros(lay.n_layers, lay.n_heads * lay.head_dim)
    for layer, proj in enumerate(o_proj_modules(model)):
        target = shift[layer].float()
        if not bool(target.any()):
            continue
        w = o_proj_weight(proj, lay.conv1d).float().cpu()  # [hidden, H*D]
        delta = torch.linalg.lstsq(w.double(), target.double()[:, None]).solution[:, 0].float()
        miss = float((w @ delta - target).norm() / target.norm())
        if miss > tolerance:
            raise ValueError(f"layer {layer}: no per-head offset adds this residual shift (relative error {miss:.2g}: "
                             f"the output projection reaches only part of the width)")
        out[layer] = delta
    return out.reshape(lay.n_layers, lay.n_heads, lay.head_dim)


@dataclass
class FoldedSteering:
    """A vector folded into output-projection biases; ``unfold()`` puts the originals back bit for bit."""

    model: PreTrainedModel
    saved: list[tuple[nn.Module, torch.Tensor | None]]

    @classmethod
    def fold(cls, model: PreTrainedModel, offsets: torch.Tensor) -> FoldedSteering:
        """Add ``W_o @ delta`` to the bias of every layer whose offsets are not all zero (mutates ``model``:
        a projection without a bias gets one)."""
        shifts = output_shift(model, offsets)
        saved: list[tuple[nn.Module, torch.Tensor | None]] = []
        with torch.no_grad():
            for layer, proj in enumerate(o_proj_modules(model)):
                if not bool(offsets[layer].any()):
                    continue
                bias, weight = cast("torch.Tensor | None", proj.bias), cast(torch.Tensor, proj.weight)
                original = None if bias is None else bias.detach().clone()
                saved.append((proj, original))
                base = torch.zeros_like(shifts[layer]) if original is None else original.float()
                proj.bias = nn.Parameter((base + shifts[layer]).to(weight.dtype), requires_grad=False)
        return cls(model, saved)

    def unfold(self) -> None:
        with torch.no_grad():
            for proj, original in self.saved:
                # nn.Module.__setattr__ takes None for a registered parameter; torch types it Tensor | Module
                proj.bias = None if original is None else nn.Parameter(original, requires_grad=False)  # type: ignore[assignment]
        self.saved.clear()

    def __enter__(self) -> FoldedSteering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unfold()
