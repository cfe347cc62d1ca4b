"""``pas synth`` and ``pas align-population``: the population commands (parsing and running only)."""

from __future__ import annotations

import argparse
import sys

from pas.cli.args import Subparsers, UsageError, add_data_args, add_model_args, add_threads_arg, subjects


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
    p.add_argument("--kind", choices=["gated"], default="gated",
                   help="gated (the only kind fitted as a population so far; constant PAS: pas align per person)")
    p.add_argument("--out", required=True, help="the store folder: created, or resumed when it holds a store")
    p.add_argument("--chunk", type=int, default=64, help="people fitted together (default 64)")
    add_threads_arg(p)
    p.set_defaults(func=cmd_align_population)


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
    import json
    from pathlib import Path

    from pas.core.data import load_papi
    from pas.core.models import load_model
    from pas.fit.config import GatedConfig
    from pas.population.fit import align_population
    from pas.population.header import StoreProvenance
    from pas.population.store import PopulationStore
    from pas.score.scorer import ItemScorer
    from pas.steer.signature import ModelSignature

    if args.chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {args.chunk}")
    data = load_papi(args.data_dir, encoding=args.encoding)
    people = subjects(args, data) if (args.subject or args.first is not None) else list(data.subjects)
    declared = Path(data.root) / "papi.json"
    synthetic = bool(declared.is_file() and json.loads(declared.read_text()).get("synthetic"))
    config = GatedConfig()
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
    with store:
        report = align_population(ItemScorer(model, tok, data.bank), people, config, store=store, chunk=args.chunk)
    stats = PopulationStore(out).stats()
    label = "SYNTHETIC" if synthetic else "real"
    print(f"{label} people of {data.root}: {report.fitted} fitted, {report.already_stored} already stored, "
          f"{len(report.skipped)} skipped; one-time work {report.one_time_seconds:.1f} s, per-person work "
          f"{report.seconds:.1f} s ({report.people_per_second:.2f} people/s); store {out}: {stats.people} people, "
          f"{stats.bytes / 2**20:.1f} MiB ({stats.bytes_per_person:,.0f} bytes per person)")
    for s in report.skipped:
        print(f"note: skipped {s.case}: {s.reason}", file=sys.stderr)
    return 0
