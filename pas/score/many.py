"""Many people in one batch: every row of a batch carries its own steering vector (or none).

One forward per step serves all rows; results equal running each row alone with its
own vector (tested). Scoring reuses the subject-independent body encodings, so
answering the questionnaire for S people costs one final-token pass over S x items rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pas.core.arch import layout, o_proj_modules, o_proj_weight
from pas.steer.hooks import add_gated, add_offsets, add_row_biases
from pas.score.scorer import EncodedPrompts, ItemScorer, OptionScores, _Batch, keep_trunk, last_step, to_scores
from pas.steer.vector import SteeringVector, gate


def _offset_table(model, vectors: Sequence[SteeringVector | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[S, L, H*D]`` offsets of the given vectors and each vector's row index (-1 for None)."""
    lay = layout(model)
    real = [v for v in vectors if v is not None]
    for v in real:
        v.check_model(model)
    table = (torch.stack([v.flat_offsets() for v in real]) if real
             else torch.zeros(1, lay.n_layers, lay.attn_width)).to(model.device, model.dtype)
    return table, _vector_rows(vectors, model.device)


def row_steering(model, vectors: Sequence[SteeringVector | None], rows: torch.Tensor, *, start: int | None = None,
                 last_only: bool = False):
    """Hooks steering batch row ``b`` with ``vectors[rows[b]]`` (``-1``: unsteered), constant or gated alike.

    With any gated vector every vector goes through the gated hooks (a constant offset is a gate
    with ``w = 0, b = 1``); otherwise the plain per-row offsets are added.
    """
    real = [v for v in vectors if v is not None]
    if not any(v.kind == "gated" for v in real):
        table, _ = _offset_table(model, vectors)
        return add_offsets(model, table, rows=rows, start=start, last_only=last_only)
    for v in real:
        v.check_model(model)
    w, b, o, lim = (torch.stack(t).to(model.device, model.dtype) for t in zip(*(v.gated_tables() for v in real)))
    return add_gated(model, w, b, o, lim, rows=rows, start=start, last_only=last_only)


def _vector_rows(vectors: Sequence[SteeringVector | None], device) -> torch.Tensor:
    """Each vector's row in the table of the non-None vectors (-1 for None)."""
    index, n = [], 0
    for v in vectors:
        index.append(-1 if v is None else n)
        n += v is not None
    return torch.tensor(index, device=device)


def bias_table(model, vectors: Sequence[SteeringVector]) -> torch.Tensor:
    """Exact ``W_o @ delta`` per vector and layer (fp32 arithmetic): ``[S, L, hidden]`` for folded per-row steering."""
    lay = layout(model)
    weights = [o_proj_weight(p, lay.conv1d).float() for p in o_proj_modules(model)]
    rows = []
    for v in vectors:
        v.check_model(model)
        off = v.flat_offsets(model.device).float()
        rows.append(torch.stack([w @ off[layer] for layer, w in enumerate(weights)]))
    return torch.stack(rows).to(model.dtype)


def _repeat(batch: _Batch, s: int, skip: int = 0) -> _Batch:
    """``batch`` ``s`` times over; the body caches of layers ``1..skip-1`` are left empty (a pass from layer
    ``skip`` never reads them), the kept trunk inputs repeat with the rows."""
    def body(i: int, t: torch.Tensor) -> torch.Tensor:
        return t.new_empty(t.shape[0] * s, *t.shape[1:2], 0, *t.shape[3:]) if 0 < i < skip else t.repeat(s, 1, 1, 1)

    return _Batch(
        kv=[(body(i, k), body(i, v)) for i, (k, v) in enumerate(batch.kv)],
        last_ids=batch.last_ids.repeat(s, 1), mask=batch.mask.repeat(s, 1), positions=batch.positions.repeat(s, 1),
        index=batch.index.repeat(s), prefix_kv=batch.prefix_kv,
        trunk={k: t.repeat(s, 1, 1) for k, t in batch.trunk.items()},
    )


