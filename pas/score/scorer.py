"""Questionnaire scoring: the model's next-token distribution over the option letters.

Fast path, with the same results as one prompt at a time (tested):

1. tokens shared by every prompt (system prompt, template head) run once; their KV
   cache is reused by every batch (prefix caching);
2. the rest of each prompt *except its last token* runs in left-padded batches with
   explicit position ids (the "body" KV cache, kept in :class:`EncodedPrompts`);
3. the last token runs on top of that cache (``logits_to_keep=1``) and gives the
   letter logits. Steering that acts only on the answer position ("last" mode)
   re-runs only step 3, which is what makes strength search and offset learning cheap;
4. steering that starts at layer ``k`` cannot change the answer position's input to
   layer ``k``: that input is kept per batch (the "trunk", captured on the first pass)
   and later passes run only layers ``k..`` on it (``from_layer``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from pas.core.arch import decoder_layers
from pas.core.items import ItemBank
from pas.score.prompts import LETTER_VALUES, PromptTemplate, letter_token_ids

if TYPE_CHECKING:
    from transformers import Cache, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.cache_utils import CacheLayerMixin

    from pas.steer.vector import SteeringVector


@dataclass
class OptionDistribution:
    """Per prompt: ``probs`` over A..E (renormalised), ``letter_mass`` = their share of the full vocabulary."""

    probs: np.ndarray  # [N, 5]
    letter_mass: np.ndarray  # [N]

    @property
    def answers(self) -> np.ndarray:
        """Answer value 1..5 of the most likely letter."""
        return np.asarray(LETTER_VALUES)[self.probs.argmax(axis=1)]

    @property
    def expected(self) -> np.ndarray:
        """Expected answer value under the 5-way distribution."""
        return self.probs @ np.asarray(LETTER_VALUES, dtype=np.float64)


@dataclass
class EncodedBatch:
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, the body only: [B, kv_heads, S, D]
    last_ids: torch.Tensor  # [B, 1]
    mask: torch.Tensor  # [B, P + S + 1]
    positions: torch.Tensor  # [B, 1]
    index: torch.Tensor  # [B] position of each row in the caller's list
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # shared, [1, kv_heads, P, D]
    trunk: dict[int, torch.Tensor] = field(default_factory=dict)  # layer k -> unsteered input of layer k [B, 1, H]

    def full_kv(self, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Prefix + body cache for this batch (the prefix is stored once, expanded here). Layers ``1..skip-1``
        keep their body only: a pass from layer ``skip`` never reads them (layer 0 gives the cache length)."""
        if not self.prefix_kv:
            return self.kv
        b = self.last_ids.shape[0]
        return [(torch.cat([pk.expand(b, -1, -1, -1), k], 2), torch.cat([pv.expand(b, -1, -1, -1), v], 2))
                if not 0 < i < skip else (k, v)
                for i, ((pk, pv), (k, v)) in enumerate(zip(self.prefix_kv, self.kv, strict=False))]

    def select(self, rows: torch.Tensor, index: torch.Tensor) -> EncodedBatch:
        """Rows ``rows`` of this batch, numbered ``index`` in the new caller's list."""
        return replace(self, kv=[(k[rows], v[rows]) for k, v in self.kv], last_ids=self.last_ids[rows],
                       mask=self.mask[rows], positions=self.positions[rows], index=index,
                       trunk={k: t[rows] for k, t in self.trunk.items()})


@dataclass
class EncodedPrompts:
    """Prompts run up to (not including) their last token; the shared prefix's cache is kept once."""

    batches: list[EncodedBatch]
    n: int

    def select(self, positions: Sequence[int]) -> EncodedPrompts:
        """The prompts at ``positions`` of the caller's list, in that order, without re-running anything."""
        where = {p: j for j, p in enumerate(positions)}
        if len(where) != len(positions) or not all(0 <= p < self.n for p in where):
            raise ValueError(f"positions must be distinct and in 0..{self.n - 1}")
        batches = []
        for b in self.batches:
            rows = [r for r, i in enumerate(b.index.tolist()) if i in where]
            if rows:
                batches.append(b.select(torch.tensor(rows), torch.tensor([where[int(b.index[r])] for r in rows])))
        return EncodedPrompts(batches, len(positions))


