"""Batched logistic-regression probes for every head (and many subjects) at once.

Solves the same problem as scikit-learn's ``LogisticRegression()`` (L2 penalty
``||w||^2 / (2C)`` with C = 1, unpenalised intercept) by Newton's method, batched over
probes with ``torch.linalg.solve``; the optimum is the same, so the selected heads agree.
"""

from __future__ import annotations

import torch

from .compile import compiled


def _newton_step_reference(w: torch.Tensor, x1: torch.Tensor, y: torch.Tensor, reg: torch.Tensor,
                           mask: torch.Tensor) -> torch.Tensor:
    """One Newton step for G problems: ``w [G, D+1]``, ``x1 [G, N, D+1]`` (bias column last), ``y``/``mask [G, N]``.

    ``mask`` is 1 for real samples, 0 for padding (problems of different sizes in one batch).
    """
    p = torch.sigmoid(torch.einsum("gnd,gd->gn", x1, w))
    grad = torch.einsum("gnd,gn->gd", x1, (p - y) * mask) + reg * w
    s = p * (1 - p) * mask
    hess = torch.einsum("gnd,gn,gne->gde", x1, s, x1) + torch.diag_embed(reg.expand_as(w))
    return w - torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)


_newton_step = compiled(_newton_step_reference)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, iters: int = 25, tol: float = 1e-7,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weights ``[G, D+1]`` (intercept last) of G L2-regularised logistic regressions on ``x [G, N, D]``, ``y [G, N]``.

    ``mask [G, N]`` (optional) marks real samples; padded ones do not count.
    """
    x = x.double()
    mask = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    x1 = torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)], -1)
    reg = torch.full((x1.shape[-1],), 1.0 / c, dtype=x.dtype, device=x.device)
    reg[-1] = 0.0  # intercept not penalised, as in scikit-learn
    w = torch.zeros(x1.shape[0], x1.shape[-1], dtype=x.dtype, device=x.device)
    y = y.to(x.dtype)
    for _ in range(iters):
        new = _newton_step(w, x1, y, reg, mask)
        done = (new - w).abs().max() < tol
        w = new
        if done:
            break
    return w


def batched_logistic_accuracies(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                                y_val: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Held-out accuracy ``[G]`` of G probes; x: ``[G, N, D]``, y: ``[N]`` or ``[G, N]``."""
    g = x_train.shape[0]
    y_tr = y_train.expand(g, -1) if y_train.dim() == 1 else y_train
    y_va = y_val.expand(g, -1) if y_val.dim() == 1 else y_val
    w = fit_logistic(x_train, y_tr, c)
    logits = torch.einsum("gnd,gd->gn", x_val.double(), w[:, :-1]) + w[:, -1:]
    return ((logits > 0).to(y_va.dtype) == y_va).double().mean(-1)


def many_subject_accuracies(problems) -> list[torch.Tensor]:
    """Probe accuracies for many subjects in one batched fit.

    problems: a list of ``(x [H, N_s, D], y_train [N_s], x_val [H, V_s, D], y_val [V_s])`` (H probes each,
    e.g. every head); sizes may differ between subjects: samples are padded and masked.
    """
    n_max = max(p[0].shape[1] for p in problems)
    v_max = max(p[2].shape[1] for p in problems)
    h, d = problems[0][0].shape[0], problems[0][0].shape[2]
    g = len(problems) * h
    x, y, m = torch.zeros(g, n_max, d), torch.zeros(g, n_max), torch.zeros(g, n_max)
    xv, yv, mv = torch.zeros(g, v_max, d), torch.zeros(g, v_max), torch.zeros(g, v_max)
    for k, (xt, yt, xva, yva) in enumerate(problems):
        sl, n, v = slice(k * h, (k + 1) * h), xt.shape[1], xva.shape[1]
        x[sl, :n], y[sl, :n], m[sl, :n] = xt, yt.float(), 1
        xv[sl, :v], yv[sl, :v], mv[sl, :v] = xva, yva.float(), 1
    w = fit_logistic(x, y, mask=m)
    logits = torch.einsum("gnd,gd->gn", xv.double(), w[:, :-1]) + w[:, -1:]
    correct = ((logits > 0).double() == yv.double()).double() * mv.double()
    acc = correct.sum(-1) / mv.double().sum(-1)
    return [acc[k * h : (k + 1) * h] for k in range(len(problems))]
