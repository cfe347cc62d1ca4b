"""Adding per-head offsets to attention outputs with forward pre-hooks.

The offsets enter the input of each layer's attention output projection (the
concatenated head outputs), so through ``W_o`` they reach the residual stream.
The model's modules are never replaced or patched: removing the handle leaves a
model that computes bit-identical logits.

Position gating: ``start`` steers only sequence positions ``>= start`` (absolute
index in the padded sequence, KV cache included: e.g. the prompt length to steer
only generated tokens); ``last_only`` steers only the last position of each forward
call (the position that predicts the next token).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pas.core.arch import decoder_layers, layout, o_proj_modules

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# a forward pre-hook on an output projection: new positional inputs, or None to leave them as they are
PreHook = Callable[[nn.Module, tuple[Any, ...]], "tuple[Any, ...] | None"]


@dataclass
class _PositionState:
    offset: int = 0  # tokens already in the KV cache when the current forward started


def _past_length(kwargs: dict[str, Any]) -> int:
    pkv = kwargs.get("past_key_values")
    if pkv is not None and hasattr(pkv, "get_seq_length"):
        return int(pkv.get_seq_length())
    cache_position = kwargs.get("cache_position")
    if cache_position is not None and cache_position.numel():
        return int(cache_position.reshape(-1)[0])
    return 0


@dataclass
class SteeringHandle:
    """Live hooks on a model. ``remove()`` (or leaving the ``with`` block) takes them all off."""

    handles: list[RemovableHandle] = field(default_factory=list)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def add_offsets(
    model: PreTrainedModel,
    offsets: torch.Tensor,
    *,
    start: int | None = None,
    last_only: bool = False,
    rows: torch.Tensor | None = None,
) -> SteeringHandle:
    """Hook ``offsets`` into ``model``'s attention output projections.

    offsets: ``[n_layers, n_heads * head_dim]`` (one vector for the whole batch), or with
    ``rows`` a table ``[n_vectors, n_layers, n_heads * head_dim]`` and ``rows: [batch]``
    giving each batch row's vector (``-1``: unsteered). Without ``rows``, ``start`` or ``last_only``,
    ``offsets [n_layers, T, n_heads * head_dim]`` adds a different offset at each of a call's ``T``
    positions, every row alike. Layers whose offsets are all zero get no hook. ``offsets`` may
    require grad (used to learn them).
    """
    if rows is None and offsets.dim() == 3 and (start is not None or last_only):
        raise ValueError("per-position offsets [n_layers, T, n_heads * head_dim] take no start or last_only")
    projs = o_proj_modules(model)
    per_layer = offsets if rows is None else offsets.transpose(0, 1)  # [L, ...]
    if per_layer.shape[0] != len(projs):
        raise ValueError(f"offsets have {per_layer.shape[0]} layers, model has {len(projs)}")
    state = _PositionState()
    handle = SteeringHandle()
    gated = start is not None or last_only
    if gated:
        handle.handles.append(model.register_forward_pre_hook(_track_positions(state), with_kwargs=True))
    if rows is not None:
        table = torch.cat([offsets, offsets.new_zeros(1, *offsets.shape[1:])])  # row -1 -> zeros
        rows = rows.clone()
    for layer, proj in enumerate(projs):
        if not offsets.requires_grad and not bool(per_layer[layer].any()):
            continue
        if rows is None:
            # a fresh contiguous tensor per layer (no storage offset): compiled kernels see one layout
            own = offsets[layer] if offsets.requires_grad else offsets[layer].clone()
            hook = _make_hook(_constant(own), state, start, last_only)
        else:
            own = table[rows, layer][:, None, :]  # gathered once: rows are fixed while the hook lives
            hook = _make_hook(_constant(own), state, start, last_only)
        handle.handles.append(proj.register_forward_pre_hook(hook))
    return handle


def _constant(delta: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``delta_for`` of :func:`_make_hook` for a fixed offset: ``delta`` whatever the input."""
    return lambda x: delta


def _track_positions(state: _PositionState) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state.offset = _past_length(kwargs)

    return pre


