"""Choosing the steering strength and learning the offsets (stage 5), on known answers only.

The subject's known (IPIP-NEO-120) items are split into *fit* and *validation*
parts, balanced across the five domains. Strength alpha is found by a 1-D search
(coarse grid, then golden-section refinement in the best bracket) minimising the
validation composite; the offsets are then learned by gradient descent through the
steered model on the fit items, early-stopped on the validation items. The 180
test items are never touched here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from pas.core.data import DOMAINS, ItemBank, Subject
from pas.score.metric import Objective, objective
from pas.score.prompts import LETTER_VALUES
from pas.score.scorer import EncodedPrompts, final_logits, to_distribution
from pas.steer.hooks import add_offsets, dense_offsets

if TYPE_CHECKING:
    from transformers import PreTrainedModel

GOLDEN = (math.sqrt(5) - 1) / 2


def split_known(bank: ItemBank, responses: Mapping[int, int], val_fraction: float,
                seed: int) -> tuple[list[int], list[int]]:
    """Seeded fit/validation split of the answered known items, the same fraction in every domain."""
    rng = np.random.default_rng(seed)
    by_id = bank.by_id
    fit, val = [], []
    for dom in DOMAINS:
        ids = [i for i in bank.train_ids if i in responses and by_id[i].domain == dom]
        rng.shuffle(ids)
        n_val = int(round(len(ids) * val_fraction)) if len(ids) > 1 else 0
        val += ids[:n_val]
        fit += ids[n_val:]
    return sorted(fit), sorted(val)


@dataclass
class SteeredItems:
    """Encoded items of one subject plus what is needed to score offsets on them."""

    model: PreTrainedModel
    bank: ItemBank
    subject: Subject
    ids: tuple[int, ...]
    encoded: EncodedPrompts
    letter_ids: list[int]
    from_layer: int = 0  # the offsets never touch a layer below this one (see pas.score.scorer.last_step)

    def logits(self, offsets: torch.Tensor) -> torch.Tensor:
        """Letter logits ``[N, 6]`` with ``offsets [L, H*D]`` on the answer position (differentiable)."""
        with add_offsets(self.model, offsets.to(self.model.dtype)):
            return final_logits(self.model, self.encoded, self.letter_ids, self.from_layer)

    def objective(self, offsets: torch.Tensor) -> Objective:
        """:func:`pas.score.metric.objective` of these items with ``offsets`` applied."""
        with torch.no_grad():
            return objective(self.bank, self.subject, self.ids, to_distribution(self.logits(offsets)))


AlphaTrace = dict[float, tuple[float, float, float]]  # {alpha: (composite, expected, letter mass)}
AlphaSearch = Generator[list[float], list[Objective], tuple[float, AlphaTrace]]


def alpha_search(grid: Sequence[float], refine_steps: int) -> AlphaSearch:
    """The strength search as steps: coarse grid, then golden-section refinement inside the best grid point's
    bracket. Yields the strengths it needs next (never one already seen), is sent their objectives, and returns
    ``(best alpha, trace {alpha: (composite, expected, letter mass)})``.

    :func:`search_alpha` drives one search; :func:`search_alpha_many` drives many in lockstep, so that every
    step's strengths of many people run as the rows of one batch.
    """
    seen: dict[float, Objective] = {}

    def f(a: float) -> tuple[bool, float, float]:
        return seen[a].key

    def need(*alphas: float) -> list[float]:
        return [a for a in dict.fromkeys(alphas) if a not in seen]

    grid = sorted(set(float(g) for g in grid))
    seen.update(zip(grid, (yield grid), strict=True))
    best = min(grid, key=f)
    i = grid.index(best)
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    if hi > lo:
        x1, x2 = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
        for _ in range(refine_steps):
            if todo := need(x1, x2):
                seen.update(zip(todo, (yield todo), strict=True))
            if f(x1) <= f(x2):
                hi, x2 = x2, x1
                x1 = hi - GOLDEN * (hi - lo)
            else:
                lo, x1 = x1, x2
                x2 = lo + GOLDEN * (hi - lo)
    best = min(seen, key=lambda a: (seen[a].key, a))
    return best, {a: (o.composite, o.expected, o.letter_mass) for a, o in sorted(seen.items())}


def search_alpha(evaluate: Callable[[float], Objective], grid: Sequence[float], refine_steps: int,
                 progress: bool = False) -> tuple[float, AlphaTrace]:
    """:func:`alpha_search` with ``evaluate(alpha)`` answering each strength it asks for, one at a time.

    Returns the best alpha seen and a trace {alpha: (composite, expected, letter mass)}.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(set(grid)) + refine_steps + 2, desc="strength search", disable=not progress, leave=False)

    def one_by_one(alphas: list[float]) -> list[Objective]:
        out = []
        for a in alphas:
            out.append(evaluate(a))
            bar.update()
            bar.set_postfix(alpha=f"{a:.3g}", composite=f"{out[-1].composite:.2f}")
        return out

    result = search_alpha_many(lambda asked: [one_by_one(alphas) for alphas in asked], 1, grid, refine_steps)[0]
    bar.close()
    return result