@torch.no_grad()
def score_many(scorer: ItemScorer, ids: Sequence[int], vectors: Sequence[SteeringVector | None],
               system: str | None = None, max_rows: int = 256) -> list[OptionScores]:
    """Questionnaire scores for items ``ids`` under each vector, all people batched together.

    Vectors must be "last"-mode (the answer position), as :func:`pas.align_to_subject` makes them;
    constant and gated vectors may be mixed.
    """
    logits = encoded_logits_many(scorer.model, scorer.encode(ids, system), scorer.letter_ids, vectors, max_rows)
    return [to_scores(one) for one in logits]


@torch.no_grad()
def encoded_logits_many(model, enc: EncodedPrompts, letter_ids: Sequence[int],
                        vectors: Sequence[SteeringVector | None], max_rows: int = 256) -> torch.Tensor:
    """``[S, N, 6]``: :func:`pas.score.scorer.final_logits` of encoded prompts under each of ``S`` vectors at once.

    Only the layers from the vectors' lowest steered layer up run for every vector; the input to
    that layer is computed once, unsteered (:func:`pas.score.scorer.keep_trunk`).
    """
    if any(v is not None and gate(v.positions, "prompt").steer for v in vectors):
        raise ValueError("score_many reuses unsteered prompt encodings; vectors that steer the whole prompt "
                         "(positions='all') must be scored one by one with ItemScorer.score")
    real = [v for v in vectors if v is not None]
    first = min((v.first_layer for v in real), default=0)  # unsteered rows are unchanged below it too
    keep_trunk(model, enc, letter_ids, first)
    index = _vector_rows(vectors, model.device)
    out = torch.empty(len(vectors), enc.n, 6)
    for b in enc.batches:
        per = max(1, max_rows // len(b.index))  # people per pass
        for p0 in range(0, len(vectors), per):
            people = index[p0 : p0 + per]
            with row_steering(model, vectors, people.repeat_interleave(len(b.index))):
                logits = last_step(model, _repeat(b, len(people), first), letter_ids, first)
            out[p0 : p0 + len(people), b.index] = logits.reshape(len(people), len(b.index), 6).float().cpu()
    return out


@torch.no_grad()
def generate_many(model, tokenizer, prompts: Sequence[str], vectors: Sequence[SteeringVector | None], *,
                  max_new_tokens: int = 64, folded: bool = False) -> list[str]:
    """Greedy replies, one per prompt, each row steered by its own vector (None = unsteered).

    Each row is steered as :func:`pas.steer.vector.gate` says for phase "generate", like
    :func:`pas.steer.chat.generate`; where that is every position (or with ``folded=True``) the
    rows (constant vectors only) are steered through exact per-row biases after the output projections.
    """
    if len(prompts) != len(vectors):
        raise ValueError(f"{len(prompts)} prompts but {len(vectors)} vectors")
    modes = {v.positions for v in vectors if v is not None}
    if len(modes) > 1:
        raise ValueError("mixing 'last' and 'all' vectors in one batch is not supported")
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    tokenizer.padding_side = side
    rule = gate(modes.pop() if modes else "last", "generate")
    gated = any(v is not None and v.kind == "gated" for v in vectors)
    if gated and folded:
        raise ValueError("gated vectors cannot be folded into biases (their offsets depend on activations)")
    if not gated and (folded or (rule.start is None and not rule.last_only)):
        real = [v for v in vectors if v is not None]
        table = bias_table(model, real) if real else torch.zeros(1, layout(model).n_layers, layout(model).hidden_size)
        handle = add_row_biases(model, table.to(model.device), _vector_rows(vectors, model.device))
    else:
        handle = row_steering(model, vectors, _vector_rows(vectors, model.device), start=rule.start,
                              last_only=rule.last_only)
    with handle:
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in out]
