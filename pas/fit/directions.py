"""Per-subject probes and steering directions (stage 4).

Labels come from the subject's responses (the item as worded): 4-5 make the "A" (Very Accurate) prompt the
positive example, 1-2 the "E" prompt; 3 and missing answers are skipped. Per head a
logistic-regression probe is fitted on a seeded split *by item* (both prompts of an
item on the same side); heads are ranked by held-out accuracy and the top K kept.
Direction = centre of mass (mean positive - mean negative), normalised; sigma = std
of the activations' projections on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pas.fit.activations import HeadActivations
from pas.score.metric import UnscorableSubject


class NotEnoughAnswersError(UnscorableSubject):
    """Too few non-neutral responses to label contrastive prompts."""


@dataclass(frozen=True)
class ContrastSet:
    """Labelled head activations: ``x [M, L, H, D]``, ``y [M]`` (1 = agrees with the subject), ``group [M]`` item id."""

    x: torch.Tensor
    y: torch.Tensor
    group: torch.Tensor


@dataclass(frozen=True)
class Directions:
    """Top-K heads with their probe accuracy, unit direction ``[K, D]`` and sigma ``[K]``."""

    heads: tuple[tuple[int, int], ...]
    accuracies: tuple[float, ...]
    vectors: torch.Tensor
    sigmas: torch.Tensor


def contrast_set(acts: HeadActivations, responses: Mapping[int, int], case: str = "?") -> ContrastSet:
    """Label the contrastive activations with a subject's responses (4-5: the "A" prompt agrees with them)."""
    xs, ys, groups = [], [], []
    for n, item in enumerate(acts.item_ids):
        a = responses.get(item)
        if a is None or a == 3:
            continue
        agree_with_a = a >= 4
        xs += [acts.acts[n, 0], acts.acts[n, 1]]
        ys += [int(agree_with_a), int(not agree_with_a)]
        groups += [item, item]
    if len(set(ys)) < 2 or len(groups) < 8:
        raise NotEnoughAnswersError(
            f"subject {case}: only {len(groups) // 2} known items with a non-neutral response and "
            f"{'both' if len(set(ys)) > 1 else 'only one'} side(s) of the scale; PAS needs at least 4 responses "
            f"of 1-2 or 4-5, including both agreement and disagreement"
        )
    return ContrastSet(torch.stack(xs), torch.tensor(ys), torch.tensor(groups))


