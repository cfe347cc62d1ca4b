"""What a method may use: :class:`MethodContext` (the item bank, the population, a scorer, configs, vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pas.core.data import ItemBank, Subject
from pas.score.scorer import ItemScorer


@dataclass
class MethodContext:
    """What a method may use: the item bank, the population (all subjects), and an LLM scorer."""

    bank: ItemBank
    population: Sequence[Subject]
    scorer: ItemScorer | None = None
    pas_config: object = None  # PASConfig of the constant PAS methods (default PASConfig())
    gated_config: object = None  # GatedConfig of pas-gated (default GatedConfig())
    vectors: dict = field(default_factory=dict)  # case -> SteeringVector, for --vector
    vector_digests: dict = field(default_factory=dict)  # case -> sha256 of the --vector file (records keep it)
    dpo_settings: object = None
    adapter_dir: str | None = None  # where the dpo method saves each subject's adapter
    reverse_options: bool = False  # also score LLM methods with the options in reverse order

    def others(self, subject: Subject) -> list[Subject]:
        return [s for s in self.population if s.case != subject.case]
