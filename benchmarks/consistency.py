"""Consistency report: template stability, resistance to induction, development (``benchmarks.measures.consistency``).

Uses the ten trait-pole vectors (built on the IPIP-NEO-120 statements) and assesses on the other
180 items; the prompted counterpart is each pole's system prompt (``measures.poles.POLE_PROMPTS``).
Development: one person's pas-gated vector + a growing fraction of a pole. Writes results.json,
tables.md and a bar plot of the induction result.

    python benchmarks/consistency.py --threads 2 --out results/consistency --png docs/induction.png
"""

from __future__ import annotations

import argparse
import time

from pas.core.data import select_subjects
from pas.eval.report import machine_info
from pas.fit.align import fit_subject
from pas.fit.config import GatedConfig
from pas.space.poles import pole_vectors

from common import add_assessment_args, load_assessment, write_outputs
from measures.consistency import development, induction, template_stability
from measures.tables import consistency_tables, induction_plot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_assessment_args(p, out="results/consistency", png="docs/induction.png")
    p.add_argument("--person", default="295077", help="subject whose pas-gated vector grows by a pole")
    p.add_argument("--grow", default="C+", help="the pole added to the person in growing fractions")
    p.add_argument("--adapt", action="store_true",
                   help="re-centre each vector's gates for the other wording / the pressured context "
                        "(pas.fit.gated.recentre: prompts only, no answers)")
    args = p.parse_args(argv)
    data, scorer, ids = load_assessment(args)
    t = time.perf_counter()
    poles = pole_vectors(scorer)
    stability = template_stability(scorer, poles, ids, adapt=args.adapt)
    pushed = induction(scorer, poles, ids, adapt=args.adapt)
    (person,) = select_subjects(data.subjects, [args.person])
    vector, _ = fit_subject(scorer.model, person, GatedConfig(), tokenizer=scorer.tokenizer, scorer=scorer,
                            progress=False)
    grown = development(scorer, vector, args.grow, poles[args.grow], ids)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "seconds": time.perf_counter() - t,
              "items": "180 (not used to build the vectors)", "adapt": args.adapt, "template_stability": stability,
              "induction": pushed, "development": {"person": person.case, **grown}}
    tables = consistency_tables(stability, pushed, grown)
    induction_plot(pushed, write_outputs(args, result, tables))
    print(tables)
    print(f"written: {args.out}/results.json, {args.out}/tables.md, {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
