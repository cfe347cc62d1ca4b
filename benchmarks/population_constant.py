"""Constant PAS for many people at once vs one at a time: people per second of ``ConstantPlan.fit_many`` and of
``fit_subject`` in a loop, in the same run, on the real model and the first N real people.

    python benchmarks/population_constant.py [--data-dir DIR] [--people 16] [--threads N] [--max-rows 512]
                                             [--learned] [--json PATH]

Both sides start warm: one fit_subject on a person outside the N first (the activation cache read, the shared
encodings, the probe kernels compiled), and the plan's one-time work timed apart. Then the batched side fits the
N people, then fit_subject fits them one at a time (scorer shared, as ``pas eval`` shares it). The vectors are
compared: strengths chosen, largest offset difference, answers on the 180 test items.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pas import load_model, load_papi
from pas.fit.align import fit_subject
from pas.fit.config import PASConfig
from pas.population.constant_many import ConstantPlan
from pas.score.many import score_many
from pas.score.scorer import ItemScorer

from common import add_run_args, apply_threads, finish


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--people", type=int, default=16, help="the first N real people (default 16)")
    p.add_argument("--max-rows", type=int, default=512, help="prompts x strengths per forward pass (default 512)")
    p.add_argument("--learned", action="store_true", help="pas-learned (offsets learned after the search; the "
                                                          "learning is not batched)")
    add_run_args(p)
    return p.parse_args(argv)


def one_at_a_time(model: torch.nn.Module, scorer: ItemScorer, people: list, config: PASConfig) -> dict:
    """fit_subject per person: {case: vector, report} (people it refuses left out)."""
    out = {}
    for s in people:
        try:
            out[s.case] = fit_subject(model, s, config, scorer=scorer, progress=False)
        except ValueError:
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_threads(args)
    data = load_papi(args.data_dir)
    model, tok = load_model()
    scorer = ItemScorer(model, tok, data.bank)
    config = PASConfig(learn=args.learned)
    people = data.subjects[: args.people]
    fit_subject(model, data.subjects[args.people], PASConfig(learn=False), scorer=scorer, progress=False)  # warm
    t0 = time.perf_counter()
    plan = ConstantPlan(scorer, config, max_rows=args.max_rows)
    t1 = time.perf_counter()
    fits, skipped = plan.fit_many(people)
    t2 = time.perf_counter()
    alone = one_at_a_time(model, scorer, people, config)
    t3 = time.perf_counter()
    batched_rate, alone_rate = len(fits) / (t2 - t1), len(alone) / (t3 - t2)
    pairs = [(f, alone[f.vector.provenance.subject or ""]) for f in fits]
    ids = data.bank.test_ids
    got = score_many(scorer, ids, [f.vector for f, _ in pairs])
    want = score_many(scorer, ids, [v for _, (v, _) in pairs])
    result = {
        "people": len(people), "method": plan.method, "threads": torch.get_num_threads(),
        "max_rows": args.max_rows, "plan_one_time_seconds": round(t1 - t0, 2),
        "batched_seconds": round(t2 - t1, 2), "one_at_a_time_seconds": round(t3 - t2, 2),
        "batched_people_per_second": round(batched_rate, 4), "one_at_a_time_people_per_second": round(alone_rate, 4),
        "ratio": round(batched_rate / alone_rate, 2),
        "skipped": len(skipped), "refused_one_at_a_time": len(people) - len(alone),
        "same_strength": sum(f.choice == (r.alpha,) for f, (_, r) in pairs),
        "max_offset_difference": max((float((f.vector.offsets - v.offsets).abs().max()) for f, (v, _) in pairs),
                                     default=0.0),
        "same_test_answers": sum(bool(np.array_equal(a.answers, b.answers)) for a, b in zip(got, want, strict=True)),
    }
    finish(args, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
