"""A steering vector from a spec: a saved file, a trait pole, an MBTI type, a group of people, or a persona.

What ``--vector / --trait / --type / --cases / --persona`` name on the command line, as one typed value
(:class:`SteeringSpec`) and one builder (:func:`vector_from_spec`) that Python users call the same way.
A pole, type, group or persona is built on the short-form questionnaire prompts, in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from transformers import PreTrainedModel

from pas.core.data import ItemBank, Subject, select_subjects
from pas.score.scorer import ItemScorer
from pas.space.poles import group_vector, parse_pole, pole_name, pole_vectors, type_poles, type_vector
from pas.steer.vector import SteeringVector


@dataclass(frozen=True)
class SteeringSpec:
    """Exactly one source of a steering vector; each is checked here, before any model work.

    vector: a saved ``.safetensors`` file. trait: a pole such as ``"E+"``. type: an MBTI type such as
    ``"INFP"``. cases: subject ids of a group (their mean short-form answers). persona: a written persona,
    distilled into a vector (:mod:`pas.space.persona`).
    """

    vector: str | os.PathLike[str] | None = None
    trait: str | None = None
    type: str | None = None
    cases: tuple[str, ...] | None = None
    persona: str | None = None

    def __post_init__(self) -> None:
        given = self.given()
        if len(given) > 1:
            raise ValueError(f"give one steering source, not {len(given)} ({', '.join(given)})")
        if self.trait is not None:
            parse_pole(self.trait)
        if self.type is not None:
            type_poles(self.type)
        if self.cases is not None and not self.cases:
            raise ValueError("a group needs at least one subject id")
        if self.persona is not None and not self.persona.strip():
            raise ValueError("the persona's text is empty")
        if self.vector is not None and not str(self.vector).strip():
            raise ValueError("the vector file name is empty")

    def given(self) -> list[str]:
        """The names of the sources set."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def describe(self) -> str:
        """A short label for reports: ``"trait E+"``, ``"vector person.safetensors"``, ``"unsteered"``."""
        if self.vector is not None:
            return f"vector {self.vector}"
        if self.trait is not None:
            return f"trait {pole_name(self.trait)}"
        if self.type is not None:
            return f"type {self.type.strip().upper()}"
        if self.cases is not None:
            return f"group of {len(self.cases)}"
        return "persona vector" if self.persona is not None else "unsteered"


def vector_from_spec(spec: SteeringSpec, model: PreTrainedModel, scorer: ItemScorer | None = None,
                     people: Sequence[Subject] = (), *, allow_other_weights: bool = False,
                     group_name: str | None = None, bank: ItemBank | None = None,
                     allow_other_items: bool = False) -> SteeringVector | None:
    """The vector ``spec`` names, checked against ``model`` (None when the spec names none).

    A pole, type, group or persona is built with ``scorer`` (on ``model``); ``people`` are the subjects a
    group's ``cases`` are chosen from. ``allow_other_weights`` accepts a saved vector made on other
    weights of the same architecture (a fine-tuned variant). With ``bank``, a saved vector must have been
    fitted on that item bank (``allow_other_items``: warn instead, :meth:`SteeringVector.check_bank`).
    """
    if spec.vector is None and spec.given() and scorer is None:
        raise ValueError(f"building a vector for {spec.describe()} needs an ItemScorer on the model")
    if spec.vector is not None:
        vector = SteeringVector.load(spec.vector)
        vector = vector.for_weights_of(model) if allow_other_weights else vector
        vector.check_model(model)
        if bank is not None:
            vector.check_bank(bank, allow_other=allow_other_items)
        return vector
    if scorer is None:  # nothing to build: a source to build without a scorer was refused above
        return None
    if spec.trait is not None:
        return pole_vectors(scorer, [spec.trait])[pole_name(spec.trait)]
    if spec.type is not None:
        return type_vector(scorer, spec.type)
    if spec.persona is not None:
        from pas.space.persona import persona_vector

        return persona_vector(scorer, spec.persona)
    if spec.cases is not None:
        members = select_subjects(people, list(spec.cases))
        return group_vector(scorer, members, name=group_name or f"group of {len(members)}")
    return None


def read_cases(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Subject ids from a file, one per line (``#`` starts a comment)."""
    cases = [line.split("#")[0].strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    cases = [c for c in cases if c]
    if not cases:
        raise ValueError(f"{path}: no subject ids in it (one per line)")
    return tuple(cases)
