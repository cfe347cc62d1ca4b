"""Batched logistic-regression probes for every head (and many subjects) at once.

Solves the same problem as scikit-learn's ``LogisticRegression()`` (L2 penalty
``||w||^2 / (2C)`` with C = 1, unpenalised intercept) by damped Newton's method, batched
over probes: one Cholesky solve per problem and step (Hessian products in single precision,
gradient and objective in double), a backtracking line search per
problem (plain Newton can overshoot on nearly separable data), and problems that have
converged drop out of the batch, so the work shrinks as the fit proceeds.

Accuracy counts a validation row whose logit is within ``TIE`` of zero as half right:
a head whose output does not depend on the answer letter gets logits that are zero up
to rounding, and its "accuracy" would otherwise be a coin toss decided by the solver's
rounding (the reason two exact solvers can disagree on top-K heads).
"""

from __future__ import annotations

import torch

from .compile import compiled

TIE = 1e-6  # |logit| below this is a tie (the probe cannot tell the classes apart)
_COMPACT_BELOW = 0.5  # copy the still-active problems into a smaller batch once fewer than this fraction remain


def _newton_direction_reference(w: torch.Tensor, x1: torch.Tensor, x1s: torch.Tensor, y: torch.Tensor,
                                reg: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient ``[G, D+1]``, Hessian ``[G, D+1, D+1]`` and objective ``[G]`` at ``w`` for G problems.

    ``x1 [G, N, D+1]`` (bias column last) in double, ``x1s`` the same in single precision,
    ``y``/``mask [G, N]``; ``mask`` is 1 for real samples and 0 for padding (problems of
    different sizes in one batch). The Hessian only sets the step, so it is formed in single
    precision (3x faster); gradient and objective, which decide convergence, stay double.
    """
    z = torch.bmm(x1, w.unsqueeze(-1)).squeeze(-1)
    p = torch.sigmoid(z)
    grad = torch.bmm(x1.transpose(1, 2), ((p - y) * mask).unsqueeze(-1)).squeeze(-1) + reg * w
    s = p * (1 - p) * mask
    hess = torch.bmm((x1s * s.float().unsqueeze(-1)).transpose(1, 2), x1s).double() + torch.diag_embed(reg.expand_as(w))
    return grad, hess, _penalised_nll(z, w, y, reg, mask)


def _penalised_nll(z: torch.Tensor, w: torch.Tensor, y: torch.Tensor, reg: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Penalised negative log-likelihood ``[G]`` from the logits ``z [G, N]``."""
    return ((torch.nn.functional.softplus(z) - y * z) * mask).sum(-1) + 0.5 * (reg * w * w).sum(-1)


def _objective_reference(w: torch.Tensor, x1: torch.Tensor, y: torch.Tensor, reg: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """Penalised negative log-likelihood ``[G]`` at ``w``."""
    return _penalised_nll(torch.bmm(x1, w.unsqueeze(-1)).squeeze(-1), w, y, reg, mask)


_newton_direction = compiled(_newton_direction_reference)
_objective = compiled(_objective_reference)


def _solve_spd(hess: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``hess⁻¹ grad`` per problem by Cholesky; a rare non-positive-definite Hessian falls back to LU."""
    chol, info = torch.linalg.cholesky_ex(hess)
    step = torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
    bad = info != 0
    if bool(bad.any()):
        step[bad] = torch.linalg.lstsq(hess[bad], grad[bad].unsqueeze(-1)).solution.squeeze(-1)
    return step


def _line_search(w, step, grad, f0, x1, y, reg, mask, max_halvings: int = 30):
    """Per-problem backtracking (Armijo) along ``-step``; returns the new weights."""
    t = torch.ones_like(f0)
    slope = (grad * step).sum(-1)  # > 0: -step is a descent direction
    new = w - step
    todo = _objective(new, x1, y, reg, mask) > f0 - 1e-4 * slope  # the full step, for every problem at once
    for _ in range(max_halvings):
        if not bool(todo.any()):
            return new
        idx = todo.nonzero().squeeze(-1)  # the few problems that need a shorter step
        t[idx] = t[idx] / 2
        new[idx] = w[idx] - t[idx].unsqueeze(-1) * step[idx]
        f1 = _objective(new[idx], x1[idx], y[idx], reg, mask[idx])
        todo[idx[f1 <= f0[idx] - 1e-4 * t[idx] * slope[idx]]] = False
    return torch.where(todo.unsqueeze(-1), w, new)  # no decrease found: already at the optimum to rounding


def fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, iters: int = 50, tol: float = 1e-8,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weights ``[G, D+1]`` (intercept last) of G L2-regularised logistic regressions on ``x [G, N, D]``, ``y [G, N]``.

    ``mask [G, N]`` (optional) marks real samples; padded ones do not count. A problem stops
    when its gradient's largest entry, per sample, is below ``tol``.
    """
    x = x.double()
    mask = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    x1 = torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)], -1)
    y = y.to(x.dtype)
    reg = torch.full((x1.shape[-1],), 1.0 / c, dtype=x.dtype, device=x.device)
    reg[-1] = 0.0  # intercept not penalised, as in scikit-learn
    n = mask.sum(-1).clamp_min(1)
    w_out = torch.zeros(x1.shape[0], x1.shape[-1], dtype=x.dtype, device=x.device)
    ids = torch.arange(x1.shape[0], device=x.device)  # rows of the working batch -> problems
    wx, wxs, wy, wm, wn, w = x1, x1.float(), y, mask, n, w_out.clone()
    for _ in range(iters):
        grad, hess, f0 = _newton_direction(w, wx, wxs, wy, reg, wm)
        live = grad.abs().amax(-1) / wn >= tol
        w_out[ids[~live]] = w[~live]
        if not bool(live.any()):
            return w_out
        if live.float().mean() < _COMPACT_BELOW:
            ids, wx, wxs, wy, wm, wn, w = ids[live], wx[live], wxs[live], wy[live], wm[live], wn[live], w[live]
            grad, hess, f0, live = grad[live], hess[live], f0[live], live[live]
        step = _solve_spd(hess, grad)
        step[~live] = 0
        w = _line_search(w, step, grad, f0, wx, wy, reg, wm)
    w_out[ids] = w
    return w_out


