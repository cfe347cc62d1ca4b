"""The non-LLM yardsticks (``always-3``, ``population-median``, ``ridge``) and the ``readout`` ceiling.

The first three learn only from the *other* subjects of the data dir; ``readout`` is a per-person
ridge on the model's own hidden states. Each is a plain ``(MethodContext, Subject) -> Prediction``;
:mod:`pas.eval.methods` registers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from pas.core.data import Subject
from pas.eval.context import MethodContext
from pas.fit.readout import PointScores
from pas.score.metric import Prediction


def point_prediction(ids: Sequence[int], values: np.ndarray) -> Prediction:
    """A prediction from point estimates (rounded to answers; the estimate is the expected value)."""
    s = PointScores.of(values)
    return Prediction(tuple(ids), s.answers, s.expected)


def always_3(ctx: MethodContext, subject: Subject) -> Prediction:
    """Answer "Neither Accurate Nor Inaccurate" to everything."""
    return point_prediction(ctx.bank.test_ids, np.full(len(ctx.bank.test_ids), 3.0))


def population_median(ctx: MethodContext, subject: Subject) -> Prediction:
    """Each item's median response among the other subjects (missing answers excluded).

    A half-way median rounds half to even, which is symmetric about 3: the same errors
    whether medians are taken of responses or of keyed scores.
    """
    others = ctx.others(subject)
    med = [np.median([s.responses[i] for s in others if i in s.responses] or [3]) for i in ctx.bank.test_ids]
    return point_prediction(ctx.bank.test_ids, np.asarray(med, dtype=np.float64))


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
    return point_prediction(test, np.asarray(preds))


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
    layer = cast(int, fit.key)  # the features are keyed by layer
    pred = point_prediction(bank.test_ids, fit.predict(test.residual[:, layer].numpy()))
    if ctx.transfer is not None:  # the same readout on statements never fitted
        for name, other in ctx.transfer.banks().items():
            ids_ = [it.id for it in other.items]
            states_ = answer_states(ctx.scorer.for_bank(other), ids_)
            pred.transfer[name] = point_prediction(ids_, fit.predict(states_.residual[:, layer].numpy()))
    pred.info.update({"layer": int(layer), "ridge_lambda": fit.ridge_lambda, "cv_composite": fit.cv.composite})
    return pred