def search_alpha_many(evaluate: Callable[[list[list[float]]], list[list[Objective]]], count: int,
                      grid: Sequence[float], refine_steps: int) -> list[tuple[float, AlphaTrace]]:
    """``count`` strength searches (:func:`alpha_search`) in lockstep: each round ``evaluate`` gets the strengths
    every unfinished search asks for (``[]`` for a finished one) and answers each with its objectives. Each
    search's result equals :func:`search_alpha` with the same objectives."""
    searches = [alpha_search(grid, refine_steps) for _ in range(count)]
    asked: list[list[float] | None] = [next(s) for s in searches]
    results: list[tuple[float, AlphaTrace] | None] = [None] * count
    while any(a is not None for a in asked):
        answers = evaluate([a or [] for a in asked])
        for p, (search, alphas) in enumerate(zip(searches, asked, strict=True)):
            if alphas is None:
                continue
            try:
                asked[p] = search.send(answers[p])
            except StopIteration as done:
                asked[p], results[p] = None, done.value
    return [r for r in results if r is not None]


def expected_abs_error(logits6: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over items of E|answer - target| under the 5-way letter distribution.

    A smooth surrogate of the scored |argmax answer - target|: it is zero only when all
    mass sits on the subject's answer, and it prefers near misses to far ones.
    """
    values = torch.tensor(LETTER_VALUES, dtype=logits6.dtype, device=logits6.device)
    probs = torch.softmax(logits6[:, :5], -1)
    return (probs * (values[None, :] - targets[:, None]).abs()).sum(-1).mean()


@dataclass
class LearnResult:
    vectors: torch.Tensor  # [K, D]
    best_step: int
    trace: list[tuple[int, float, float, float]]  # (step, train loss, val composite, val expected)
    fit_loss_start: float
    fit_loss_end: float


def learn_offsets(fit: SteeredItems, val: SteeredItems, heads: Sequence[tuple[int, int]], init: torch.Tensor,
                  sigmas: torch.Tensor, *, steps: int, lr: float, penalty: float, patience: int, eval_every: int,
                  seed: int, progress: bool = False) -> LearnResult:
    """Gradient descent on per-head offsets (in units of each head's sigma), early-stopped on ``val``."""
    from tqdm.auto import tqdm

    from pas.core.arch import layout

    torch.manual_seed(seed)
    lay = layout(fit.model)
    scale = sigmas.clamp_min(1e-6)[:, None]
    w0 = (init / scale).detach()
    w = torch.nn.Parameter(w0.clone())
    opt = torch.optim.Adam([w], lr=lr)
    targets = torch.tensor([float(fit.subject.responses[i]) for i in fit.ids])

    def dense(weights: torch.Tensor) -> torch.Tensor:
        return dense_offsets(heads, weights * scale, lay.n_layers, lay.n_heads, lay.head_dim)

    best_key, best_w, best_step, bad = val.objective(dense(w0)).key, w0.clone(), 0, 0
    trace, first_loss, loss_value = [], None, float("nan")
    bar = tqdm(range(1, steps + 1), desc="learning offsets", disable=not progress, leave=False)
    for step in bar:
        opt.zero_grad()
        fit_loss = expected_abs_error(fit.logits(dense(w)), targets)
        loss = fit_loss + penalty * ((w - w0) ** 2).sum() / len(heads)
        loss.backward()
        opt.step()
        loss_value = float(fit_loss.detach())
        first_loss = loss_value if first_loss is None else first_loss
        if step % eval_every == 0 or step == steps:
            obj = val.objective(dense(w.detach()))
            trace.append((step, loss_value, obj.composite, obj.expected))
            if obj.key < best_key:
                best_key, best_w, best_step, bad = obj.key, w.detach().clone(), step, 0
            else:
                bad += 1
                if bad >= patience:
                    break
    with torch.no_grad():
        end_loss = float(expected_abs_error(fit.logits(dense(best_w)), targets))
    return LearnResult((best_w * scale).detach(), best_step, trace, first_loss or end_loss, end_loss)
