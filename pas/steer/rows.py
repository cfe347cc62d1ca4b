"""Per-row steering: every row of a batch carries its own steering vector (or none), in one forward.

Results equal running each row alone with its own vector (tested). Rows are steered through hooks
(constant or gated alike) or, for constant vectors, through exact per-row biases after the output
projections (:func:`bias_table`). :func:`generate_many` gives greedy replies for many people at once;
scoring questionnaires for many people is :func:`pas.score.many.score_many`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch

from pas.core.arch import layout
from pas.steer.fold import output_shift
from pas.steer.hooks import SteeringHandle, add_gated, add_offsets, add_row_biases
from pas.steer.position import position_rule
from pas.steer.vector import SteeringVector

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pas.core.models import CausalLM


def offset_table(model: PreTrainedModel, vectors: Sequence[SteeringVector | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[S, L, H*D]`` offsets of the given vectors and each vector's row index (-1 for None)."""
    lay = layout(model)
    real = [v for v in vectors if v is not None]
    for v in real:
        v.check_model(model)
    table = (torch.stack([v.flat_offsets() for v in real]) if real
             else torch.zeros(1, lay.n_layers, lay.attn_width)).to(model.device, model.dtype)
    return table, vector_rows(vectors, model.device)


def row_steering(model: PreTrainedModel, vectors: Sequence[SteeringVector | None], rows: torch.Tensor, *,
                 start: int | None = None, last_only: bool = False) -> SteeringHandle:
    """Hooks steering batch row ``b`` with ``vectors[rows[b]]`` (``-1``: unsteered), constant or gated alike.

    With any gated vector every vector goes through the gated hooks (a constant offset is a gate
    with ``w = 0, b = 1``); otherwise the plain per-row offsets are added.
    """
    real = [v for v in vectors if v is not None]
    if not any(v.kind == "gated" for v in real):
        table, _ = offset_table(model, vectors)
        return add_offsets(model, table, rows=rows, start=start, last_only=last_only)
    for v in real:
        v.check_model(model)
    tables = zip(*(v.gated_tables() for v in real), strict=True)  # four tables per vector
    w, b, o, lim = (torch.stack(t).to(model.device, model.dtype) for t in tables)
    return add_gated(model, w, b, o, lim, rows=rows, start=start, last_only=last_only)


def vector_rows(vectors: Sequence[SteeringVector | None], device: torch.device | str) -> torch.Tensor:
    """Each vector's row in the table of the non-None vectors (-1 for None)."""
    index, n = [], 0
    for v in vectors:
        index.append(-1 if v is None else n)
        n += v is not None
    return torch.tensor(index, device=device)


def bias_table(model: PreTrainedModel, vectors: Sequence[SteeringVector]) -> torch.Tensor:
    """Exact ``W_o @ delta`` per vector and layer (fp32 arithmetic, :func:`pas.steer.fold.output_shift`):
    ``[S, L, hidden]`` for folded per-row steering."""
    for v in vectors:
        v.check_model(model)
    return torch.stack([output_shift(model, v.offsets) for v in vectors]).to(model.dtype)


@torch.no_grad()
def generate_many(model: CausalLM, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  vectors: Sequence[SteeringVector | None], *, max_new_tokens: int = 64,
                  folded: bool = False) -> list[str]:
    """Greedy replies, one per prompt, each row steered by its own vector (None = unsteered).

    Each row is steered as :func:`pas.steer.position.position_rule` says for phase "generate", like
    :func:`pas.steer.chat.generate`; where that is every position (or with ``folded=True``) the
    rows (constant vectors only) are steered through exact per-row biases after the output projections.
    """
    if len(prompts) != len(vectors):
        raise ValueError(f"{len(prompts)} prompts but {len(vectors)} vectors")
    modes = {v.positions for v in vectors if v is not None}
    if len(modes) > 1:
        raise ValueError("mixing 'last' and 'all' vectors in one batch is not supported")
    # tokenize=False gives the text; transformers types the result as every shape the call can return
    texts = [cast(str, tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                     add_generation_prompt=True))
             for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    tokenizer.padding_side = side
    rule = position_rule(modes.pop() if modes else "last", "generate")
    gated = any(v is not None and v.kind == "gated" for v in vectors)
    if gated and folded:
        raise ValueError("gated vectors cannot be folded into biases (their offsets depend on activations)")
    if not gated and (folded or (rule.start is None and not rule.last_only)):
        real = [v for v in vectors if v is not None]
        table = bias_table(model, real) if real else torch.zeros(1, layout(model).n_layers, layout(model).hidden_size)
        handle = add_row_biases(model, table.to(model.device), vector_rows(vectors, model.device))
    else:
        handle = row_steering(model, vectors, vector_rows(vectors, model.device), start=rule.start,
                              last_only=rule.last_only)
    with handle:
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    # one sequence decodes to one text; transformers types the result as a text or a batch of them
    return [cast(str, tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True)).strip()
            for row in out]