def _make_hook(delta_for: Callable[[torch.Tensor], torch.Tensor], state: _PositionState, start: int | None,
               last_only: bool) -> PreHook:
    """Pre-hook adding ``delta_for(x)`` to the positions the gate selects.

    Only a partial gate (some positions of this call steered, some not: a prompt's prefill)
    runs the fused, compiled kernel. When every position or none is steered (every decode
    step) it is one plain add or nothing: a compiled call's dispatch (~0.3 ms on a CPU)
    would cost more than the addition itself.
    """
    from pas_kernels import add_head_offsets

    def step(x: torch.Tensor, first: int) -> torch.Tensor:
        if first == 0:
            return x + delta_for(x).to(x.dtype)
        return add_head_offsets(x, delta_for(x), torch.tensor(first))

    return _gated_positions(step, state, start, last_only)


def _gated_positions(step: Callable[[torch.Tensor, int], torch.Tensor], state: _PositionState, start: int | None,
                     last_only: bool) -> PreHook:
    """The one position rule of every hook: ``step(x, first)`` steers positions ``>= first`` of this call."""

    def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = args[0]
        t = x.shape[-2]
        first = 0 if start is None else max(start - state.offset, 0)
        if last_only:
            first = max(first, t - 1)
        if first >= t:
            return None
        return (step(x, first),) + tuple(args[1:])

    return pre


def add_gated(
    model: PreTrainedModel,
    weights: torch.Tensor,
    bias: torch.Tensor,
    offsets: torch.Tensor,
    limit: torch.Tensor | None = None,
    *,
    start: int | None = None,
    last_only: bool = False,
    rows: torch.Tensor | None = None,
) -> SteeringHandle:
    """Hook gated offsets into ``model``: each head adds ``clamp(w_h . x_h + b_h, -l_h, l_h) * v_h`` to its own
    output ``x_h``.

    weights, offsets: ``[n_layers, n_heads * head_dim]``, bias, limit: ``[n_layers, n_heads]`` (limit None
    or ``inf``: unlimited); or with ``rows`` tables ``[n_vectors, ...]`` of those and ``rows: [batch]``
    (``-1``: unsteered). Position gating as in :func:`add_offsets`. Layers whose offsets are all zero get
    no hook; the tensors may require grad (used to learn them).
    """
    projs = o_proj_modules(model)
    learning = weights.requires_grad or bias.requires_grad or offsets.requires_grad
    if limit is None:
        limit = torch.full_like(bias.detach(), float("inf"))
    tables: tuple[torch.Tensor, ...] = (weights, bias, offsets, limit)
    if rows is not None:
        tables = tuple(torch.cat([t, t.new_zeros(1, *t.shape[1:])]) for t in tables)  # row -1 -> zeros
        tables = tuple(t[rows].transpose(0, 1)[:, :, None] for t in tables)  # [L, B, 1, ...], gathered once
    if tables[2].shape[0] != len(projs):
        raise ValueError(f"gated offsets have {tables[2].shape[0]} layers, model has {len(projs)}")
    state = _PositionState()
    handle = SteeringHandle()
    if start is not None or last_only:
        handle.handles.append(model.register_forward_pre_hook(_track_positions(state), with_kwargs=True))
    for layer, proj in enumerate(projs):
        if not learning and not bool(tables[2][layer].any()):
            continue
        w, b, v, lim = (t[layer] for t in tables)
        handle.handles.append(proj.register_forward_pre_hook(_make_gated_hook(w, b, v, lim, state, start, last_only)))
    return handle


def _make_gated_hook(w: torch.Tensor, b: torch.Tensor, v: torch.Tensor, lim: torch.Tensor, state: _PositionState,
                     start: int | None, last_only: bool) -> PreHook:
    """Pre-hook for gated offsets; as in :func:`_make_hook`, only a partial gate runs the compiled kernel."""
    from pas_kernels import add_gated_offsets

    def step(x: torch.Tensor, first: int) -> torch.Tensor:
        kernel = add_gated_offsets.reference if first == 0 else add_gated_offsets
        return kernel(x, w, b, v, torch.tensor(first), lim)

    return _gated_positions(step, state, start, last_only)


