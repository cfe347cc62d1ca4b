"""The controllability picture: steer to each trait pole and MBTI type, assess, compare with prompting.

Builds the ten pole vectors from the IPIP-NEO-120 statements (timed), assesses the steered model
on the other 180 items at several strengths (``measures.poles.measure_poles``), with the perplexity
ratio on neutral chat replies and the prompting baseline, then the 16 types
(``measures.poles.measure_types``). Writes results.json, tables.md and a heatmap PNG.

    python benchmarks/traits.py --threads 2 --out results/traits --png docs/traits_heatmap.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pas.core.data import DOMAINS
from pas.eval.report import machine_info
from pas.space.poles import POLE_SOURCES, POLES, pole_vectors

from common import add_assessment_args, load_assessment, write_outputs
from measures.poles import measure_poles, measure_types
from measures.tables import heatmap, poles_table, types_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_assessment_args(p, out="results/traits", png="docs/traits_heatmap.png")
    p.add_argument("--strengths", default="0.5,1,2", help="pole strengths to assess (default 0.5,1,2)")
    p.add_argument("--no-prompts", action="store_true", help="skip the prompting baseline")
    p.add_argument("--no-fluency", action="store_true", help="skip the perplexity ratios and chat strengths")
    p.add_argument("--source", choices=POLE_SOURCES, default="statements",
                   help="pole sheets from the statements' keying (default) or the data dir's top/bottom quartiles")
    p.add_argument("--layer", type=int, default=-1, help="the gated layer (default -1, the last)")
    p.add_argument("--type-prompts", action="store_true", help="also prompt each of the 16 types")
    args = p.parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",")]
    data, scorer, ids = load_assessment(args)
    t = time.perf_counter()
    poles = pole_vectors(scorer, source=args.source, people=data.subjects, layer=args.layer)
    build_s = time.perf_counter() - t
    print(f"10 poles built in {build_s:.1f} s", flush=True)
    t = time.perf_counter()
    res = measure_poles(scorer, poles, ids, strengths, prompts=not args.no_prompts, fluency=not args.no_fluency,
                        progress=True)
    types = measure_types(scorer, poles, ids, prompts=args.type_prompts, progress=True)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "source": args.source, "layer": args.layer,
              "build_seconds": build_s,
              "measure_seconds": time.perf_counter() - t, "items": "180 (not used to build the vectors)",
              "strengths": strengths, "poles": res, "types": types}
    tables = poles_table(res, strengths) + "\n\n" + types_table(types)
    png = write_outputs(args, result, tables)
    panels = {f"steered, strength {s:g}": np.array([[res["poles"][q]["strengths"][s]["shift"][d] for d in DOMAINS]
                                                     for q in POLES]) for s in strengths}
    if not args.no_prompts:
        panels["system prompt"] = np.array([[res["poles"][q]["prompted"][d] for d in DOMAINS] for q in POLES])
    heatmap(panels, POLES, DOMAINS, png,
            "IPIP-NEO domain shift from the unsteered model, 180 held-out items (pole vectors built on the other 120)")
    print(tables)
    print(f"written: {args.out}/results.json, {args.out}/tables.md, {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
