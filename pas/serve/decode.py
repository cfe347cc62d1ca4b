"""Step-wise greedy decoding of many rows, each steered by its own person; rows join and leave between steps.

A :class:`RowBatch` holds one KV cache for all its rows, left-padded to a common length: an attention mask
marks the pads and each row's positions count its own tokens only, so a row computes what it would alone.
New rows are prefilled together (left-padded, steered as :func:`pas.steer.position.position_rule` says for
phase "generate": a "last" vector at the prompt's last position, an "all" vector at every position), then
their caches are padded on the left to join the batch's. Each decode step is one forward over one token per
row, every row steered by its own vector through :mod:`pas.steer.hooks` (constant or gated alike; a decode
step has one position per row, which both rules steer). Finished rows leave at once; columns that are padding
in every remaining row are trimmed, so a long request that has left costs the others nothing.

Greedy replies equal :func:`pas.steer.chat.generate` for each row alone (tested).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch

from pas.core.arch import layout
from pas.score.scorer import new_cache
from pas.steer.hooks import add_gated, add_offsets
from pas.steer.position import position_rule
from pas.steer.vector import SteeringVector

if TYPE_CHECKING:
    from transformers import DynamicCache, PreTrainedTokenizerBase
    from transformers.cache_utils import DynamicLayer

    from pas.core.models import CausalLM

Tables = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # gate weights, bias, offsets, limit


@dataclass(frozen=True, eq=False)
class RowSteer:
    """One person's steering as the decode hooks take it: per steered layer its gated tables
    ``(w [H*D], b [H], v [H*D], limit [H])`` in the model's dtype and device (a constant vector as its gated
    equivalent, :meth:`SteeringVector.gated_tables`). Made once per person and strength, used by every row."""

    vector: SteeringVector
    layers: dict[int, Tables]

    @classmethod
    def of(cls, model: CausalLM, vector: SteeringVector) -> RowSteer:
        """``vector``'s tables for ``model`` (the caller has checked that the vector fits the model)."""
        w, b, v, lim = (t.to(model.device, model.dtype) for t in vector.gated_tables())
        steered = [layer for layer in range(v.shape[0]) if bool(v[layer].any())]
        return cls(vector, {layer: (w[layer], b[layer], v[layer], lim[layer]) for layer in steered})

    @property
    def gated(self) -> bool:
        return self.vector.kind == "gated"


@dataclass(eq=False)
class Row:
    """One request's greedy decoding: its prompt tokens, its steering (None: unsteered), how many tokens it may
    make, and what it made. ``finish``: ``"stop"`` (an end-of-sequence token), ``"length"`` or ``"cancelled"``."""

    prompt: list[int]
    steer: RowSteer | None
    max_new_tokens: int
    stop_at_eos: bool = True
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None

    def take(self, token: int, eos: frozenset[int]) -> None:
        """Append the next token and note whether the row is done (as ``model.generate`` stops)."""
        self.tokens.append(token)
        if self.stop_at_eos and token in eos:
            self.finish = "stop"
        elif len(self.tokens) >= self.max_new_tokens:
            self.finish = "length"


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]) -> list[int]:
    """A conversation's tokens as :func:`pas.steer.chat.generate` lays them out (the assistant's turn opened)."""
    enc = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, return_dict=True)
    return list(cast("dict[str, list[int]]", enc)["input_ids"])


def row_tables(model: CausalLM, steers: Sequence[RowSteer | None]) -> Tables | None:
    """``(w, b, v, limit)``, each ``[n_layers, batch, 1, .]``: row ``r``'s tables at every layer (zeros where it
    steers nothing, so an unsteered row passes through unchanged). That is the kernels' per-row form, gathered
    once per change of the batch. None when no row is steered."""
    used = sorted({layer for s in steers if s is not None for layer in s.layers})
    if not used:
        return None
    lay = layout(model)
    n, width, heads = len(steers), lay.attn_width, lay.n_heads
    w, v = (torch.zeros(lay.n_layers, n, 1, width, dtype=model.dtype, device=model.device) for _ in range(2))
    b = torch.zeros(lay.n_layers, n, 1, heads, dtype=model.dtype, device=model.device)
    lim = torch.full_like(b, float("inf"))
    for layer in used:
        rows = [r for r, s in enumerate(steers) if s is not None and layer in s.layers]
        index = torch.tensor(rows, device=model.device)
        parts = [cast(RowSteer, steers[r]).layers[layer] for r in rows]  # each (w, b, v, limit)
        for k, table in enumerate((w, b, v, lim)):
            table[layer, index, 0] = torch.stack([p[k] for p in parts])
    return w, b, v, lim


def steering_hooks(model: CausalLM, steers: Sequence[RowSteer | None], *, last_only: bool) -> AbstractContextManager:
    """Hooks steering each batch row by its own :class:`RowSteer` (gated hooks when any row is gated, else plain
    offsets); ``last_only`` as in :func:`pas.steer.hooks.add_offsets`."""
    tables = row_tables(model, steers)
    if tables is None:
        return nullcontext()
    if any(s is not None and s.gated for s in steers):
        return add_gated(model, *tables, last_only=last_only)
    return add_offsets(model, tables[2], last_only=last_only)


def kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values ``[batch, kv_heads, length, head_dim]`` (set: the layer has run)."""
    return cast(torch.Tensor, layer.keys), cast(torch.Tensor, layer.values)


def pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """``t`` with ``n`` zeros before its entries along ``dim``."""
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim)


class RowBatch:
    """Rows decoding together (see the module docstring). Not thread-safe: one worker owns it and the model."""

    def __init__(self, model: CausalLM, eos: Iterable[int], pad_id: int) -> None:
        self.model = model
        self.eos = frozenset(eos)
        self.pad_id = pad_id
        self.rows: list[Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [batch, length]: 1 where a row has a real token
        self._hooks: AbstractContextManager | None = None  # the decode hooks of the current rows, while on

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def length(self) -> int:
        """Cached positions per row, padding included."""
        return 0 if self._mask is None else int(self._mask.shape[1])

    def detach(self) -> None:
        """Take the decode hooks off the model: before the model does anything else, and when rows change."""
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None

    def reset(self) -> list[Row]:
        """Drop every row and the cache (after a failed forward); returns the rows dropped."""
        self.detach()
        dropped, self.rows, self._cache, self._mask = self.rows, [], None, None
        return dropped

    @torch.no_grad()
    def join(self, rows: Sequence[Row]) -> None:
        """Prefill ``rows`` (one forward per position rule among them), take their first tokens, add them."""
        self.detach()
        groups: dict[bool, list[Row]] = {}
        for r in rows:
            rule = position_rule(r.steer.vector.positions if r.steer else "last", "generate")
            groups.setdefault(rule.last_only, []).append(r)
        for last_only, group in groups.items():
            cache, mask, logits = self._prefill(group, last_only)
            self._merge(group, cache, mask)
            for r, token in zip(group, logits.argmax(-1).tolist(), strict=True):
                r.take(token, self.eos)

    @torch.no_grad()
    def step(self) -> None:
        """One greedy token for every row (call :meth:`evict` first: rows here are unfinished)."""
        if not self.rows or self._mask is None:
            return
        device = self.model.device
        ids = torch.tensor([[r.tokens[-1]] for r in self.rows], device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self.rows), 1)], 1)
        positions = self._mask.sum(-1, keepdim=True) - 1  # each row's own count of real tokens before this one
        if self._hooks is None:
            self._hooks = steering_hooks(self.model, [r.steer for r in self.rows], last_only=False)
            self._hooks.__enter__()
        out = self.model(input_ids=ids, attention_mask=self._mask, position_ids=positions,
                         past_key_values=self._cache, use_cache=True)
        for r, token in zip(self.rows, out.logits[:, -1].argmax(-1).tolist(), strict=True):
            r.take(token, self.eos)

    def evict(self) -> list[Row]:
        """Remove the finished (and cancelled) rows and the padding no remaining row needs; returns those rows."""
        done = [r for r in self.rows if r.finish is not None]
        if not done:
            return []
        self.detach()
        keep = [i for i, r in enumerate(self.rows) if r.finish is None]
        self.rows = [self.rows[i] for i in keep]
        if not keep or self._mask is None or self._cache is None:
            self._cache = self._mask = None
            return done
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[index]
        first = int(mask.any(0).nonzero()[0])  # left padding shared by every remaining row
        for layer in self._layers():
            keys, values = kv(layer)
            layer.keys, layer.values = keys[index, :, first:], values[index, :, first:]
        self._mask = mask[:, first:]
        return done

    def _prefill(self, rows: Sequence[Row], last_only: bool) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """One forward over ``rows``' prompts, left-padded: their cache, mask and last-position logits."""
        device = self.model.device
        n = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros(len(rows), n, dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            ids[i, n - len(r.prompt):] = torch.tensor(r.prompt, device=device)
            mask[i, n - len(r.prompt):] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as model.generate numbers a padded row
        cache = new_cache(self.model, None)
        with steering_hooks(self.model, [r.steer for r in rows], last_only=last_only):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
        return cache, mask, out.logits[:, -1]

    def _merge(self, rows: Sequence[Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add prefilled ``rows`` (their ``cache`` and ``mask``) to the batch, padding the shorter on the left."""
        if self._cache is None or self._mask is None:
            self._cache, self._mask, self.rows = cache, mask, list(rows)
            self._check_layers()
            return
        old, new = self._mask.shape[1], mask.shape[1]
        length = max(old, new)
        for mine, theirs in zip(self._layers(), self._layers(cache), strict=True):
            (keys, values), (their_keys, their_values) = kv(mine), kv(theirs)
            mine.keys = torch.cat([pad_left(keys, length - old, 2), pad_left(their_keys, length - new, 2)])
            mine.values = torch.cat([pad_left(values, length - old, 2), pad_left(their_values, length - new, 2)])
        self._mask = torch.cat([pad_left(self._mask, length - old, 1), pad_left(mask, length - new, 1)])
        self.rows += rows

    def _layers(self, cache: DynamicCache | None = None) -> list[DynamicLayer]:
        # after a forward every layer of a plain DynamicCache holds its keys and values (checked at the first merge)
        return cast("list[DynamicLayer]", (cache or self._cache).layers)  # type: ignore[union-attr]

    def _check_layers(self) -> None:
        """Rows join and leave by editing the cache: only plain full-attention layers allow that."""
        for layer in self._layers():
            if getattr(layer, "is_sliding", False) or not isinstance(getattr(layer, "keys", None), torch.Tensor):
                raise RuntimeError(f"pas serve batches rows by editing the KV cache, which this model's "
                                   f"{type(layer).__name__} does not allow (sliding-window or other cache layers)")
