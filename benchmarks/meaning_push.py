"""Does a push survive reversed options? Layer by layer, a direction that means "this statement describes you",
fitted on both option orders, against one fitted on the standard order only (issue #25, item 3).

    python benchmarks/meaning_push.py [--layers 4 8 ... 29] [--sizes .25 .5 1] [--gains .5 1 2] [--threads 2]

For each layer: the residual state after that layer at the answer position of the 120 short-form statements,
under the standard and the reversed option order; a ridge direction from those states to the statement's
population mean response (what people on average answer; no one's test answers, nothing about the 180 test
statements): ``both`` fitted on the states of both orders, ``standard`` on the standard order's only (what a
letter push can learn). The push adds ``size x |h|`` along the direction (|h|: the states' mean norm at that
layer) after that layer's attention at the answer position (a pas offset, ``positions="last"``).
A third push, ``jacobian``: pas-gated's own push (:func:`pas.fit.gated.pushes`) solved for both orders at
once on that layer, from the letters' gradients (linearised: ``x1`` aims at +1 answer point in both orders).
Also: how well the unsteered model's expected answers on the 180 follow the statements' population mean
response, in each order, and each other across orders (is there a meaning-to-option map to push on?).
Reported on the 180 test statements: the mean shift of the expected answer under the standard and the reversed
order, and ``kept`` = reversed shift / standard shift (1: the push means the same in both orders; -1: a letter).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pas.core.arch import layout
from pas.core.data import PapiData, load_papi
from pas.core.models import load_model
from pas.eval.report import machine_info
from pas.fit.activations import answer_states
from pas.fit.gated import calibrations, pushes
from pas.score.scorer import ItemScorer
from pas.steer.fold import offsets_for_shift
from pas.steer.vector import SteeringVector

from common import add_data_model_args, run_and_finish

RIDGE = 1e-2  # relative to the states' mean variance


def _direction(states: list[torch.Tensor], targets: list[np.ndarray]) -> tuple[torch.Tensor, float]:
    """Unit ridge direction from ``states`` (each ``[N, hidden]``) to ``targets``, and the states' mean norm."""
    x = torch.cat(states).double()
    y = torch.from_numpy(np.concatenate(targets)).double()
    xc, yc = x - x.mean(0), y - y.mean()
    gram = xc.T @ xc
    gram += RIDGE * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    w = torch.linalg.solve(gram, xc.T @ yc)
    w = w / w.norm()
    return w.float(), float(x.norm(dim=1).mean())


def _push(model, layer: int, direction: torch.Tensor, size: float) -> SteeringVector:
    shift = torch.zeros(layout(model).n_layers, direction.shape[0])
    shift[layer] = direction * size
    return SteeringVector.for_model(model, offsets_for_shift(model, shift, tolerance=1e-3), positions="last")


def _population_mean(data: PapiData, ids: list[int]) -> np.ndarray:
    """Each statement's mean response over the data dir's people (what it means to people, on average)."""
    return np.array([np.mean([s.responses[i] for s in data.subjects if i in s.responses]) for i in ids])


def _shift(scorers: dict[str, ItemScorer], test: list[int], base: dict[str, np.ndarray],
           vector: SteeringVector) -> dict:
    """Mean expected-answer shift on ``test`` under each option order, and reversed / standard."""
    shift = {o: float((sc.score(test, steering=vector).expected - base[o]).mean()) for o, sc in scorers.items()}
    kept = shift["reversed"] / shift["standard"] if abs(shift["standard"]) > 1e-3 else None
    return {"standard": round(shift["standard"], 3), "reversed": round(shift["reversed"], 3),
            "kept": None if kept is None else round(kept, 2)}


def run(args: argparse.Namespace) -> dict:
    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    scorers = {"standard": ItemScorer(model, tok, data.bank)}
    scorers["reversed"] = scorers["standard"].reversed()
    known, test = list(data.bank.train_ids), list(data.bank.test_ids)
    mean_response, test_mean = _population_mean(data, known), _population_mean(data, test)
    t0 = time.perf_counter()
    base = {o: sc.score(test).expected for o, sc in scorers.items()}
    vector_shape = (layout(model).n_layers, layout(model).n_heads, layout(model).head_dim)
    result: dict = {"machine": machine_info(),
                    "base_mean_answer": {o: round(float(b.mean()), 3) for o, b in base.items()},
                    # does the unsteered model's answer follow what a statement means to people, in either order?
                    "base_vs_population_mean_r": {o: round(float(np.corrcoef(b, test_mean)[0, 1]), 3)
                                                  for o, b in base.items()},
                    "base_standard_vs_reversed_r": round(float(np.corrcoef(base["standard"], base["reversed"])[0, 1]),
                                                         3),
                    "layers": {}}
    print({k: v for k, v in result.items() if k != "machine"}, flush=True)
    if args.layers:
        states = {o: answer_states(sc, known).residual for o, sc in scorers.items()}  # [120, L + 1, hidden]
        jacobians = calibrations(scorers["standard"], known, both_orders=True)
    for layer in args.layers:
        row = {}
        for kind, orders in (("both", ("standard", "reversed")), ("standard", ("standard",))):
            d, norm = _direction([states[o][:, layer + 1] for o in orders], [mean_response] * len(orders))
            for size in args.sizes:
                row[f"{kind} {size:g}|h|"] = _shift(scorers, test, base, _push(model, layer, d, size * norm))
        tilt = pushes(jacobians, layer)[0] / layout(model).n_heads  # linearised: +1 answer point, both orders
        for gain in args.gains:
            offsets = torch.zeros(vector_shape)
            offsets[layer] = tilt * gain
            row[f"jacobian x{gain:g}"] = _shift(scorers, test, base,
                                                SteeringVector.for_model(model, offsets, positions="last"))
        result["layers"][layer] = row
        print(f"layer {layer}: {row}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_model_args(p)
    p.add_argument("--layers", type=int, nargs="*", default=[4, 8, 12, 16, 20, 24, 28, 29],
                   help="layers to push at (none: only the unsteered model's correlations)")
    p.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                   help="ridge-direction pushes, as fractions of the states' mean norm at the layer")
    p.add_argument("--gains", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                   help="jacobian pushes: multiples of the linearised +1-answer-point push")
    run_and_finish(p, run)


if __name__ == "__main__":
    main()
