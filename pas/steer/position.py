"""The position rule: which positions of each forward call a vector steers, in each phase of use.

A vector's ``positions`` says how it was learned: ``"last"`` (the answer position only) or ``"all"``.
:func:`position_rule` turns that into what to steer in a given phase; :func:`steer` applies it.
(Not to be confused with a gated vector's gates, :mod:`pas.steer.gates`, which scale *how much* a head is pushed.)
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from pas.steer.vector import SteeringVector

POSITIONS = ("last", "all")
PHASES = ("prompt", "answer", "generate", "reply")


@dataclass(frozen=True)
class PositionRule:
    """Which positions of a forward call a vector steers: none, all, ``>= start``, or the last only."""

    steer: bool
    start: int | None = None
    last_only: bool = False


def position_rule(positions: str, phase: str, prompt_len: int | None = None) -> PositionRule:
    """The one rule for how a vector of kind ``positions`` ("last"/"all") is applied in each ``phase``.

    - ``prompt``: the forward over a questionnaire prompt *before* its answer token (the
      body whose KV cache scoring reuses): "all" steers it, "last" does not;
    - ``answer``: the forward over the answer token alone: both steer it;
    - ``generate``: ``model.generate`` on a chat prompt: "last" steers every position that
      produces a token (the prompt's last, then each new token), "all" every position;
    - ``reply``: prompt + reply in one forward (teacher forcing, e.g. perplexity): the same
      positions as ``generate``, i.e. ``>= prompt_len - 1`` for "last".
    """
    if positions not in POSITIONS or phase not in PHASES:
        raise ValueError(f"no rule for positions={positions!r} in phase {phase!r}")
    if positions == "all":
        return PositionRule(True)
    if phase == "prompt":
        return PositionRule(False)
    if phase == "generate":
        return PositionRule(True, last_only=True)
    if phase == "reply":
        if prompt_len is None:
            raise ValueError("phase 'reply' needs prompt_len")
        return PositionRule(True, start=prompt_len - 1)
    return PositionRule(True)


def steer(model: PreTrainedModel, vector: SteeringVector | None, phase: str,
          prompt_len: int | None = None) -> AbstractContextManager:
    """Apply ``vector`` to ``model`` as :func:`position_rule` says for ``phase`` (a context manager; None =
    unsteered)."""
    if vector is None:
        return nullcontext()
    rule = position_rule(vector.positions, phase, prompt_len)
    return vector.apply(model, start=rule.start, last_only=rule.last_only) if rule.steer else nullcontext()
