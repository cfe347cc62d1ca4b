"""CUDA checks: compiled kernels (inductor's GPU code) agree with the references; skipped without a GPU."""

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_kernels_on_cuda():
    from pas_kernels import add_head_offsets, add_row_bias, batched_logistic_accuracies

    x = torch.randn(16, 9, 576, device="cuda")
    d = torch.randn(16, 1, 576, device="cuda")
    torch.testing.assert_close(add_head_offsets(x, d, torch.tensor(3)),
                               add_head_offsets.reference(x, d, torch.tensor(3)))
    table, rows = torch.randn(5, 576, device="cuda"), torch.randint(0, 5, (16,), device="cuda")
    torch.testing.assert_close(add_row_bias(x, table, rows), add_row_bias.reference(x, table, rows))
    from pas_kernels import add_gated_offsets

    w, b = torch.randn(16, 1, 576, device="cuda"), torch.randn(16, 1, 9, device="cuda")
    lim = b.abs() * 0.5  # some gates clamped
    torch.testing.assert_close(add_gated_offsets(x, w, b, d, torch.tensor(3), lim),
                               add_gated_offsets.reference(x, w, b, d, torch.tensor(3), lim), rtol=1e-4, atol=1e-4)
    xs = torch.randn(270, 60, 64, device="cuda")
    y = (xs[0, :, 0] > 0).float()
    acc = batched_logistic_accuracies(xs[:, :40], y[:40], xs[:, 40:], y[40:])
    assert acc.shape == (270,) and acc[0] > 0.8


def test_score_many_on_cuda(tokenizer, papi):
    from conftest import make_tiny

    from pas.score.many import score_many
    from pas.score.scorer import ItemScorer
    from pas.steer.vector import SteeringVector

    model = make_tiny("llama", len(tokenizer)).cuda()
    off = torch.randn(3, 4, 8)
    v = SteeringVector.for_model(model, off)
    scorer = ItemScorer(model, tokenizer, papi.bank)
    ids = papi.bank.test_ids[:5]
    (many,) = score_many(scorer, ids, [v])
    alone = scorer.score(ids, steering=v)
    torch.testing.assert_close(torch.tensor(many.probs), torch.tensor(alone.probs), atol=1e-4, rtol=1e-4)
