"""The one method registry: :data:`METHODS`, one :class:`Method` record per method, all scored the same way.

LLM methods (``base``, ``few-shot``, ``description``, ``pas``...) differ only in system prompt and
steering; every one is scored by :class:`pas.score.scorer.ItemScorer`. With
``MethodContext.reverse_options`` each LLM method is also scored with the options listed in reverse
(nothing refitted), in ``Prediction.reversed``. The non-LLM yardsticks (``always-3``,
``population-median``, ``ridge``) learn only from the *other* subjects of the data dir; ``readout`` is
a per-person ridge on the model's own hidden states (:mod:`pas.eval.yardsticks`). Every method learns
from and predicts *responses* (the item as worded); :mod:`pas.eval.run` runs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pas.core.data import ItemBank, Subject
from pas.eval.context import MethodContext
from pas.eval.yardsticks import always_3, population_median, readout, ridge
from pas.fit.config import FitConfig, GatedConfig, PASConfig
from pas.score.metric import Prediction, UnscorableSubject
from pas.score.prompts import description_system, few_shot_system, template_description
from pas.score.scorer import ItemScorer

if TYPE_CHECKING:
    from pas.steer.vector import SteeringVector

__all__ = ["DESCRIPTIONS", "METHODS", "Method", "MethodContext", "MethodFn", "always_3", "base", "description_text",
           "dpo", "few_shot", "population_median", "readout", "ridge"]

MethodFn = Callable[[MethodContext, Subject], Prediction]
SettingsFn = Callable[[MethodContext, Subject], Mapping[str, Any]]
SystemFor = Callable[[bool], "str | None"]  # reverse_options -> system prompt
VECTOR_KINDS = ("pas", "pas-learned", "pas-gated")  # what made a vector (its provenance's method)


def no_settings(ctx: MethodContext, subject: Subject) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class Method:
    """One method's facts, in one place.

    ``run``: the method, ``(MethodContext, Subject) -> Prediction`` (the record is callable the same way).
    ``needs_model``: it needs ``MethodContext.scorer``. ``is_llm``: its answers are the model's letters
    (scored with reversed options too when asked). ``uses_population``: it learns from the *other*
    subjects. ``vector_kind``: which saved vector a PAS method takes instead of fitting one (``"pas"``,
    ``"pas-learned"``, ``"pas-gated"``; None: it takes none). ``settings``: what else a record of it
    depends on (its fitting config, a description's digest), for :mod:`pas.eval.fingerprint`.
    """

    name: str
    run: MethodFn
    doc: str
    needs_model: bool = False
    is_llm: bool = False
    uses_population: bool = False
    vector_kind: str | None = None
    settings: SettingsFn = no_settings

    def __post_init__(self) -> None:
        if self.is_llm and not self.needs_model:
            raise ValueError(f"method {self.name}: an LLM method needs a model")
        if self.vector_kind not in (None, *VECTOR_KINDS):
            raise ValueError(f"method {self.name}: vector_kind must be one of {VECTOR_KINDS} or None")

    @property
    def takes_vector(self) -> bool:
        """It fits (or, with ``--vector``, takes) a steering vector: the PAS methods."""
        return self.vector_kind is not None

    def __call__(self, ctx: MethodContext, subject: Subject) -> Prediction:
        return self.run(ctx, subject)


def _no_system(reverse: bool) -> None:
    return None


def _scored(scorer: ItemScorer, ids: Sequence[int], system: str | None,
            steering: SteeringVector | None) -> Prediction:
    s = scorer.score(ids, system, steering=steering)
    return Prediction(tuple(ids), s.answers, s.expected, s.probs, info={"letter_mass": float(s.letter_mass.mean())})


def _llm(ctx: MethodContext, system_for: SystemFor = _no_system, steering: SteeringVector | None = None,
         scorer: ItemScorer | None = None) -> Prediction:
    """The test items scored by ``scorer`` (default the context's); reversed options too if the context asks."""
    scorer = scorer or ctx.scorer
    if scorer is None:
        raise ValueError("this method needs a model")
    ids = ctx.bank.test_ids
    pred = _scored(scorer, ids, system_for(False), steering)
    if ctx.reverse_options:
        pred.reversed = _scored(scorer.reversed(), ids, system_for(True), steering)
    if ctx.transfer is not None:  # statements never fitted: the same prompt, system prompt and steering
        pred.transfer = {name: _scored(scorer.for_bank(bank), [it.id for it in bank.items], system_for(False), steering)
                         for name, bank in ctx.transfer.banks().items()}
    return pred


def _known_answers(ctx: MethodContext, subject: Subject) -> SystemFor:
    known = subject.responses_to(ctx.bank.train_ids)
    return lambda reverse: few_shot_system(ctx.bank, known, reverse)


def base(ctx: MethodContext, subject: Subject) -> Prediction:
    """The model as it is: no personal information."""
    return _llm(ctx)


def few_shot(ctx: MethodContext, subject: Subject) -> Prediction:
    """System prompt listing the subject's known answers."""
    return _llm(ctx, _known_answers(ctx, subject))


# PAPI's shipped prose, or pas.score.prompts.template_description of the known answers
DESCRIPTIONS = ("papi", "template")


def description_text(bank: ItemBank, subject: Subject, source: str = "papi") -> str:
    """The system prompt describing ``subject``: PAPI's prose description (``"papi"``), or one written by a
    fixed template from the subject's known (short-form) responses (``"template"``)."""
    if source not in DESCRIPTIONS:
        raise ValueError(f"description source must be one of {DESCRIPTIONS}, not {source!r}")
    if source == "template":
        return description_system(template_description(bank, subject.responses_to(bank.train_ids)))
    if not subject.description:
        raise UnscorableSubject(f"subject {subject.case} has no description (personality_descriptions.json)")
    return description_system(subject.description)


def _description_settings(source: str) -> SettingsFn:
    """PAPI's prose is data of its own (a template description follows from the answers, already fingerprinted)."""
    def settings(ctx: MethodContext, subject: Subject) -> Mapping[str, Any]:
        from pas.eval.fingerprint import digest

        return {"description": digest(subject.description)} if source == "papi" else {}

    return settings


def _description(source: str) -> MethodFn:
    def method(ctx: MethodContext, subject: Subject) -> Prediction:
        text = description_text(ctx.bank, subject, source)
        return _llm(ctx, lambda reverse: text)

    return method


def _description_vector(source: str, construction: str = "contrast") -> MethodFn:
    def method(ctx: MethodContext, subject: Subject) -> Prediction:
        import time

        from pas.space.persona import context_tokens, fit_persona

        text = description_text(ctx.bank, subject, source)
        if ctx.scorer is None:
            raise ValueError("this method needs a model")
        t0 = time.perf_counter()
        vector, facts = fit_persona(ctx.scorer, text, construction=construction, name=subject.case)
        fit_seconds = time.perf_counter() - t0
        pred = _llm(ctx, _no_system, vector)
        pred.fit_seconds = fit_seconds
        pred.info.update({"prompt_tokens_saved": context_tokens(ctx.scorer.tokenizer, text),
                          "construction": construction,
                          **({"distil_strength": facts.strength} if facts.strength is not None else {}),
                          **({"coefficients": facts.coefficients} if facts.coefficients else {})})
        return pred

    return method


ConfigFor = Callable[[MethodContext], FitConfig]


def _constant(learn: bool, few_shot: bool) -> ConfigFor:
    """The constant-PAS config a variant fits with: the context's PASConfig with ``learn`` and ``few_shot`` set."""
    return lambda ctx: dataclasses.replace(ctx.pas_config or PASConfig(), learn=learn, few_shot=few_shot)


def _gated(ctx: MethodContext) -> FitConfig:
    return ctx.gated_config or GatedConfig()


def _pas(config_for: ConfigFor) -> MethodFn:
    def method(ctx: MethodContext, subject: Subject) -> Prediction:
        from pas.fit.align import fit_subject

        if ctx.scorer is None:
            raise ValueError("this method needs a model")
        config = config_for(ctx)
        vector, report = ctx.vectors.get(subject.case), None
        if vector is None:
            vector, report = fit_subject(ctx.scorer.model, subject, config, tokenizer=ctx.scorer.tokenizer,
                                         bank=ctx.bank, scorer=ctx.scorer, progress=False)
        few = getattr(config, "few_shot", False)
        pred = _llm(ctx, _known_answers(ctx, subject) if few else _no_system, vector)
        if report is not None:
            pred.fit_seconds = report.fit_seconds
            pred.info.update(report.summary())
        else:
            pred.info["vector"] = "given"
        return pred

    return method


def _fit_settings(key: str, config_for: ConfigFor) -> SettingsFn:
    """A PAS record depends on the config it fitted with; given a vector it fits nothing (the vector's digest
    is in the fingerprint instead)."""
    def settings(ctx: MethodContext, subject: Subject) -> Mapping[str, Any]:
        return {} if subject.case in ctx.vectors else {key: dataclasses.asdict(config_for(ctx))}

    return settings


def _population(setting: str) -> MethodFn:
    def method(ctx: MethodContext, subject: Subject) -> Prediction:
        import time

        from pas.population.informed import cross_fitted_map

        if ctx.scorer is None:
            raise ValueError("this method needs a model")
        t0 = time.perf_counter()
        pmap = cross_fitted_map(ctx.scorer, ctx.population, subject, setting)
        t1 = time.perf_counter()
        vector = pmap.vector(subject)  # closed form: the person's only cost
        fit_seconds = time.perf_counter() - t1
        pred = _llm(ctx, _no_system, vector)
        pred.fit_seconds = fit_seconds
        pred.info.update({"map_seconds": t1 - t0, "gain": pmap.gain, "shift": pmap.shift, "layer": pmap.layer,
                          "map_people": pmap.people, "map_setting": setting})
        return pred

    return method


def _dpo_settings(ctx: MethodContext, subject: Subject) -> Mapping[str, Any]:
    from pas.eval.dpo import DPOSettings

    return {"dpo_settings": dataclasses.asdict(ctx.dpo_settings or DPOSettings())}


def dpo(ctx: MethodContext, subject: Subject) -> Prediction:
    """DPO fine-tuning (LoRA) on the known answers; see :mod:`pas.eval.dpo`."""
    from pas.eval.dpo import save_adapter, train_dpo

    if ctx.scorer is None:
        raise ValueError("this method needs a model")
    result = train_dpo(ctx.scorer.model, ctx.scorer.tokenizer, ctx.bank, subject, ctx.dpo_settings,
                       scorer=ctx.scorer)
    if ctx.adapter_dir is not None:
        save_adapter(result, Path(ctx.adapter_dir) / subject.case)
    pred = _llm(ctx, scorer=ItemScorer(result.model, ctx.scorer.tokenizer, ctx.bank, ctx.scorer.template))
    pred.fit_seconds = result.fit_seconds
    pred.info.update({"best_epoch": result.best_epoch, "val_trace": result.val_trace, "train_loss": result.train_loss})
    return pred


def _first_line(fn: Callable) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0]


def _llm_method(name: str, run: MethodFn, doc: str | None = None, **facts: Any) -> Method:
    return Method(name, run, doc or _first_line(run), needs_model=True, is_llm=True, **facts)


def _pas_method(name: str, config_for: ConfigFor, doc: str, vector_kind: str, key: str = "pas_config") -> Method:
    return _llm_method(name, _pas(config_for), doc, vector_kind=vector_kind, settings=_fit_settings(key, config_for))


_PAPI_PROSE = "prose personality description (PAPI's)"
_TEMPLATE_PROSE = "description written by a fixed template from their known answers"


def _vector_doc(described: str, construction: str) -> str:
    return (f"The subject's {described} distilled into a vector (:mod:`pas.space.persona`, the {construction!r} "
            f"construction), no prompt at scoring.")


_REGISTRY = (
    _llm_method("base", base),
    _llm_method("few-shot", few_shot),
    _llm_method("description", _description("papi"), f"System prompt with the subject's {_PAPI_PROSE}.",
                settings=_description_settings("papi")),
    _llm_method("description-vector", _description_vector("papi"), _vector_doc(_PAPI_PROSE, "contrast"),
                settings=_description_settings("papi")),
    _llm_method("description-profile", _description_vector("papi", "profile"), _vector_doc(_PAPI_PROSE, "profile"),
                settings=_description_settings("papi")),
    _llm_method("description-poles", _description_vector("papi", "poles"), _vector_doc(_PAPI_PROSE, "poles"),
                settings=_description_settings("papi")),
    _llm_method("template-description", _description("template"),
                f"System prompt with the subject's {_TEMPLATE_PROSE}."),
    _llm_method("template-description-vector", _description_vector("template"),
                _vector_doc(_TEMPLATE_PROSE, "contrast")),
    _pas_method("pas", _constant(learn=False, few_shot=False), vector_kind="pas",
                doc="PAS as in the paper: top-K head directions, strength searched on the known answers."),
    _pas_method("pas-learned", _constant(learn=True, few_shot=False), vector_kind="pas-learned",
                doc="PAS, then per-head offsets learned on the known answers (early-stopped on validation items)."),
    _pas_method("pas+few-shot", _constant(learn=False, few_shot=True), vector_kind="pas",
                doc="PAS (searched strength) with the known answers also in the system prompt, as the paper "
                    "combines them."),
    _pas_method("pas-gated", _gated, vector_kind="pas-gated", key="gated_config",
                doc="Gated per-head offsets that follow each statement (a readout of the heads as gates); "
                    "see pas.fit.gated."),
    _llm_method("pas-population", _population("short"),
                "Gates from a map fitted across the other people's short-form answers (cross-fitted): the person's "
                "vector in closed form from their answers; see pas.population.informed.", uses_population=True),
    _llm_method("pas-population-full", _population("full"),
                "pas-population with the map fitted on the other people's answers to all 300 statements.",
                uses_population=True),
    _llm_method("dpo", dpo, settings=_dpo_settings),
    Method("always-3", always_3, _first_line(always_3)),
    Method("population-median", population_median, _first_line(population_median), uses_population=True),
    Method("ridge", ridge, _first_line(ridge), uses_population=True),
    Method("readout", readout, _first_line(readout), needs_model=True),
)
METHODS: dict[str, Method] = {m.name: m for m in _REGISTRY}
"""Every method by name, in the order ``pas eval --help`` lists them."""
