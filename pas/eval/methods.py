"""The methods compared on a subject's 180 test items, all through the same scorer.

LLM methods (``base``, ``few-shot``, ``description``, ``pas``...) differ only in
system prompt and steering; every one is scored by :class:`pas.score.scorer.ItemScorer`.
With ``MethodContext.reverse_options`` each LLM method is also scored with the options
listed in reverse (nothing refitted), in ``Prediction.reversed``. The non-LLM yardsticks
(``always-3``, ``population-median``, ``ridge``) learn only from the *other* subjects of
the data dir; ``readout`` is a per-person ridge on the model's own hidden states. Every
method learns from and predicts *responses* (the item as worded); :mod:`pas.eval.run` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pas.core.data import ItemBank, Subject
from pas.score.metric import Prediction, UnscorableSubject
from pas.score.prompts import description_system, few_shot_system, template_description
from pas.fit.readout import PointScores
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
    dpo_settings: object = None
    adapter_dir: str | None = None  # where the dpo method saves each subject's adapter
    reverse_options: bool = False  # also score LLM methods with the options in reverse order

    def others(self, subject: Subject) -> list[Subject]:
        return [s for s in self.population if s.case != subject.case]


Method = Callable[[MethodContext, Subject], Prediction]
LLM_METHODS = ("base", "few-shot", "description", "description-vector", "description-profile", "description-poles",
               "template-description",
               "template-description-vector", "pas", "pas-learned", "pas+few-shot", "pas-gated", "dpo")
YARDSTICKS = ("always-3", "population-median", "ridge", "readout")
PAS_METHODS = ("pas", "pas-learned", "pas+few-shot", "pas-gated")  # methods that fit (or take) a steering vector
NEEDS_MODEL = LLM_METHODS + ("readout",)

SystemFor = Callable[[bool], "str | None"]  # reverse_options -> system prompt


def _no_system(reverse: bool) -> None:
    return None


def _scored(scorer: ItemScorer, ids, system: str | None, steering) -> Prediction:
    s = scorer.score(ids, system, steering=steering)
    return Prediction(tuple(ids), s.answers, s.expected, s.probs, info={"letter_mass": float(s.letter_mass.mean())})


def _llm(ctx: MethodContext, system_for: SystemFor = _no_system, steering=None,
         scorer: ItemScorer | None = None) -> Prediction:
    """The test items scored by ``scorer`` (default the context's); reversed options too if the context asks."""
    scorer = scorer or ctx.scorer
    if scorer is None:
        raise ValueError("this method needs a model")
    ids = ctx.bank.test_ids
    pred = _scored(scorer, ids, system_for(False), steering)
    if ctx.reverse_options:
        pred.reversed = _scored(scorer.reversed(), ids, system_for(True), steering)
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


DESCRIPTIONS = ("papi", "template")  # PAPI's shipped prose, or pas.score.prompts.template_description of the known answers


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


def _description(source: str) -> Method:
    def method(ctx: MethodContext, subject: Subject) -> Prediction:
        text = description_text(ctx.bank, subject, source)
        return _llm(ctx, lambda reverse: text)

    method.__doc__ = f"System prompt with the subject's {_DESCRIBED[source]}."
    return method


def _description_vector(source: str, construction: str = "contrast") -> Method:
    def method(ctx: MethodContext, subject: Subject) -> Prediction:
        import time

        from pas.space.persona import context_tokens, persona_vector

        text = description_text(ctx.bank, subject, source)
        if ctx.scorer is None:
            raise ValueError("this method needs a model")
        t0 = time.perf_counter()
        vector = persona_vector(ctx.scorer, text, construction=construction, name=subject.case)
        fit_seconds = time.perf_counter() - t0
        pred = _llm(ctx, _no_system, vector)
        pred.fit_seconds = fit_seconds
        pred.info.update({"prompt_tokens_saved": context_tokens(ctx.scorer.tokenizer, text), "construction": construction,
                          **({"distil_strength": vector.config["strength"]} if "strength" in vector.config else {}),
                          **({"coefficients": vector.config["coefficients"]} if "coefficients" in vector.config else {})})
        return pred

    method.__doc__ = (f"The subject's {_DESCRIBED[source]} distilled into a vector (:mod:`pas.space.persona`, the "
                      f"{construction!r} construction), no prompt at scoring.")
    return method


_DESCRIBED = {"papi": "prose personality description (PAPI's)",
              "template": "description written by a fixed template from their known answers"}


def _pas(variant: str) -> Method:
    def method(ctx: MethodContext, subject: Subject) -> Prediction:
        import dataclasses

        from pas.fit.align import fit_subject
        from pas.fit.config import GatedConfig, PASConfig

        if variant == "pas-gated":
            config = ctx.gated_config or GatedConfig()
        else:
            config = dataclasses.replace(ctx.pas_config or PASConfig(), learn=variant == "pas-learned",
                                         few_shot=variant.endswith("+few-shot"))
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

    method.__doc__ = _PAS_DOCS[variant]
    return method


_PAS_DOCS = {
    "pas": "PAS as in the paper: top-K head directions, strength searched on the known answers.",
    "pas-learned": "PAS, then per-head offsets learned on the known answers (early-stopped on validation items).",
    "pas+few-shot": "PAS (searched strength) with the known answers also in the system prompt, as the paper combines them.",
    "pas-gated": "Gated per-head offsets that follow each statement (a readout of the heads as gates); see pas.fit.gated.",
}


def dpo(ctx: MethodContext, subject: Subject) -> Prediction:
    """DPO fine-tuning (LoRA) on the known answers; see :mod:`pas.eval.dpo`."""
    from pas.eval.dpo import save_adapter, train_dpo

    result = train_dpo(ctx.scorer.model, ctx.scorer.tokenizer, ctx.bank, subject, ctx.dpo_settings,
                       scorer=ctx.scorer)
    if ctx.adapter_dir is not None:
        save_adapter(result, Path(ctx.adapter_dir) / subject.case)
    pred = _llm(ctx, scorer=ItemScorer(result.model, ctx.scorer.tokenizer, ctx.bank, ctx.scorer.template))
    pred.fit_seconds = result.fit_seconds
    pred.info.update({"best_epoch": result.best_epoch, "val_trace": result.val_trace, "train_loss": result.train_loss})
    return pred


def _point(ids: Sequence[int], values: np.ndarray) -> Prediction:
    s = PointScores.of(values)
    return Prediction(tuple(ids), s.answers, s.expected)


def always_3(ctx: MethodContext, subject: Subject) -> Prediction:
    """Answer "Neither Accurate Nor Inaccurate" to everything."""
    return _point(ctx.bank.test_ids, np.full(len(ctx.bank.test_ids), 3.0))


def population_median(ctx: MethodContext, subject: Subject) -> Prediction:
    """Each item's median response among the other subjects (missing answers excluded).

    A half-way median rounds half to even, which is symmetric about 3: the same errors
    whether medians are taken of responses or of keyed scores.
    """
    others = ctx.others(subject)
    med = [np.median([s.responses[i] for s in others if i in s.responses] or [3]) for i in ctx.bank.test_ids]
    return _point(ctx.bank.test_ids, np.asarray(med, dtype=np.float64))


def ridge(ctx: MethodContext, subject: Subject) -> Prediction:
    """Ridge regression from the 120 known responses to each test response, fitted on the other subjects.

    Missing inputs are filled with the item's mean over the other subjects; for each test
    item only subjects who answered it are training targets. Regularisation by RidgeCV.
    """
    from sklearn.linear_model import RidgeCV

    others = ctx.others(subject)
    train, test = ctx.bank.train_ids, ctx.bank.test_ids
    x = np.array([[s.responses.get(i, np.nan) for i in train] for s in others], dtype=np.float64)
    means = np.nanmean(x, axis=0)
    x = np.where(np.isnan(x), means, x)
    xq = np.array([[subject.responses.get(i, means[n]) for n, i in enumerate(train)]], dtype=np.float64)
    preds = []
    for item in test:
        rows = [n for n, s in enumerate(others) if item in s.responses]
        y = np.array([others[n].responses[item] for n in rows], dtype=np.float64)
        model = RidgeCV(alphas=np.logspace(-1, 4, 11)).fit(x[rows], y)
        preds.append(float(model.predict(xq)[0]))
    return _point(test, np.asarray(preds))


def readout(ctx: MethodContext, subject: Subject) -> Prediction:
    """Per-person ridge on the model's residual stream at the answer position; layer and strength by CV on known items.

    No steering: the ceiling a content-following steering method on this model should approach.
    """
    from pas.fit.activations import answer_states
    from pas.fit.readout import fit_readout, readout_layers

    if ctx.scorer is None:
        raise ValueError("the readout yardstick needs a model")
    bank = ctx.bank
    known = subject.responses_to(bank.train_ids)
    ids = sorted(known)
    states = answer_states(ctx.scorer, bank.train_ids + bank.test_ids)
    train, test = states.rows(ids), states.rows(bank.test_ids)
    layers = readout_layers(states.residual.shape[1] - 1)
    fit = fit_readout({layer: train.residual[:, layer].numpy() for layer in layers},
                      np.array([known[i] for i in ids], dtype=np.float64), bank, subject, ids)
    pred = _point(bank.test_ids, fit.predict(test.residual[:, fit.key].numpy()))
    pred.info.update({"layer": int(fit.key), "ridge_alpha": fit.alpha, "cv_composite": fit.cv.composite})
    return pred


METHODS: dict[str, Method] = {
    "base": base,
    "few-shot": few_shot,
    "description": _description("papi"),
    "description-vector": _description_vector("papi"),
    "description-profile": _description_vector("papi", "profile"),
    "description-poles": _description_vector("papi", "poles"),
    "template-description": _description("template"),
    "template-description-vector": _description_vector("template"),
    "pas": _pas("pas"),
    "pas-learned": _pas("pas-learned"),
    "pas+few-shot": _pas("pas+few-shot"),
    "pas-gated": _pas("pas-gated"),
    "dpo": dpo,
    "always-3": always_3,
    "population-median": population_median,
    "ridge": ridge,
    "readout": readout,
}
