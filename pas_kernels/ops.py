"""Elementwise steering operations (reference implementations, compiled versions beside them)."""

from __future__ import annotations

import torch

from .compile import compiled


def add_head_offsets_reference(x: torch.Tensor, delta: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Hook mode: ``x [B, T, H*D] + delta`` at positions ``>= first``.

    delta: ``[H*D]`` (one vector for the batch) or ``[B, 1, H*D]`` (one per row).
    first: 0-d tensor, the first position (within this call) to steer; 0 steers all.
    """
    t = torch.arange(x.shape[-2], device=x.device)
    gate = (t >= first).to(x.dtype)[:, None]  # [T, 1]
    return x + delta.to(x.dtype) * gate


def row_biases(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table[rows]`` shaped ``[B, 1, hidden]``, to broadcast over positions."""
    return table[rows][:, None, :]


def add_row_bias_reference(y: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-row steering after the projection: ``y [B, T, hidden] + table[rows]``; ``table [S + 1, hidden]``.

    Row index ``S`` (the last row of the table, zeros) means "no steering". Gather and add in one
    fused kernel, for callers whose rows change from call to call (the hooks of
    :func:`pas.steer.hooks.add_row_biases` have fixed rows: they gather once and only add).
    """
    return y + row_biases(table, rows).to(y.dtype)


def add_gated_offsets_reference(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor, offsets: torch.Tensor,
                                first: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """Gated hook mode: per head ``h``, ``x_h + clamp(w_h . x_h + b_h, -l_h, l_h) * v_h`` at positions ``>= first``.

    x: ``[B, T, H*D]``; weights, offsets: ``[H*D]`` (one vector for the batch) or ``[B, 1, H*D]``
    (one per row); bias, limit: ``[H]`` or ``[B, 1, H]`` (limit ``inf``: unlimited); first: 0-d tensor as
    in :func:`add_head_offsets_reference`. The gate of each head reads that head's own output at the
    same position.
    """
    n_heads = bias.shape[-1]
    xs = x.unflatten(-1, (n_heads, -1))  # [B, T, H, D]
    w = weights.to(x.dtype).unflatten(-1, (n_heads, -1))
    v = offsets.to(x.dtype).unflatten(-1, (n_heads, -1))
    lim = limit.to(x.dtype)
    g = (xs * w).sum(-1) + bias.to(x.dtype)  # [B, T, H]
    g = torch.maximum(torch.minimum(g, lim), -lim)
    t = torch.arange(x.shape[-2], device=x.device)
    g = g * (t >= first).to(x.dtype)[:, None]
    return (xs + g[..., None] * v).flatten(-2)


add_head_offsets = compiled(add_head_offsets_reference)
add_gated_offsets = compiled(add_gated_offsets_reference)
add_row_bias = compiled(add_row_bias_reference)


def silu_mlp_letters_reference(base: torch.Tensor, change: torch.Tensor, gains: torch.Tensor, scale: torch.Tensor,
                               letters: torch.Tensor) -> torch.Tensor:
    """A SiLU-gated MLP's hidden units read by a few output rows, over a grid of gains: ``[P, G, S, n, K]``.

    ``base [S, n, 2F]``: the gate and up projections side by side at gain 0, per shift ``S`` and item ``n``;
    ``change [P, n, 2F]``: their change per unit of gain, per person ``P``; ``gains [G]``; ``scale [P, G, S, n]``:
    the MLP norm's scale of each row; ``letters [K, F]``: each output's weights on the hidden units. Each row's
    ``(gate, up) = scale * (base + gain * change)`` and ``hidden = silu(gate) * up``; the result is
    ``hidden @ letters.T``. Compiled, it is written as K sums over the units so that inductor fuses the whole
    row into one loop and no ``[..., F]`` tensor is ever stored (the hidden units are the widest tensor of
    :mod:`pas.population.subspace`'s fast calibration, which this serves); in eager torch the matrix
    product is the faster form.
    """
    width = letters.shape[-1]
    s = scale[..., None]
    g = gains[None, :, None, None, None]
    gate = (base[None, None, ..., :width] + g * change[:, None, None, ..., :width]) * s
    up = (base[None, None, ..., width:] + g * change[:, None, None, ..., width:]) * s
    hidden = torch.nn.functional.silu(gate) * up
    if torch.compiler.is_compiling():
        return torch.stack([(hidden * letters[k]).sum(-1) for k in range(letters.shape[0])], -1)
    return hidden @ letters.T


silu_mlp_letters = compiled(silu_mlp_letters_reference)
