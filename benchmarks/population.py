"""Aligning a whole population (pas-gated): the population path against each person alone, on the real people.

    python benchmarks/population.py real [--first 200] [--out DIR] [--threads N] [--json PATH]
    python benchmarks/population.py compare [--out DIR]   # the comparisons on what the stores hold so far
    python benchmarks/population.py speed [--people-source PATH] [--first N] [--threads N]

``speed``: the fast calibration's people/s with the fused kernel (:func:`pas_kernels.silu_mlp_letters`)
and with plain torch (``PAS_COMPILE=0``), side by side on the same people in one process, after the
one-time work (timed apart); the two must choose the same settings. Default people: the real ones;
``--people-source`` takes a synthetic file (``pas synth``) for more.

Three stores of the same people, each resumed if the run is cut off:

- ``single``: ``fit_subject`` person by person (what ``pas align`` does), on a scorer of its own;
- ``exact``: ``align_population`` with exact calibration (people batched, steered passes);
- ``fast``: ``align_population`` with the fast calibration (:mod:`pas.population.subspace`).

Then every vector is scored on the 180 test items (one batched pass per store) and compared: exact
against single, and fast against exact: the share of (person, item) answers that agree (the exact path:
identical; an approximate one: >= 99%, composite within 0.01), people with identical vectors. Seconds are per store,
one-time work apart; run it alone (or with ``--threads 1``), these are timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from pas.core.data import Subject, load_papi
from pas.core.models import load_model
from pas.eval.report import machine_info
from pas.fit.align import fit_subject
from pas.fit.config import GatedConfig
from pas.population.fit import align_population
from pas.population.store import PopulationStore, StoreProvenance
from pas.score.many import score_many
from pas.score.metric import Prediction, subject_errors
from pas.score.scorer import ItemScorer
from pas.steer.signature import ModelSignature

from common import add_run_args, apply_threads, finish


def _store(path: Path, model: object, data_root: str) -> PopulationStore:
    if (path / "store.json").exists():
        return PopulationStore.open(path)
    provenance = StoreProvenance(data=data_root, synthetic=False, config=dataclasses.asdict(GatedConfig()))
    return PopulationStore.create(path, ModelSignature.of(model), provenance)


def fit_single(model: object, tok: object, data: object, people: list[Subject], path: Path) -> dict:
    """``fit_subject`` person by person into a store (people already there are not fitted again)."""
    scorer = ItemScorer(model, tok, data.bank)
    seconds, fitted = 0.0, 0
    with _store(path, model, str(data.root)) as store:
        for s in people:
            if s.case in store:
                continue
            t0 = time.perf_counter()
            vector, _ = fit_subject(model, s, GatedConfig(), scorer=scorer, progress=False)
            seconds += time.perf_counter() - t0
            store.add_many([vector])
            store.flush()
            fitted += 1
            print(f"single: {s.case} ({fitted} fitted, {seconds / fitted:.1f} s each)", file=sys.stderr, flush=True)
    return {"fitted": fitted, "seconds": round(seconds, 2),
            "people_per_second": round(fitted / seconds, 3) if seconds else None}


def fit_population(model: object, tok: object, data: object, people: list[Subject], path: Path,
                   calibration: str) -> dict:
    """``align_population`` into a store (resumed)."""
    scorer = ItemScorer(model, tok, data.bank)
    with _store(path, model, str(data.root)) as store:
        report = align_population(scorer, people, GatedConfig(), store=store, calibration=calibration)
    return report.summary()


def answers(model: object, tok: object, data: object, people: list[Subject], path: Path
            ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each stored person's steered answers on the 180 test items, and their composite there."""
    scorer = ItemScorer(model, tok, data.bank)
    store = PopulationStore(path)
    stored = [s for s in people if s.case in store]
    ids = data.bank.test_ids
    dists = score_many(scorer, ids, [store[s.case] for s in stored])
    got, composite = {}, {}
    for s, d in zip(stored, dists, strict=True):
        got[s.case] = d.answers
        composite[s.case] = subject_errors(data.bank, s, Prediction(tuple(ids), d.answers, d.expected)).composite
    return got, composite


def compare(a: tuple[dict, dict], b: tuple[dict, dict], people: list[Subject]) -> dict:
    """Share of (person, item) answers that agree, people with identical answers, mean composites."""
    cases = [s.case for s in people if s.case in a[0] and s.case in b[0]]
    same = np.concatenate([a[0][c] == b[0][c] for c in cases])
    ca, cb = np.mean([a[1][c] for c in cases]), np.mean([b[1][c] for c in cases])
    return {"people": len(cases), "answer_agreement": round(float(same.mean()), 5),
            "people_identical": sum(bool((a[0][c] == b[0][c]).all()) for c in cases),
            "composite": [round(float(ca), 4), round(float(cb), 4)], "composite_difference": round(float(ca - cb), 4)}