def _kv_pairs(cache: Cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # after a forward each layer holds its keys and values (transformers types layers as of any kind, maybe unset)
    layers = cast("list[CacheLayerMixin]", cache.layers)
    return [(cast(torch.Tensor, layer.keys), cast(torch.Tensor, layer.values)) for layer in layers]


def new_cache(model: PreTrainedModel, kv: Sequence[tuple[torch.Tensor, torch.Tensor]] | None) -> DynamicCache:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(kv) if kv else None, config=model.config)


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        tok = first[i]
        if any(s[i] != tok for s in seqs):
            return i
    return n


@torch.no_grad()
def encode_prompts(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, batch_size: int = 32,
    prefix_cache: bool = True, progress: bool = False, token_budget: int = 8192,
) -> EncodedPrompts:
    """Run every prompt but its last token; see the module docstring.

    Batches hold at most ``batch_size`` rows and about ``token_budget`` cached positions
    (prefix included), which bounds memory when a long system prompt is shared.
    """
    seqs = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if any(len(s) < 2 for s in seqs):
        raise ValueError("every prompt needs at least two tokens")
    device = model.device
    # a shared prefix, leaving every prompt >= 1 body token and its last token
    p = min(_common_prefix(seqs), min(len(s) for s in seqs) - 2) if prefix_cache and len(seqs) > 1 else 0
    prefix_kv = None
    if p > 0:
        out = model(torch.tensor([seqs[0][:p]], device=device), past_key_values=new_cache(model, None), use_cache=True)
        prefix_kv = _kv_pairs(out.past_key_values)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths batch together: less padding
    batches = []
    batch_size = max(1, min(batch_size, token_budget // max(len(s) for s in seqs)))
    starts = range(0, len(order), batch_size)
    for b0 in tqdm(starts, desc="encoding prompts", disable=not progress, leave=False):
        rows = order[b0 : b0 + batch_size]
        bodies = [seqs[i][p:-1] for i in rows]
        width = max(len(b) for b in bodies)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(b)) + b for b in bodies], device=device)
        body_mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in bodies], device=device)
        positions = (p + body_mask.cumsum(1) - 1).clamp(min=0)
        mask = torch.cat([torch.ones(len(rows), p, dtype=body_mask.dtype, device=device), body_mask], 1)
        kv = ([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in prefix_kv]
              if prefix_kv is not None else None)  # None exactly when p == 0
        out = model(ids, attention_mask=mask, position_ids=positions, past_key_values=new_cache(model, kv),
                    use_cache=True, logits_to_keep=1)
        body_kv = [(k[:, :, p:].clone(), v[:, :, p:].clone()) for k, v in _kv_pairs(out.past_key_values)]
        batches.append(
            EncodedBatch(
                kv=body_kv,
                prefix_kv=prefix_kv,
                last_ids=torch.tensor([[seqs[i][-1]] for i in rows], device=device),
                mask=torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], 1),
                positions=torch.tensor([[len(seqs[i]) - 1] for i in rows], device=device),
                index=torch.tensor(rows),
            )
        )
    return EncodedPrompts(batches, len(seqs))


