import numpy as np
import pytest
import torch

from pas.fit.activations import HeadActivations
from pas.fit.directions import NotEnoughAnswersError, contrast_set, find_directions, split_by_item, top_heads


def _planted(n_items=60, layers=3, heads=4, dim=16, seed=0):
    """Activations where head (1, 2) separates agreeing from disagreeing answers along a known direction."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=g)
    direction /= direction.norm()
    answers = {i: (5 if i % 2 else 1) for i in range(1, n_items + 1)}
    acts = torch.randn(n_items, 2, layers, heads, dim, generator=g)
    for n, item in enumerate(answers):
        agree_a = answers[item] >= 4
        acts[n, 0, 1, 2] += direction * (4.0 if agree_a else -4.0)
        acts[n, 1, 1, 2] += direction * (-4.0 if agree_a else 4.0)
    return HeadActivations(tuple(answers), acts), answers, direction


def test_planted_direction_recovered():
    acts, answers, direction = _planted()
    d = find_directions(acts, answers, k=3, seed=0)
    assert d.heads[0] == (1, 2) and d.accuracies[0] > 0.95
    assert float(d.vectors[0] @ direction) > 0.99
    assert d.sigmas[0] > 3


def test_labels_skip_neutral_and_missing():
    acts, answers, _ = _planted(n_items=10)
    answers = dict(answers)
    answers[1] = 3
    del answers[2]
    data = contrast_set(acts, answers)
    assert len(data.y) == 16 and data.y.sum() == 8
    assert 1 not in data.group.tolist() and 2 not in data.group.tolist()


def test_not_enough_answers():
    acts, _, _ = _planted(n_items=10)
    with pytest.raises(NotEnoughAnswersError):
        contrast_set(acts, {i: 3 for i in range(1, 11)})


def test_split_by_item_keeps_pairs_together():
    groups = torch.tensor([1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    tr, va = split_by_item(groups, 0.4, seed=1)
    assert set(groups[tr].tolist()).isdisjoint(groups[va].tolist()) and len(va) == 4
    assert np.array_equal(split_by_item(groups, 0.4, seed=1)[1], va)


def test_top_heads_deterministic_ties():
    acc = torch.tensor([[0.5, 0.9], [0.9, 0.7]])
    assert top_heads(acc, 3) == [(0, 1), (1, 0), (1, 1)]