def add_row_biases(model: PreTrainedModel, table: torch.Tensor, rows: torch.Tensor) -> SteeringHandle:
    """Folded per-row steering: add ``table[rows[b], layer]`` to each output projection's *output*.

    table: ``[n_vectors, n_layers, hidden]`` holding exact ``W_o @ delta`` per vector (see
    :func:`pas.steer.rows.bias_table`); rows: ``[batch]``, ``-1`` = unsteered. Every position is steered.
    """
    from pas_kernels.ops import row_biases

    projs = o_proj_modules(model)
    if table.shape[1] != len(projs):
        raise ValueError(f"bias table has {table.shape[1]} layers, model has {len(projs)}")
    padded = torch.cat([table, table.new_zeros(1, *table.shape[1:])])  # index n_vectors: zeros
    index = torch.where(rows < 0, torch.full_like(rows, table.shape[0]), rows)
    handle = SteeringHandle()
    for layer, proj in enumerate(projs):
        # rows are fixed while the hooks live: gather each row's bias once, then every call is one add
        bias = row_biases(padded[:, layer].contiguous(), index)
        handle.handles.append(proj.register_forward_hook(lambda module, args, out, bias=bias: out + bias.to(out.dtype)))
    return handle


def add_block_outputs(model: PreTrainedModel, offsets: torch.Tensor) -> SteeringHandle:
    """Add ``offsets[l]`` (``[n_layers, hidden]``) to decoder layer ``l``'s output at every position: a residual-stream
    offset after the whole block, which is what llama.cpp does with a control vector's ``direction.l``
    (:mod:`pas.export`); pas's own offsets enter after attention instead (:func:`add_offsets`). Layers whose
    offsets are all zero get no hook. The hooks run first, so whatever else watches a block's output (e.g.
    transformers' ``output_hidden_states`` recorder) sees the steered stream."""
    layers = decoder_layers(model)
    if tuple(offsets.shape[:1]) != (len(layers),) or offsets.dim() != 2:
        raise ValueError(f"offsets have shape {tuple(offsets.shape)}, expected [{len(layers)}, hidden]")
    handle = SteeringHandle()
    for layer, block in enumerate(layers):
        if bool(offsets[layer].any()):
            handle.handles.append(block.register_forward_hook(_add_to_output(offsets[layer].clone()), prepend=True))
    return handle


def _add_to_output(delta: torch.Tensor) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + delta.to(output[0].dtype), *output[1:])
        return output + delta.to(output.dtype)

    return hook


def dense_offsets(
    heads: Sequence[tuple[int, int]], vectors: torch.Tensor, n_layers: int, n_heads: int, head_dim: int
) -> torch.Tensor:
    """Scatter per-head vectors ``[K, head_dim]`` for ``heads`` [(layer, head)] into ``[L, H * D]`` (differentiable)."""
    dense = vectors.new_zeros(n_layers, n_heads, head_dim)
    if len(heads):
        idx = torch.tensor(list(heads), dtype=torch.long, device=vectors.device)
        dense = dense.index_put((idx[:, 0], idx[:, 1]), vectors)
    return dense.reshape(n_layers, n_heads * head_dim)


@contextmanager
def record_head_outputs(model: PreTrainedModel) -> Iterator[Callable[[], torch.Tensor]]:
    """The one recorder of head outputs: while the block runs, each forward call's head outputs (the input of
    every layer's attention output projection) at its last position are kept. The yielded function returns
    the latest call's, float32 ``[batch, n_layers, n_heads, head_dim]``; the hooks are removed on exit."""
    lay = layout(model)
    grabbed: list[torch.Tensor | None] = [None] * lay.n_layers

    def grab(layer: int) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            grabbed[layer] = args[0][:, -1, :].float()

        return pre

    handles = [p.register_forward_pre_hook(grab(i)) for i, p in enumerate(o_proj_modules(model))]

    def latest() -> torch.Tensor:
        if any(g is None for g in grabbed):
            raise RuntimeError("no forward call has run inside record_head_outputs yet")
        stacked = torch.stack(cast(list[torch.Tensor], grabbed), 1)  # none is None: checked above
        return stacked.reshape(*stacked.shape[:2], lay.n_heads, lay.head_dim)

    try:
        yield latest
    finally:
        for h in handles:
            h.remove()
