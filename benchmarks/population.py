"""Aligning a whole population (pas-gated): the population path against each person alone, on the real people.

    python benchmarks/population.py real [--first 200] [--out DIR] [--threads N] [--json PATH]

Three stores of the same people, each resumed if the run is cut off:

- ``single``: ``fit_subject`` person by person (what ``pas align`` does), on a scorer of its own;
- ``exact``: ``align_population`` with exact calibration (people batched, steered passes);
- ``table``: ``align_population`` with the response table (:mod:`pas.population.table`).

Then every vector is scored on the 180 test items (one batched pass per store) and compared: exact
against single (identical answers is the target), table against exact (share of (person, item) answers
that agree >= 99%, mean composite within 0.01), and the choices of (gain, shift). Seconds are per store,
one-time work apart; run it alone (or with ``--threads 1``), these are timings.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    result["single"] = fit_single(model, tok, data, people, out / "single")
    result["exact"] = fit_population(model, tok, data, people, out / "exact", "exact")
    result["table"] = fit_population(model, tok, data, people, out / "table", "table")
    scored = {name: answers(model, tok, data, people, out / name) for name in ("single", "exact", "table")}
    result["exact_vs_single"] = compare(scored["exact"], scored["single"], people)
    result["table_vs_exact"] = compare(scored["table"], scored["exact"], people)
    exact, table = PopulationStore(out / "exact"), PopulationStore(out / "table")
    same_vector = [s.case for s in people if s.case in exact and s.case in table
                   and bool((exact[s.case].gates.weights == table[s.case].gates.weights).all())
                   and bool((exact[s.case].gates.bias == table[s.case].gates.bias).all())]
    result["table_vs_exact"]["identical_vectors"] = len(same_vector)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("real", help="population path vs each person alone, on the real people")
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--first", type=int, default=200, help="the first N people (default 200)")
    p.add_argument("--out", default="results/population-real", help="folder of the three stores")
    add_run_args(p)
    args = parser.parse_args()
    apply_threads(args)
    finish(args, {"real": real}[args.what](args))


if __name__ == "__main__":
    main()
