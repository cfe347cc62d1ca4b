"""Batched torch probes vs the scikit-learn loop: seconds and top-K overlap, side by side in one run.

    python benchmarks/probe_fit.py [--data-dir DIR] [--subjects 50] [--k 24] [--json PATH]

Uses the real model's cached contrastive activations and real subjects' fit items, exactly as
align_to_subject does. The scikit-learn loop runs with two solvers: its default L-BFGS (what the
paper's code uses) and Newton-Cholesky (the same algorithm as ours, and our reference path).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from pas import load_model, load_papi
from pas.fit.activations import head_activations
from pas.fit.config import PASConfig
from pas.fit.directions import (
    SKLEARN_SOLVER,
    contrast_set,
    head_problems,
    sklearn_probe_accuracies,
    split_by_item,
    top_heads,
)
from pas.fit.optimize import split_known
from pas_kernels import many_subject_accuracies
from pas_kernels.compile import compile_seconds

from common import add_run_args, apply_threads, finish

SOLVERS = ("lbfgs", SKLEARN_SOLVER)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--subjects", type=int, default=50, help="subjects in the many-subject run (default 50)")
    p.add_argument("--k", type=int, default=PASConfig.k, help="heads kept (default 24)")
    add_run_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args)
    cfg = PASConfig()
    data = load_papi(args.data_dir)
    model, tok = load_model()
    acts = head_activations(model, tok, data.bank, data.bank.train_ids)
    sets = []
    for s in data.subjects[: args.subjects]:
        known = s.responses_to(data.bank.train_ids)
        fit, _ = split_known(data.bank, known, cfg.val_fraction, cfg.seed)
        d = contrast_set(acts.subset(fit), known)
        sets.append((d, *split_by_item(d.group, cfg.probe_val_fraction, cfg.seed)))
    many_subject_accuracies([head_problems(*sets[0])])  # compile once, reported separately
    result = {"compile_seconds": dict(compile_seconds), "device": str(model.device), "threads": torch.get_num_threads()}
    for label, group in (("one_subject", sets[:1]), (f"{len(sets)}_subjects", sets)):
        t = time.perf_counter()
        th = many_subject_accuracies([head_problems(d, tr, va) for d, tr, va in group])  # batched per subject
        t_th = time.perf_counter() - t
        th = [a.reshape(sets[0][0].x.shape[1:3]).float() for a in th]
        row = {"torch_seconds": t_th}
        for solver in SOLVERS:
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lbfgs: ConvergenceWarning on some heads
                sk = [sklearn_probe_accuracies(d, tr, va, cfg.seed, solver=solver) for d, tr, va in group]
            t_sk = time.perf_counter() - t
            overlap = [len(set(top_heads(a, args.k)) & set(top_heads(b, args.k))) / args.k
                       for a, b in zip(sk, th, strict=True)]
            row[solver] = {"sklearn_seconds": t_sk, "speedup": t_sk / t_th,
                           "topk_overlap_mean": float(np.mean(overlap)), "topk_overlap_min": float(np.min(overlap)),
                           "max_abs_accuracy_diff": float(max((a - b).abs().max()
                                                              for a, b in zip(sk, th, strict=True)))}
            print(f"{label}: scikit-learn ({solver}) {t_sk:.2f} s, torch batched {t_th:.3f} s, "
                  f"speed-up {t_sk / t_th:.1f}x, top-{args.k} overlap mean {np.mean(overlap):.3f} "
                  f"(min {np.min(overlap):.3f})", flush=True)
        result[label] = row
    finish(args, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
