"""Questionnaires for many people in one batch: every row carries its own steering vector (or none).

One forward per step serves all rows (:mod:`pas.steer.rows`); results equal scoring each person
alone (tested). Scoring reuses the subject-independent body encodings, so answering the
questionnaire for S people costs one final-token pass over S x items rows. Constant offsets given as a
table (:func:`offset_logits_many`) ride as S answer positions of each prompt that share its cache, which
is then neither copied nor repeated per person.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from pas.score.scorer import (
    EncodedBatch,
    EncodedPrompts,
    ItemScorer,
    OptionDistribution,
    keep_trunk,
    last_step,
    to_distribution,
)
from pas.steer.hooks import add_offsets
from pas.steer.position import position_rule
from pas.steer.rows import row_steering, vector_rows
from pas.steer.vector import SteeringVector

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _repeat(batch: EncodedBatch, s: int, skip: int = 0) -> EncodedBatch:
    """``batch`` ``s`` times over; the body caches of layers ``1..skip-1`` are left empty (a pass from layer
    ``skip`` never reads them), the kept trunk inputs repeat with the rows."""
    def body(i: int, t: torch.Tensor) -> torch.Tensor:
        return t.new_empty(t.shape[0] * s, *t.shape[1:2], 0, *t.shape[3:]) if 0 < i < skip else t.repeat(s, 1, 1, 1)

    return EncodedBatch(
        kv=[(body(i, k), body(i, v)) for i, (k, v) in enumerate(batch.kv)],
        last_ids=batch.last_ids.repeat(s, 1), mask=batch.mask.repeat(s, 1), positions=batch.positions.repeat(s, 1),
        index=batch.index.repeat(s), prefix_kv=batch.prefix_kv,
        trunk={k: t.repeat(s, 1, 1) for k, t in batch.trunk.items()},
    )


@torch.no_grad()
def score_many(scorer: ItemScorer, ids: Sequence[int], vectors: Sequence[SteeringVector | None],
               system: str | None = None, max_rows: int = 256) -> list[OptionDistribution]:
    """Questionnaire scores for items ``ids`` under each vector, all people batched together.

    Vectors must be "last"-mode (the answer position), as :func:`pas.align_to_subject` makes them;
    constant and gated vectors may be mixed.
    """
    logits = encoded_logits_many(scorer.model, scorer.encode(ids, system), scorer.letter_ids, vectors, max_rows)
    return [to_distribution(one) for one in logits]


@torch.no_grad()
def encoded_logits_many(model: PreTrainedModel, enc: EncodedPrompts, letter_ids: Sequence[int],
                        vectors: Sequence[SteeringVector | None], max_rows: int = 256) -> torch.Tensor:
    """``[S, N, 6]``: :func:`pas.score.scorer.final_logits` of encoded prompts under each of ``S`` vectors at once.

    Only the layers from the vectors' lowest steered layer up run for every vector; the input to
    that layer is computed once, unsteered (:func:`pas.score.scorer.keep_trunk`).
    """
    if any(v is not None and position_rule(v.positions, "prompt").steer for v in vectors):
        raise ValueError("score_many reuses unsteered prompt encodings; vectors that steer the whole prompt "
                         "(positions='all') must be scored one by one with ItemScorer.score")
    real = [v for v in vectors if v is not None]
    first = min((v.first_layer for v in real), default=0)  # unsteered rows are unchanged below it too
    keep_trunk(model, enc, letter_ids, first)
    index = vector_rows(vectors, model.device)
    out = torch.empty(len(vectors), enc.n, 6)
    for b in enc.batches:
        per = max(1, max_rows // len(b.index))  # people per pass
        for p0 in range(0, len(vectors), per):
            people = index[p0 : p0 + per]
            with row_steering(model, vectors, people.repeat_interleave(len(b.index))):
                logits = last_step(model, _repeat(b, len(people), first), letter_ids, first)
            out[p0 : p0 + len(people), b.index] = logits.reshape(len(people), len(b.index), 6).float().cpu()
    return out


def _queries(batch: EncodedBatch, count: int, dtype: torch.dtype) -> EncodedBatch:
    """``batch`` with ``count`` answer positions per prompt instead of one: the same token at the same position,
    all on the prompt's one cache, each seeing the prompt and itself only (an additive 4-D attention mask), so
    each computes what the prompt's answer position computes alone."""
    rows, device = batch.last_ids.shape[0], batch.last_ids.device
    prompt = batch.mask[:, :-1].bool()[:, None, None, :].expand(rows, 1, count, -1)
    itself = torch.eye(count, dtype=torch.bool, device=device).expand(rows, 1, count, count)
    seen = torch.cat([prompt, itself], -1)  # [B, 1, count, P + S + count]
    mask = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, torch.finfo(dtype).min)
    return replace(batch, last_ids=batch.last_ids.expand(rows, count), mask=mask,
                   positions=batch.positions.expand(rows, count),
                   trunk={k: t.expand(rows, count, t.shape[-1]).contiguous() for k, t in batch.trunk.items()})


@torch.no_grad()
def offset_logits_many(model: PreTrainedModel, enc: EncodedPrompts, letter_ids: Sequence[int], offsets: torch.Tensor,
                       from_layer: int = 0, max_rows: int = 512) -> torch.Tensor:
    """``[S, N, 6]``: :func:`pas.score.scorer.final_logits` of encoded prompts under each of ``S`` constant offsets
    ``offsets [S, L, H*D]`` at the answer position (what a "last"-mode vector applies), many at once.

    The offsets of one pass are answer positions of every prompt side by side (:func:`_queries`), so a pass
    costs what its rows' layers cost, not a copy of the cache per offset. ``from_layer``: no offset touches a
    layer below it; the input to it is computed once, unsteered (:func:`pas.score.scorer.keep_trunk`).
    ``max_rows``: prompts x offsets per pass (memory: the pass's logits over the vocabulary).
    """
    keep_trunk(model, enc, letter_ids, from_layer)
    table = offsets.to(model.device, model.dtype)
    out = torch.empty(len(table), enc.n, 6)
    for b in enc.batches:
        per = max(1, max_rows // len(b.index))  # offsets per pass
        for s0 in range(0, len(table), per):
            part = table[s0 : s0 + per]
            with add_offsets(model, part.transpose(0, 1)):  # [L, count, H*D]: one offset per answer position
                logits = last_step(model, _queries(b, len(part), model.dtype), letter_ids, from_layer)
            out[s0 : s0 + len(part), b.index] = logits.reshape(len(b.index), len(part), 6).transpose(0, 1).float().cpu()
    return out
