"""Consistency report: template stability, resistance to induction, development (``pas.consistency``).

Uses the ten trait-pole vectors (built on the IPIP-NEO-120 statements) and assesses on the other
180 items; the prompted counterpart is each pole's system prompt (``pas.traits.POLE_PROMPTS``).
Development: one person's pas-gated vector + a growing fraction of a pole. Writes results.json,
tables.md and a bar plot of the induction result.

    python benchmarks/consistency.py --threads 2 --out results/consistency --png docs/induction.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import apply_threads
from pas import load_model
from pas.align import PASConfig, fit_subject
from pas.assess import inventory_ids
from pas.consistency import development, induction, template_stability
from pas.data import load_papi, select_subjects
from pas.report import consistency_tables, dumps, induction_plot, machine_info
from pas.scoring import ItemScorer
from pas.traits import pole_vectors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--person", default="295077", help="subject whose pas-gated vector grows by a pole")
    p.add_argument("--grow", default="C+", help="the pole added to the person in growing fractions")
    p.add_argument("--out", default="results/consistency", help="folder for results.json and tables.md")
    p.add_argument("--png", default="docs/induction.png", help="induction bar plot")
    p.add_argument("--adapt", action="store_true",
                   help="re-centre each vector's gates for the other wording / the pressured context "
                        "(pas.gated.recentre: prompts only, no answers)")
    p.add_argument("--threads", type=int, help="torch threads")
    args = p.parse_args(argv)
    apply_threads(args)

    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    scorer = ItemScorer(model, tok, data.bank)
    ids = inventory_ids(data.bank, "180")
    t = time.perf_counter()
    poles = pole_vectors(scorer)
    stability = template_stability(scorer, poles, ids, adapt=args.adapt)
    pushed = induction(scorer, poles, ids, adapt=args.adapt)
    (person,) = select_subjects(data.subjects, [args.person])
    vector, _ = fit_subject(model, person, PASConfig(kind="gated"), tokenizer=tok, scorer=scorer, progress=False)
    grown = development(scorer, vector, args.grow, poles[args.grow], ids)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "seconds": time.perf_counter() - t,
              "items": "180 (not used to build the vectors)", "adapt": args.adapt, "template_stability": stability,
              "induction": pushed, "development": {"person": person.case, **grown}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(dumps(result, indent=1))
    tables = consistency_tables(stability, pushed, grown)
    (out / "tables.md").write_text(tables + "\n")
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    induction_plot(pushed, Path(args.png))
    print(tables)
    print(f"written: {out / 'results.json'}, {out / 'tables.md'}, {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