def tie_aware_accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Share of rows classified right ``[..., N] -> [...]``; ``|logit| < TIE`` counts as half right."""
    logits = logits.double()
    right = ((logits > 0).double() == y.double()).double()
    right = torch.where(logits.abs() < TIE, torch.full_like(right, 0.5), right)
    if mask is None:
        return right.mean(-1)
    mask = mask.double()
    return (right * mask).sum(-1) / mask.sum(-1)


def _fit_and_score(x, y, xv, yv, mask=None, vmask=None, c: float = 1.0) -> torch.Tensor:
    w = fit_logistic(x, y, c, mask=mask)
    logits = torch.einsum("gnd,gd->gn", xv.double(), w[:, :-1]) + w[:, -1:]
    return tie_aware_accuracy(logits, yv, vmask)


def batched_logistic_accuracies(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                                y_val: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Held-out accuracy ``[G]`` of G probes; x: ``[G, N, D]``, y: ``[N]`` or ``[G, N]``."""
    g = x_train.shape[0]
    y_tr = y_train.expand(g, -1) if y_train.dim() == 1 else y_train
    y_va = y_val.expand(g, -1) if y_val.dim() == 1 else y_val
    return _fit_and_score(x_train, y_tr, x_val, y_va, c=c)


def many_subject_accuracies(problems, max_problems: int | None = None) -> list[torch.Tensor]:
    """Probe accuracies for many subjects in batched fits of up to ``max_problems`` probes each.

    problems: a list of ``(x [H, N_s, D], y_train [N_s], x_val [H, V_s, D], y_val [V_s])`` (H probes each,
    e.g. every head); sizes may differ between subjects: samples are padded and masked. On a CPU the
    default fits one subject at a time: there a batch of 13,500 probes (50 subjects) is memory-bound and
    measured 5x slower per probe than batches of 270; on a GPU, 65,536 probes per batch.
    """
    if max_problems is None:
        max_problems = 65536 if problems[0][0].is_cuda else 512
    per = max(1, max_problems // problems[0][0].shape[0])
    if len(problems) > per:
        return [a for k in range(0, len(problems), per) for a in many_subject_accuracies(problems[k : k + per], max_problems)]
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
    acc = _fit_and_score(x, y, xv, yv, m, mv)
    return [acc[k * h : (k + 1) * h] for k in range(len(problems))]
