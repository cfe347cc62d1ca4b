"""``pas synth`` and ``pas align-population``: the population commands (parsing and running only)."""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from pas.cli.args import Subparsers, UsageError, add_data_args, add_model_args, add_threads_arg
from pas.population.source import BAD_ROWS_FILE, CheckedPeople, PeopleSource, open_people

if TYPE_CHECKING:
    from pas.population.plan import Executor


def add_parsers(sub: Subparsers) -> None:
    """The population commands."""
    p = sub.add_parser("synth", help="write a SYNTHETIC population sampled from the real people of a data dir "
                                     "(a Gaussian copula over the 300 items), in PAPI's format")
    p.add_argument("--data-dir", help="the real people to fit (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--people", type=int, required=True, help="how many synthetic people (e.g. 300000)")
    p.add_argument("--out", required=True, help="folder to write (items.csv, subjects.*, papi.json)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): the same seed gives the same people")
    p.add_argument("--format", default="json,parquet",
                   help="json, parquet or both, comma-separated (default both; for large runs use parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic output in --out")
    add_threads_arg(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("align-population", help="fit every person of a data dir into a population vector store "
                                                "(resumes an existing store)")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--kind", choices=["gated", "constant", "learned"], default="gated",
                   help="gated (pas-gated, default), constant (pas: searched strength) or learned (pas-learned: "
                        "the search batched, the learning person by person); the defaults of pas align --kind")
    p.add_argument("--calibration", choices=["auto", "fast", "exact"], default="auto",
                   help="gated only: how each person's (gain, shift) is chosen: exact (steered passes), fast (the "
                        "same choice, the last layer computed in the gates' span; Llama family) or auto (fast "
                        "where it applies; default)")
    p.add_argument("--out", required=True, help="the store folder: created, or resumed when it holds a store")
    p.add_argument("--people-source", metavar="SOURCE",
                   help="where the people are, if not in --data-dir (which still gives the items and encoding): a "
                        "subjects .json or .parquet file, a folder of .parquet files (PAPI-300K's layout), a datasets "
                        "folder, or hf:HUB_ID (streamed with datasets, e.g. hf:WestlakeNLP/PAPI-300K; needs network)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad rows (a wrong answer, an unknown item, no or a repeated case id) and list them in "
                        "--bad-rows, instead of stopping at the first one before any fitting")
    p.add_argument("--bad-rows", metavar="FILE",
                   help=f"with --skip-bad: the report of skipped rows, JSON lines (default: {BAD_ROWS_FILE} in --out)")
    p.add_argument("--chunk", type=int, default=64, help="people fitted together (default 64)")
    p.add_argument("--flush-seconds", type=float, default=30.0,
                   help="commit fitted people to the store at least this often (default 30; a killed run fits "
                        "again at most that much work)")
    p.add_argument("--workers", type=int, help="fit on N Ray workers of one torch thread each (a local Ray cluster "
                                               "started for this run, or --address's); needs pip install 'pas[ray]'")
    p.add_argument("--address", help="join a running Ray cluster (ray.init(address=...): auto, or HOST:PORT) and fit "
                                     "on its workers (one per CPU, or --workers N)")
    add_threads_arg(p)
    p.set_defaults(func=cmd_align_population)

    p = sub.add_parser("population-map", help="fit a population map (pas-population): how known answers map to what "
                                              "a person's gates predict, learned across every person of a data dir")
    add_data_args(p, subjects=False)
    add_model_args(p)
    p.add_argument("--people-source", metavar="SOURCE", help="where the people are, as for align-population")
    p.add_argument("--first", type=int, help="learn from the first N people only")
    p.add_argument("--setting", choices=["short", "full"], default="short",
                   help="short: learn from the people's short-form answers only (default); full: all 300")
    p.add_argument("--layer", type=int, default=-1, help="the gated layer (default -1: the last)")
    p.add_argument("--components", type=int, help="statement components per head (default: chosen by "
                                                  "cross-validation on the first people)")
    p.add_argument("--ridge", type=float, help="ridge strength (default: chosen with --components)")
    p.add_argument("--gain", type=float, help="the gates' gain (default: chosen with --shift on the first people's "
                                              "known answers, with the steered model)")
    p.add_argument("--shift", type=float, help="the gates' shift (default: chosen with --gain)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows instead of stopping at the first one")
    p.add_argument("--out", required=True, help="the map file (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_threads_arg(p)
    p.set_defaults(func=cmd_population_map)


def cmd_population_map(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from pas.core.models import load_model
    from pas.population.informed import fit_map_from_source
    from pas.score.scorer import ItemScorer

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; give --overwrite to replace it")
    if args.first is not None and args.first < 2:
        raise UsageError(f"--first must be >= 2 (a map learns across people), got {args.first}")
    source = open_people(args.data_dir, args.people_source, encoding=args.encoding)
    model, tok = load_model(args.model, dtype=args.dtype)
    t0 = time.perf_counter()
    last = [t0]

    def progress(people: int) -> None:
        if time.perf_counter() - last[0] > 5:
            last[0] = time.perf_counter()
            print(f"  {people:,} people read ({people / (last[0] - t0):,.0f}/s)", file=sys.stderr, flush=True)

    pmap = fit_map_from_source(ItemScorer(model, tok, source.bank), source, args.setting, first=args.first,
                               skip_bad=args.skip_bad, progress=progress, layer=args.layer,
                               components=args.components, ridge=args.ridge, gain=args.gain, shift=args.shift)
    pmap.save(out)
    label = "SYNTHETIC" if source.synthetic else "real"
    print(f"population map of {pmap.people:,} {label} people of {source.origin} ({pmap.setting}): layer {pmap.layer}, "
          f"{pmap.components} components, ridge {pmap.ridge:g}, gain {pmap.gain:g}, shift {pmap.shift:g}; "
          f"{time.perf_counter() - t0:.1f} s; saved to {out}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from pas.population.synth_write import write_synthetic

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    if args.people < 1:
        raise UsageError(f"--people must be >= 1, got {args.people}")
    report = write_synthetic(args.data_dir, args.out, args.people, seed=args.seed, formats=formats,
                             overwrite=args.overwrite)
    r = report.resemblance
    files = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in report.files.items())
    print(f"SYNTHETIC population: {report.people} people sampled from {report.source} (seed {report.seed}) in "
          f"{report.seconds:.1f} s ({report.people_per_second:,.0f} people/s); wrote {files} under {report.out_dir}")
    print(f"resemblance to the {r.people_real} real people ({r.people_synthetic} synthetic compared): item-pair "
          f"correlations differ by {r.mean_abs_dr:.4f} on average (target <= 0.05); opposite-keyed within-facet "
          f"correlation {r.opposite_key_synthetic:+.3f} vs real {r.opposite_key_real:+.3f} (target within 0.05)"
          f"{'' if r.ok else ' — TARGETS MISSED'}")
    if not r.ok:
        print("note: the synthetic sample does not resemble its source closely enough (see above)", file=sys.stderr)
    return 0


def cmd_align_population(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from pas.core.models import load_model
    from pas.fit.config import FitConfig, GatedConfig, PASConfig
    from pas.population.fit import align_population
    from pas.population.header import StoreProvenance
    from pas.population.store import PopulationStore
    from pas.score.scorer import ItemScorer
    from pas.steer.signature import ModelSignature

    if args.chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {args.chunk}")
    executor = _executor(args)  # a missing Ray is said before any work
    data, checked = _checked_people(args)  # the whole input checked before any fitting
    people = checked.select(args.subject or None, args.first)
    synthetic = data.synthetic
    config: FitConfig = GatedConfig() if args.kind == "gated" else PASConfig(learn=args.kind == "learned")
    if args.kind != "gated" and args.calibration != "auto":
        raise UsageError("--calibration is for --kind gated")
    model, tok = load_model(args.model, dtype=args.dtype)
    out = Path(args.out)
    if (out / "store.json").exists():
        store = PopulationStore.open(out)
        had = store.provenance
        if had.config != dataclasses.asdict(config) or had.synthetic != synthetic:
            raise UsageError(f"{out} holds a store fitted with other settings or data (config {had.config}, "
                             f"synthetic {had.synthetic}); give another --out")
        print(f"resuming {out}: {len(store)} people already stored", file=sys.stderr)
    else:
        provenance = StoreProvenance(data=str(Path(data.root).resolve()), synthetic=synthetic,
                                     config=dataclasses.asdict(config))
        store = PopulationStore.create(out, ModelSignature.of(model), provenance)
    if args.skip_bad:
        bad_rows = checked.write_bad_rows(args.bad_rows or out / BAD_ROWS_FILE)
    with store, executor as run:
        report = align_population(ItemScorer(model, tok, data.bank), people, config, store=store, chunk=args.chunk,
                                  calibration=args.calibration, executor=run, flush_seconds=args.flush_seconds)
    stats = PopulationStore(out).stats()
    label = "SYNTHETIC" if synthetic else "real"
    print(f"{label} people of {data.root}: {report.fitted} fitted, {report.already_stored} already stored, "
          f"{len(report.skipped)} skipped; one-time work {report.one_time_seconds:.1f} s, per-person work "
          f"{report.seconds:.1f} s ({report.people_per_second:.2f} people/s); store {out}: {stats.people} people, "
          f"{stats.bytes / 2**20:.1f} MiB ({stats.bytes_per_person:,.0f} bytes per person)")
    for s in report.skipped:
        print(f"note: skipped {s.case}: {s.reason}", file=sys.stderr)
    if args.skip_bad:
        print(f"{len(checked.bad)} bad rows of {checked.rows} skipped, listed in {bad_rows}")
    return 0


def _checked_people(args: argparse.Namespace) -> tuple[PeopleSource, CheckedPeople]:
    """The people ``--data-dir`` / ``--people-source`` name, read through once and checked (a bad row stops
    the run naming it, or with ``--skip-bad`` is listed); reads a chunk at a time, holds no one."""
    import time

    if args.bad_rows is not None and not args.skip_bad:
        raise UsageError("--bad-rows goes with --skip-bad (without it the first bad row stops the run)")
    t0 = time.perf_counter()
    source = open_people(args.data_dir, args.people_source, encoding=args.encoding)
    checked = source.check(skip_bad=args.skip_bad)
    print(f"checked {source.origin}: {checked.rows} rows, {checked.people} people, {len(checked.bad)} bad rows "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return source, checked


def _executor(args: argparse.Namespace) -> AbstractContextManager[Executor]:
    """Where chunks are fitted: here, or on Ray workers when ``--workers`` or ``--address`` asks (started on entering
    the ``with`` block, they load their model while this process does the plan's one-time work)."""
    from contextlib import nullcontext

    from pas.population.plan import fit_here

    if args.workers is None and args.address is None:
        return nullcontext(fit_here)
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    from pas.population.distributed import RayExecutor

    try:
        return RayExecutor(args.model, args.dtype, workers=args.workers, address=args.address)
    except ImportError as e:
        raise UsageError(str(e)) from e