class _PassThrough(torch.nn.Module):
    """Stands in for a decoder layer below ``from_layer``: its output at the answer position is already known."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


@contextmanager
def _trunk(model: PreTrainedModel, layer: int, batch: EncodedBatch) -> Iterator[int]:
    """From layer ``layer`` up only, starting from the batch's kept input to it; or, when it is not kept yet,
    a normal pass that keeps it."""
    layers = decoder_layers(model)
    known = batch.trunk.get(layer)
    if known is None:
        def keep(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            batch.trunk[layer] = hidden.detach().clone()

        handle = layers[layer].register_forward_pre_hook(keep, with_kwargs=True)
        try:
            yield 0
        finally:
            handle.remove()
        return

    def swap(module: torch.nn.Module, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args:
            return (known.to(args[0].dtype),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": known.to(kwargs["hidden_states"].dtype)}

    below = [layers[i] for i in range(layer)]
    handle = layers[layer].register_forward_pre_hook(swap, with_kwargs=True)
    try:
        for i in range(layer):
            layers[i] = _PassThrough()
        yield layer
    finally:
        for i, module in enumerate(below):
            layers[i] = module
        handle.remove()


def last_step(model: PreTrainedModel, batch: EncodedBatch, letter_ids: Sequence[int],
              from_layer: int = 0) -> torch.Tensor:
    """The last token of one encoded batch: ``[B, 6]`` (five letter logits, then the vocabulary logsumexp); a batch
    of ``T`` answer positions per row (:func:`pas.score.many.offset_logits_many`) gives ``[B * T, 6]``, row-major.

    ``from_layer`` k > 0: nothing hooked into the model acts below layer k (the caller's promise), so the
    answer position's input to layer k is kept on the batch and later calls run layers k.. only.
    """
    if from_layer > 0:
        with _trunk(model, from_layer, batch) as skip:
            return _last_step(model, batch, letter_ids, skip)
    return _last_step(model, batch, letter_ids, 0)


def _last_step(model: PreTrainedModel, batch: EncodedBatch, letter_ids: Sequence[int], skip: int) -> torch.Tensor:
    out = model(batch.last_ids, attention_mask=batch.mask, position_ids=batch.positions,
                past_key_values=new_cache(model, batch.full_kv(skip)), use_cache=True,
                logits_to_keep=batch.last_ids.shape[1])
    logits = out.logits.flatten(0, 1).float()
    idx = torch.tensor(list(letter_ids), device=logits.device)
    return torch.cat([logits[:, idx], torch.logsumexp(logits, -1, keepdim=True)], 1)


def final_logits(model: PreTrainedModel, encoded: EncodedPrompts, letter_ids: Sequence[int],
                 from_layer: int = 0) -> torch.Tensor:
    """Run the last token of every prompt: ``[N, 6]`` in the caller's order (see :func:`last_step`).

    Differentiable with respect to anything hooked into the model (used to learn offsets).
    """
    stacked = torch.cat([last_step(model, b, letter_ids, from_layer) for b in encoded.batches])
    order = torch.cat([b.index for b in encoded.batches])
    result = torch.empty_like(stacked)
    result[order.to(stacked.device)] = stacked
    return result


@torch.no_grad()
def keep_trunk(model: PreTrainedModel, encoded: EncodedPrompts, letter_ids: Sequence[int],
               layer: int) -> EncodedPrompts:
    """``encoded`` with every batch's unsteered input to ``layer`` kept (one unsteered pass where missing), so
    that selections of it (:meth:`EncodedPrompts.select`) share it. Call it with nothing hooked into the model."""
    for b in encoded.batches:
        if layer > 0 and layer not in b.trunk:
            last_step(model, b, letter_ids, layer)
    return encoded


def to_distribution(logits6: torch.Tensor) -> OptionDistribution:
    """Letter logits + log-partition -> :class:`OptionDistribution`."""
    letters, logz = logits6[:, :5].double(), logits6[:, 5].double()
    probs = torch.softmax(letters, -1)
    mass = torch.exp(torch.logsumexp(letters, -1) - logz)
    return OptionDistribution(probs.detach().cpu().numpy(), mass.detach().cpu().numpy())


def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    steering: SteeringVector | None = None,
    batch_size: int = 32,
    prefix_cache: bool = True,
    progress: bool = False,
    letter_ids: Sequence[int] | None = None,
) -> OptionDistribution:
    """Score rendered prompts, optionally steered (applied as :func:`pas.steer.position.position_rule` says).

    ``letter_ids``: token ids of the letters for answer values 5..1 (default A..E, the standard order).
    """
    from pas.steer.position import steer

    letter_ids = letter_token_ids(tokenizer) if letter_ids is None else letter_ids
    with torch.no_grad():
        with steer(model, steering, "prompt"):
            enc = encode_prompts(model, tokenizer, texts, batch_size=batch_size, prefix_cache=prefix_cache,
                                 progress=progress)
        with steer(model, steering, "answer"):
            return to_distribution(final_logits(model, enc, letter_ids))


class ItemScorer:
    """Scores PAPI items for one model and template; remembers body encodings to reuse them.

    Encodings of prompts without a subject-specific system prompt are the same for every
    subject (and for any "last"-mode steering), so they are computed once per run.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bank: ItemBank,
                 template: PromptTemplate | None = None, *, batch_size: int = 32, progress: bool = False) -> None:
        self.model, self.tokenizer, self.bank = model, tokenizer, bank
        self.template = template or PromptTemplate()
        self.batch_size, self.progress = batch_size, progress
        self.letter_ids = self.template.letter_ids(tokenizer)  # for answer values 5..1
        self._encodings: dict[tuple[tuple[int, ...], str | None], EncodedPrompts] = {}
        self._prompted: dict[tuple[tuple[int, ...], str], OptionDistribution] = {}
        self._variants: dict[PromptTemplate, ItemScorer] = {}
        self._banks: dict[str, ItemScorer] = {}
        self._last_system: tuple[tuple[tuple[int, ...], str | None], EncodedPrompts] | None = None

    def variant(self, template: PromptTemplate) -> ItemScorer:
        """A scorer for the same model and items under another template (its own encodings, made once)."""
        if template == self.template:
            return self
        if template not in self._variants:
            self._variants[template] = ItemScorer(self.model, self.tokenizer, self.bank, template,
                                                  batch_size=self.batch_size, progress=self.progress)
        return self._variants[template]

    def for_bank(self, bank: ItemBank) -> ItemScorer:
        """A scorer for the same model and template over other statements (e.g. a transfer set), made once."""
        key = bank.fingerprint()
        if key not in self._banks:
            self._banks[key] = ItemScorer(self.model, self.tokenizer, bank, self.template,
                                          batch_size=self.batch_size, progress=self.progress)
        return self._banks[key]

    def reversed(self) -> ItemScorer:
        """A scorer for the same model and items with the options listed in reverse (its own encodings, made once)."""
        return self.variant(self.template.reversed())

    def texts(self, ids: Sequence[int], system: str | None = None) -> list[str]:
        return self.template.render_items(self.tokenizer, self.bank, ids, system)

    def encode(self, ids: Sequence[int], system: str | None = None) -> EncodedPrompts:
        key = (tuple(ids), system)
        if key in self._encodings:
            return self._encodings[key]
        if self._last_system is not None and self._last_system[0] == key:
            return self._last_system[1]
        enc = encode_prompts(self.model, self.tokenizer, self.texts(ids, system), batch_size=self.batch_size,
                             progress=self.progress)
        if system is None:  # shared by all subjects: keep
            self._encodings[key] = enc
        else:  # one person's prompt: keep only the latest (a persona is read twice in a row, then never again)
            self._last_system = (key, enc)
        return enc

    def score(self, ids: Sequence[int], system: str | None = None,
              steering: SteeringVector | None = None) -> OptionDistribution:
        """Option distributions for items ``ids``; ``steering`` a :class:`SteeringVector` or None.

        A vector that steers the prompt body (:func:`pas.steer.position.position_rule`) needs fresh encodings;
        otherwise the remembered unsteered ones are reused and only the answer token re-runs.
        """
        from pas.steer.position import position_rule

        if steering is not None and position_rule(steering.positions, "prompt").steer:
            return score_texts(self.model, self.tokenizer, self.texts(ids, system), steering=steering,
                               batch_size=self.batch_size, progress=self.progress, letter_ids=self.letter_ids)
        if steering is None and system is not None:  # a prompted model's answers: the same every time it is asked
            key = (tuple(ids), system)
            if key not in self._prompted:
                self._prompted[key] = self._score(ids, system, None)
            return self._prompted[key]
        return self._score(ids, system, steering)

    def _score(self, ids: Sequence[int], system: str | None, steering: SteeringVector | None) -> OptionDistribution:
        from pas.steer.position import steer

        with torch.no_grad():
            enc = self.encode(ids, system)
            first = 0 if steering is None else steering.first_layer
            with steer(self.model, steering, "answer"):
                return to_distribution(final_logits(self.model, enc, self.letter_ids, first))