def real(args: argparse.Namespace) -> dict:
    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    people = list(data.subjects[: args.first])
    out = Path(args.out)
    result: dict = {"machine": machine_info(), "data": str(data.root), "people": len(people)}
    result["fast"] = fit_population(model, tok, data, people, out / "fast", "fast")
    result["exact"] = fit_population(model, tok, data, people, out / "exact", "exact")
    result["single"] = fit_single(model, tok, data, people, out / "single")
    scored = {name: answers(model, tok, data, people, out / name) for name in ("single", "exact", "fast")}
    result["exact_vs_single"] = compare(scored["exact"], scored["single"], people)
    result["fast_vs_exact"] = compare(scored["fast"], scored["exact"], people)
    result["fast_vs_single"] = compare(scored["fast"], scored["single"], people)
    exact, fast = PopulationStore(out / "exact"), PopulationStore(out / "fast")
    same_vector = [s.case for s in people if s.case in exact and s.case in fast
                   and bool((exact[s.case].gates.weights == fast[s.case].gates.weights).all())
                   and bool((exact[s.case].gates.bias == fast[s.case].gates.bias).all())]
    result["fast_vs_exact"]["identical_vectors"] = len(same_vector)
    return result


def compare_stores(args: argparse.Namespace) -> dict:
    """The comparisons of :func:`real` on whatever the stores hold now (people in both sides of a pair)."""
    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    out = Path(args.out)
    present = [name for name in ("single", "exact", "fast") if (out / name / "store.json").exists()]
    people = list(data.subjects[: args.first])
    scored = {name: answers(model, tok, data, people, out / name) for name in present}
    result: dict = {"machine": machine_info(), "stored": {name: len(scored[name][0]) for name in present}}
    for a, b in (("exact", "single"), ("fast", "exact"), ("fast", "single")):
        if a in scored and b in scored:
            result[f"{a}_vs_{b}"] = compare(scored[a], scored[b], people)
    return result


def speed(args: argparse.Namespace) -> dict:
    """People/s of the fast calibration, fused kernel vs plain torch, on the same people (see the module doc)."""
    from pas.population.gated_many import GatedPlan
    from pas.population.source import open_people

    source = open_people(args.data_dir, args.people_source)
    people = list(source.check().select(first=args.first))
    model, tok = load_model(args.model)
    scorer = ItemScorer(model, tok, source.bank)
    t0 = time.perf_counter()
    plan = GatedPlan(scorer, GatedConfig(), calibration="fast")
    one_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan.fit_many(people)  # the kernel compiled for the blocks' shapes (one-time too)
    compile_seconds = time.perf_counter() - t0
    result: dict = {"machine": machine_info(), "people_source": source.origin, "people": len(people),
                    "synthetic": source.synthetic, "one_time_seconds": round(one_time, 1),
                    "first_call_seconds": round(compile_seconds, 1)}
    choices: dict[str, list] = {}
    for name, flag in (("fused", "1"), ("plain", "0")) * args.repeats:  # alternating; each mode's best run kept
        before = os.environ.get("PAS_COMPILE")
        os.environ["PAS_COMPILE"] = flag
        try:
            t0 = time.perf_counter()
            fits, skipped = plan.fit_many(people)
            seconds = time.perf_counter() - t0
        finally:
            os.environ.pop("PAS_COMPILE") if before is None else os.environ.__setitem__("PAS_COMPILE", before)
        choices[name] = [f.choice for f in fits]
        if name not in result or seconds < result[name]["seconds"]:
            result[name] = {"fitted": len(fits), "skipped": len(skipped), "seconds": round(seconds, 2),
                            "people_per_second": round(len(fits) / seconds, 1)}
    result["fused_over_plain"] = round(result["fused"]["people_per_second"] / result["plain"]["people_per_second"], 2)
    result["same_choices"] = choices["fused"] == choices["plain"]
    result["hours_for_300k_fused"] = round(300_000 / result["fused"]["people_per_second"] / 3600, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    for name, what in (("real", "population path vs each person alone, on the real people"),
                       ("compare", "the comparisons of `real` on the people the stores hold so far")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, ./papi, ../shared/papi)")
        p.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
        p.add_argument("--first", type=int, default=200, help="the first N people (default 200)")
        p.add_argument("--out", default="results/population-real", help="folder of the three stores")
        add_run_args(p)
    p = sub.add_parser("speed", help="people/s of the fast calibration: fused kernel vs plain torch, side by side")
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, ./papi, ../shared/papi)")
    p.add_argument("--people-source", help="people to fit (default: the data dir's; e.g. a `pas synth` file)")
    p.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--first", type=int, default=200, help="the first N people (default 200)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per mode, alternating; the best kept (default 3)")
    add_run_args(p)
    args = parser.parse_args()
    apply_threads(args)
    finish(args, {"real": real, "compare": compare_stores, "speed": speed}[args.what](args))


if __name__ == "__main__":
    main()
