"""Gates: the per-head readouts that scale a gated vector's offsets, and their algebra.

Head ``h`` of a gated vector adds ``clamp(w_h . x_h + b_h, -l_h, l_h) * v_h`` to its own output
``x_h``: :class:`Gates` holds ``w`` (``weights [L, H, D]``), ``b`` (``bias [L, H]``) and the optional
limit ``l`` (``limit [L, H]``, ``>= 0``, ``inf`` = none). A constant offset is a gate with ``w = 0,
b = 1``. (Not to be confused with the position rule, :mod:`pas.steer.position`, which says which
*positions* a vector steers.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Gates:
    """Per-head gate readouts; shapes are checked against the offsets by the vector that holds them."""

    weights: torch.Tensor
    bias: torch.Tensor
    limit: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if tuple(self.bias.shape) != tuple(self.weights.shape[:2]):
            raise ValueError(f"gate_bias have shape {tuple(self.bias.shape)}, expected {tuple(self.weights.shape[:2])}")
        for name, tensor in (("gate_weights", self.weights), ("gate_bias", self.bias)):
            if not torch.isfinite(tensor).all():
                raise ValueError(f"steering {name} contain NaN or inf")
        if self.limit is not None:
            if tuple(self.limit.shape) != tuple(self.bias.shape):
                raise ValueError(f"gate_limit have shape {tuple(self.limit.shape)}, expected {tuple(self.bias.shape)}")
            if bool(torch.isnan(self.limit).any()) or bool((self.limit < 0).any()):
                raise ValueError("steering gate_limit must be >= 0 (inf = unlimited), without NaN")

    @classmethod
    def constant(cls, offsets: torch.Tensor) -> Gates:
        """The gates under which ``offsets [L, H, D]`` act as constant offsets: ``w = 0``, ``b = 1`` where steered."""
        return cls(torch.zeros_like(offsets), (offsets.abs().sum(-1) > 0).float())

    def limits(self) -> torch.Tensor:
        """``[L, H]`` limits, ``inf`` where none."""
        return self.limit if self.limit is not None else torch.full(self.bias.shape, float("inf"))

    def scaled(self, k: float) -> Gates:
        """Gates ``k`` times as strong (limits scale by ``|k|``; ``inf`` stays ``inf``)."""
        limit = None if self.limit is None else torch.where(torch.isinf(self.limit), self.limit, self.limit * abs(k))
        return Gates(self.weights * k, self.bias * k, limit)

    def recentred(self, shift: torch.Tensor) -> Gates:
        """Gates that read ``x + shift [L, H, D]`` as these read ``x``: the same gate value in a shifted context."""
        return dataclasses.replace(self, bias=self.bias - (self.weights * shift).sum(-1))


def gated_sum(a_offsets: torch.Tensor, a: Gates, b_offsets: torch.Tensor, b: Gates) -> tuple[torch.Tensor, Gates]:
    """``(offsets, gates)`` of the sum of two gated offsets.

    ``(w1.x + b1) v1 + (w2.x + b2) v2`` is one gated offset on a head only when the pushes are
    parallel, ``v2 = c v1``: then it is ``((w1 + c w2).x + b1 + c b2) v1``. Heads steered by one side
    keep theirs; a head both steer with pushes that are not parallel is refused. Limits add (exact
    wherever neither gate reaches its limit).
    """
    steered_a, steered_b = a_offsets.abs().sum(-1) > 0, b_offsets.abs().sum(-1) > 0
    shared = steered_a & steered_b
    ratio = torch.zeros(a.bias.shape)  # c per shared head
    bad = []
    for layer, h in shared.nonzero().tolist():
        v1, v2 = a_offsets[layer, h].double(), b_offsets[layer, h].double()
        c = float(v1 @ v2 / (v1 @ v1))
        if float((v2 - c * v1).norm()) > 1e-5 * float(v2.norm()):
            bad.append((layer, h))
        ratio[layer, h] = c
    if bad:
        raise ValueError(f"cannot add gated vectors that push the same heads {bad[:5]} (layer, head) in "
                         f"different directions: the sum of two gated offsets on a head is a gated offset only "
                         f"when their pushes are parallel. Apply them to different heads, or use one at a time")
    weights = a.weights + torch.where(shared[..., None], ratio[..., None] * b.weights, b.weights)
    bias = a.bias + torch.where(shared, ratio * b.bias, b.bias)
    offsets = a_offsets + b_offsets * (~shared)[..., None]
    limit = None
    if a.limit is not None or b.limit is not None:
        la, lb = a.limits(), b.limits()
        limit = torch.where(shared, la + ratio.abs() * lb, torch.where(steered_b, lb, la))
    return offsets, Gates(weights, bias, limit)
