"""Compiled kernels agree with their plain-torch references; batched probes agree with scikit-learn."""

import numpy as np
import pytest
import torch

import pas_kernels
from pas_kernels import add_head_offsets, add_row_bias, batched_logistic_accuracies, fit_logistic


@pytest.mark.parametrize("shape", [(2, 5, 12), (3, 1, 12), (1, 17, 12)])
def test_head_offsets_compiled_equals_reference(shape):
    x = torch.randn(*shape)
    for delta in (torch.randn(12), torch.randn(shape[0], 1, 12)):
        for first in (0, 1, shape[1] - 1, shape[1] + 2):
            ref = add_head_offsets.reference(x, delta, torch.tensor(first))
            torch.testing.assert_close(add_head_offsets(x, delta, torch.tensor(first)), ref)
            keep = torch.arange(shape[1]) >= first
            torch.testing.assert_close(ref[:, ~keep], x[:, ~keep])


def test_row_bias_compiled_equals_reference():
    y = torch.randn(4, 3, 10)
    table = torch.randn(3, 10)
    rows = torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(add_row_bias(y, table, rows), add_row_bias.reference(y, table, rows))
    torch.testing.assert_close(add_row_bias(y, table, rows)[1], y[1] + table[2])


def test_compile_can_be_disabled(monkeypatch):
    monkeypatch.setenv("PAS_COMPILE", "0")
    assert not pas_kernels.compile_enabled()
    x, d = torch.randn(2, 3, 4), torch.randn(4)
    torch.testing.assert_close(add_head_offsets(x, d, torch.tensor(0)), x + d)


def test_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 80, 5, generator=g, dtype=torch.float64)
    true_w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    noise = 0.5 * torch.randn(6, 80, generator=g, dtype=torch.float64)
    y = (torch.einsum("gnd,gd->gn", x, true_w) + noise > 0).double()
    w = fit_logistic(x, y)
    for k in range(6):
        clf = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(x[k].numpy(), y[k].numpy())
        np.testing.assert_allclose(w[k, :-1].numpy(), clf.coef_[0], atol=1e-4)
        np.testing.assert_allclose(w[k, -1].item(), clf.intercept_[0], atol=1e-4)
    acc = batched_logistic_accuracies(x[:, :60], y[:, :60], x[:, 60:], y[:, 60:])
    assert acc.shape == (6,) and float(acc.min()) > 0.6


def test_torch_probes_select_sklearn_heads():
    from pas.fit.activations import HeadActivations
    from pas.fit.directions import (
        contrast_set,
        sklearn_probe_accuracies,
        split_by_item,
        top_heads,
        torch_probe_accuracies,
    )

    g = torch.Generator().manual_seed(1)
    acts = torch.randn(40, 2, 3, 4, 8, generator=g)
    answers = {i: (5 if i % 3 else 1) for i in range(1, 41)}
    for n, item in enumerate(answers):  # a few informative heads of different strength
        for (layer, h), s in {(0, 1): 2.0, (2, 3): 1.0, (1, 0): 0.6}.items():
            sign = 1 if answers[item] >= 4 else -1
            acts[n, 0, layer, h, 0] += s * sign
            acts[n, 1, layer, h, 0] -= s * sign
    data = contrast_set(HeadActivations(tuple(answers), acts), answers)
    tr, va = split_by_item(data.group, 0.3, 0)
    a, b = sklearn_probe_accuracies(data, tr, va, 0), torch_probe_accuracies(data, tr, va, 0)
    torch.testing.assert_close(a, b)
    assert top_heads(a, 3) == top_heads(b, 3)


def test_many_subjects_in_one_fit_equal_separate_fits():
    from pas_kernels import many_subject_accuracies

    g = torch.Generator().manual_seed(2)
    problems = []
    for n, v in ((30, 10), (22, 7), (41, 12)):
        x = torch.randn(4, n + v, 6, generator=g)
        y = (x[0, :, 0] + 0.3 * torch.randn(n + v, generator=g) > 0).float()
        problems.append((x[:, :n], y[:n], x[:, n:], y[n:]))
    together = many_subject_accuracies(problems)
    for p, acc in zip(problems, together, strict=True):
        torch.testing.assert_close(acc, batched_logistic_accuracies(*p))


def _penalised_loss(x, y, w, b):
    z = x @ w + b
    return float((torch.nn.functional.softplus(z) - y * z).sum() + 0.5 * (w * w).sum())


def test_logistic_converges_on_separable_badly_scaled_data():
    """Separable data with features ~100 (large steps, tiny Hessian curvature): at least as good as sklearn's
    optimum."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(3)
    x = 100 * torch.randn(5, 30, 20, generator=g, dtype=torch.float64)
    y = (x[:, :, 0] > 0).double()
    w = fit_logistic(x, y)
    assert torch.isfinite(w).all()
    for k in range(5):
        clf = LogisticRegression(C=1.0, tol=1e-10, max_iter=100000).fit(x[k].numpy(), y[k].numpy())
        ours = _penalised_loss(x[k], y[k], w[k, :-1], w[k, -1])
        theirs = _penalised_loss(x[k], y[k], torch.from_numpy(clf.coef_[0]), float(clf.intercept_[0]))
        assert ours <= theirs + 1e-6


def test_uninformative_head_scores_one_half():
    """A head whose output ignores the answer letter gets logits ~0: counted as ties, not as a coin toss."""
    from pas.fit.activations import HeadActivations
    from pas.fit.directions import contrast_set, sklearn_probe_accuracies, split_by_item, torch_probe_accuracies

    g = torch.Generator().manual_seed(4)
    acts = torch.randn(30, 2, 2, 2, 6, generator=g)
    acts[:, 1, 0, 0] = acts[:, 0, 0, 0]  # head (0, 0): the "A" and "E" prompts give the same output
    answers = {i: (5 if i % 2 else 1) for i in range(1, 31)}
    data = contrast_set(HeadActivations(tuple(answers), acts), answers)
    tr, va = split_by_item(data.group, 0.3, 0)
    for probe in (sklearn_probe_accuracies, torch_probe_accuracies):
        assert float(probe(data, tr, va, 0)[0, 0]) == 0.5


@pytest.mark.parametrize("people,items", [(1, 3), (3, 5)])
def test_silu_mlp_letters_compiled_equals_reference_and_the_plain_mlp(people, items):
    from pas_kernels import silu_mlp_letters

    g = torch.Generator().manual_seed(people)
    shifts, width, k = 4, 16, 5
    base = torch.randn(shifts, items, 2 * width, generator=g)
    change = torch.randn(people, items, 2 * width, generator=g)
    gains = torch.tensor([2.0, 3.0, 8.0])
    scale = torch.rand(people, len(gains), shifts, items, generator=g) + 0.5
    letters = torch.randn(k, width, generator=g)
    out = silu_mlp_letters(base, change, gains, scale, letters)
    ref = silu_mlp_letters.reference(base, change, gains, scale, letters)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # sums in another order
    p, a, s, n = people - 1, 2, 1, items - 1  # one row by hand: the plain gated MLP
    pre = scale[p, a, s, n] * (base[s, n] + gains[a] * change[p, n])
    hidden = torch.nn.functional.silu(pre[:width]) * pre[width:]
    torch.testing.assert_close(out[p, a, s, n], letters @ hidden, rtol=1e-4, atol=1e-4)