def split_by_item(groups: torch.Tensor, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation row indices with every item's rows on one side."""
    items = np.unique(groups.numpy())
    rng = np.random.default_rng(seed)
    rng.shuffle(items)
    n_val = max(1, int(round(len(items) * val_fraction)))
    val_items = set(items[:n_val].tolist())
    is_val = np.array([g in val_items for g in groups.tolist()])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


ProbeFitter = Callable[[ContrastSet, np.ndarray, np.ndarray, int], torch.Tensor]


SKLEARN_SOLVER = "newton-cholesky"


def sklearn_probe_accuracies(data: ContrastSet, train: np.ndarray, val: np.ndarray, seed: int,
                             solver: str = SKLEARN_SOLVER) -> torch.Tensor:
    """Held-out accuracy ``[L, H]`` of one scikit-learn logistic regression per head.

    The solver is Newton-Cholesky, not scikit-learn's default L-BFGS: many heads' outputs are
    ~1e-3 in size, where L-BFGS stops on its relative-decrease test after a couple of
    iterations, far from the optimum, and ranks heads by that accident.
    """
    from sklearn.linear_model import LogisticRegression

    from pas_kernels import tie_aware_accuracy

    _, n_layers, n_heads, _ = data.x.shape
    x, y = data.x.numpy(), data.y.numpy()
    logits = torch.zeros(n_layers, n_heads, len(val), dtype=torch.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            clf = LogisticRegression(max_iter=1000, solver=solver, random_state=seed)
            clf.fit(x[train, layer, head], y[train])
            logits[layer, head] = torch.from_numpy(clf.decision_function(x[val, layer, head]))
    return tie_aware_accuracy(logits, data.y[torch.as_tensor(val)]).float()


def head_problems(data: ContrastSet, train: np.ndarray,
                  val: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every head as one probe problem: ``(x_train [L*H, N, D], y_train, x_val [L*H, V, D], y_val)``."""
    _, n_layers, n_heads, dim = data.x.shape
    heads_first = data.x.permute(1, 2, 0, 3).reshape(n_layers * n_heads, -1, dim)
    tr, va = torch.as_tensor(train), torch.as_tensor(val)
    return heads_first[:, tr], data.y[tr], heads_first[:, va], data.y[va]


def torch_probe_accuracies(data: ContrastSet, train: np.ndarray, val: np.ndarray, seed: int) -> torch.Tensor:
    """Held-out accuracy ``[L, H]`` of all heads' probes fitted at once (Newton, batched; same optimum as
    scikit-learn)."""
    from pas_kernels import batched_logistic_accuracies

    return batched_logistic_accuracies(*head_problems(data, train, val)).reshape(data.x.shape[1:3]).float()


PROBES: dict[str, ProbeFitter] = {"sklearn": sklearn_probe_accuracies, "torch": torch_probe_accuracies}


def top_heads(acc: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` heads of highest accuracy; ties broken by (layer, head) order, so selection is deterministic."""
    n_heads = acc.shape[1]
    flat = acc.flatten()
    order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))
    return [(i // n_heads, i % n_heads) for i in order[:k]]


def center_of_mass(data: ContrastSet, heads: list[tuple[int, int]],
                   rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit mean-difference direction ``[K, D]`` and projection std ``[K]`` per head."""
    x, y = (data.x, data.y) if rows is None else (data.x[rows], data.y[rows])
    vecs, sigmas = [], []
    for layer, head in heads:
        h = x[:, layer, head].double()
        d = h[y == 1].mean(0) - h[y == 0].mean(0)
        d = d / d.norm().clamp_min(1e-12)
        vecs.append(d.float())
        sigmas.append(float((h @ d).std()))
    return torch.stack(vecs), torch.tensor(sigmas)


@dataclass(frozen=True)
class ProbeProblem:
    """One subject's probe problem: labelled contrasts and the seeded split of their items (train, validation)."""

    data: ContrastSet
    train: np.ndarray
    val: np.ndarray


def probe_problem(acts: HeadActivations, responses: Mapping[int, int], *, val_fraction: float = 0.3, seed: int = 0,
                  case: str = "?") -> ProbeProblem:
    """Label ``acts`` with ``responses`` and split by item (raises :class:`NotEnoughAnswersError`)."""
    data = contrast_set(acts, responses, case)
    return ProbeProblem(data, *split_by_item(data.group, val_fraction, seed))


def directions_of(problem: ProbeProblem, acc: torch.Tensor, k: int) -> Directions:
    """The top ``k`` heads of probe accuracies ``acc [L, H]`` and their directions."""
    heads = top_heads(acc, k)
    vecs, sigmas = center_of_mass(problem.data, heads)
    return Directions(tuple(heads), tuple(float(acc[layer, h]) for layer, h in heads), vecs, sigmas)


def find_directions(acts: HeadActivations, responses: Mapping[int, int], *, k: int = 24, val_fraction: float = 0.3,
                    seed: int = 0, probe: ProbeFitter = sklearn_probe_accuracies, case: str = "?") -> Directions:
    """Probe every head on ``responses``, keep the top ``k``, and compute their directions."""
    problem = probe_problem(acts, responses, val_fraction=val_fraction, seed=seed, case=case)
    return directions_of(problem, probe(problem.data, problem.train, problem.val, seed), k)


def find_directions_many(problems: Sequence[ProbeProblem], *, k: int = 24, seed: int = 0,
                         probe: ProbeFitter = sklearn_probe_accuracies) -> list[Directions]:
    """:func:`find_directions` for many subjects' problems. The torch probes of all subjects are fitted by
    :func:`pas_kernels.many_subject_accuracies` (batched as suits the device; the same optimum as one
    subject at a time, padded problems differing by rounding only); other probes one subject at a time."""
    if probe is not torch_probe_accuracies:
        return [directions_of(p, probe(p.data, p.train, p.val, seed), k) for p in problems]
    from pas_kernels import many_subject_accuracies

    accs = many_subject_accuracies([head_problems(p.data, p.train, p.val) for p in problems]) if problems else []
    return [directions_of(p, acc.reshape(p.data.x.shape[1:3]).float(), k)
            for p, acc in zip(problems, accs, strict=True)]
