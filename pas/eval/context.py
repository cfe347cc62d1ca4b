"""What a method may use: :class:`MethodContext` (the item bank, the population, a scorer, configs, vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pas.core.data import ItemBank, Subject
from pas.score.scorer import ItemScorer

if TYPE_CHECKING:
    from pas.core.transfer import TransferSets
    from pas.eval.dpo import DPOSettings
    from pas.fit.config import GatedConfig, PASConfig
    from pas.steer.vector import SteeringVector


@dataclass
class MethodContext:
    """What a method may use: the item bank, the population (all subjects), and an LLM scorer."""

    bank: ItemBank
    population: Sequence[Subject]
    scorer: ItemScorer | None = None
    pas_config: PASConfig | None = None  # of the constant PAS methods (default PASConfig())
    gated_config: GatedConfig | None = None  # of pas-gated (default GatedConfig())
    vectors: dict[str, SteeringVector] = field(default_factory=dict)  # case -> vector, for --vector
    vector_digests: dict[str, str] = field(default_factory=dict)  # case -> sha256 of its --vector file (in records)
    dpo_settings: DPOSettings | None = None
    adapter_dir: str | None = None  # where the dpo method saves each subject's adapter
    reverse_options: bool = False  # also score LLM methods with the options in reverse order
    transfer: TransferSets | None = None  # also score LLM methods (and readout) on statements never fitted

    def others(self, subject: Subject) -> list[Subject]:
        return [s for s in self.population if s.case != subject.case]
