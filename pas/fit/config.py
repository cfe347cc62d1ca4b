"""How one person's vector is fitted: :class:`PASConfig` (constant offsets) or :class:`GatedConfig` (gated).

Fitting dispatches on the config's type (:func:`pas.fit.align.fit_subject`). Each field is documented
once, in its ``metadata["doc"]``: that text makes the class docstring and the command line's ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _doc(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


def field_docs(config: type) -> dict[str, str]:
    """``{field name: its one documentation line}`` of a config class."""
    return {f.name: f.metadata["doc"] for f in fields(config)}


def _document(cls: type) -> type:
    lines = [f"- ``{f.name}`` (default ``{f.default!r}``): {f.metadata['doc']}" for f in fields(cls)]
    cls.__doc__ = f"{cls.__doc__}\n\nFields:\n\n" + "\n".join(lines)
    return cls


@_document
@dataclass(frozen=True)
class PASConfig:
    """PAS with constant per-head offsets (the paper's method, then learned). Every choice is made on the
    person's known answers."""

    k: int = _doc(24, "heads kept (top probe accuracy)")
    alpha_grid: tuple[float, ...] = _doc((0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
                                         "the strength grid searched (strength in units of each head's sigma)")
    refine_steps: int = _doc(6, "golden-section steps refining the best strength of the grid")
    val_fraction: float = _doc(1 / 3, "share of known items held out to choose the strength and stop learning")
    probe_val_fraction: float = _doc(0.3, "share of fit items held out to rank the probes")
    learn: bool = _doc(True, "learn per-head offsets after the search (else keep the searched ones)")
    steps: int = _doc(60, "offset learning: most Adam steps (offsets in sigma units)")
    lr: float = _doc(0.1, "offset learning: Adam learning rate")
    penalty: float = _doc(0.01, "offset learning: penalty on the squared distance from the searched offsets")
    patience: int = _doc(4, "offset learning: evaluations without improvement before stopping")
    eval_every: int = _doc(5, "offset learning: steps between validation evaluations")
    few_shot: bool = _doc(False, "also put the known answers in the system prompt (PAS + few-shot)")
    positions: str = _doc("last", "'last' steers the answer position only, 'all' every prompt position "
                                  "(slower; searched strength only)")
    probe: str = _doc("torch", "'torch' (all heads at once, Newton) or 'sklearn' (one LogisticRegression per "
                               "head); both reach the same optimum")
    seed: int = _doc(0, "every random choice")

    def __post_init__(self) -> None:
        checks = [
            (self.k >= 1, f"k must be >= 1, got {self.k}"),
            (len(self.alpha_grid) >= 2 and min(self.alpha_grid) >= 0,
             f"alpha_grid needs >= 2 values >= 0, got {self.alpha_grid}"),
            (0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}"),
            (0 < self.probe_val_fraction < 1, f"probe_val_fraction must be in (0, 1), got {self.probe_val_fraction}"),
            (self.steps >= 1 and self.eval_every >= 1 and self.patience >= 1,
             "steps, eval_every, patience must be >= 1"),
            (self.lr > 0 and self.penalty >= 0, f"lr must be > 0 and penalty >= 0, got {self.lr}, {self.penalty}"),
            (self.positions in ("last", "all"), f"positions must be 'last' or 'all', got {self.positions!r}"),
            (self.probe in ("torch", "sklearn"), f"probe must be 'torch' or 'sklearn', got {self.probe!r}"),
            (not (self.learn and self.positions == "all"),
             "learned offsets need positions='last' (learning through every position is too slow here); "
             "set learn=False"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


@_document
@dataclass(frozen=True)
class GatedConfig:
    """Gated offsets that follow each statement (:mod:`pas.fit.gated`), fitted at the answer position."""

    gate_layer: int = _doc(-1, "the layer whose heads are gated (negative counts from the end); the layer below "
                               "carries the constant letter correction")
    gate_both_orders: bool = _doc(False, "solve the pushes for both option orders at once (aimed at an answer's "
                                         "meaning, not its letter; on the embedded model it leaves every answer "
                                         "at 'Neither', measured)")
    seed: int = _doc(0, "every random choice")

    def __post_init__(self) -> None:
        if self.gate_layer == 0:
            raise ValueError("gate_layer 0 has no layer below it for the letter correction")


FitConfig = PASConfig | GatedConfig
KINDS: dict[str, type] = {"constant": PASConfig, "gated": GatedConfig}  # --kind -> config type
