"""A scale for an exported control vector, chosen by measurement on the short-form statements.

llama.cpp adds a control vector at every position, after the whole block; a pas vector fitted for the answer
position only (``positions="last"``) steers one position, after attention. Added at all ~100 prompt positions,
the same offset moves every answer to one end of the scale (docs/export.md). :func:`choose_export_scale` tries
a ladder of scales and keeps the one at which llama.cpp's placement, emulated in torch
(:func:`pas.steer.hooks.add_block_outputs`), moves the expected answers of short-form statements (40 of the
120) as pas's own steering moves them. It reads statements only, never anyone's answers, and never the 180 test
statements, so the choice carries no information about what the vector is evaluated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pas.export.llamacpp import DEFAULT_MAPPING, to_control_vector
from pas.score.scorer import ItemScorer, score_texts
from pas.steer.hooks import add_block_outputs

if TYPE_CHECKING:
    from pas.steer.vector import SteeringVector

SCALES: tuple[float, ...] = tuple(2.0 ** -k for k in range(0, 7))  # 1 .. 1/64
EVERY = 3  # statements used: every third short-form statement (40 of 120; ~1.5 min on a 2-core CPU)


@dataclass(frozen=True)
class ScaleChoice:
    """The chosen ``scale`` and, per scale tried, the mean absolute gap between the emulated and pas's own
    expected-answer shifts on ``statements`` short-form statements."""

    scale: float
    gaps: dict[float, float]
    statements: int

    def describe(self) -> str:
        return (f"scale {self.scale:g} (mean gap in expected-answer shift to pas's own steering on {self.statements} "
                f"short-form statements: {self.gaps[self.scale]:.3f}; unscaled {self.gaps.get(1.0, float('nan')):.3f})")


def choose_export_scale(vector: SteeringVector, scorer: ItemScorer, *, ids: Sequence[int] | None = None,
                        mapping: str = DEFAULT_MAPPING, scales: Sequence[float] = SCALES) -> ScaleChoice:
    """The scale in ``scales`` at which ``vector`` exported with ``mapping`` and applied as llama.cpp applies it
    best reproduces pas's own steering: least mean absolute gap between the two expected-answer shifts from
    the unsteered model, on ``ids`` (default: every :data:`EVERY`-th short-form statement of the bank). Ties go to
    the larger scale."""
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {tuple(scales)}")
    model, tok = scorer.model, scorer.tokenizer
    ids = list(scorer.bank.train_ids[::EVERY] if ids is None else ids)
    base = scorer.score(ids).expected
    own = scorer.score(ids, steering=vector).expected - base
    texts = scorer.texts(ids)
    n_layers = len(vector.offsets)
    gaps: dict[float, float] = {}
    for scale in sorted(set(scales), reverse=True):
        cv = to_control_vector(vector, model, mapping=mapping, scale=scale)
        with add_block_outputs(model, cv.residual(n_layers)):
            emulated = score_texts(model, tok, texts, letter_ids=scorer.letter_ids,
                                   batch_size=scorer.batch_size).expected - base
        gaps[scale] = round(float(np.abs(emulated - own).mean()), 6)
    best = min(gaps, key=lambda s: (gaps[s], -s))
    return ScaleChoice(best, gaps, len(ids))
