"""The controllability picture: steer to each trait pole and MBTI type, assess, compare with prompting.

Builds the ten pole vectors from the IPIP-NEO-120 statements (timed), assesses the steered model
on the other 180 items at several strengths (``pas.traits.measure_poles``), with the perplexity
ratio on neutral chat replies and the prompting baseline, then the 16 types
(``pas.traits.measure_types``). Writes results.json, tables.md and a heatmap PNG.

    python benchmarks/traits.py --threads 2 --out results/traits --png docs/traits_heatmap.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import apply_threads
from pas import load_model
from pas.assess import inventory_ids
from pas.data import DOMAINS, load_papi
from pas.report import dumps, heatmap, machine_info, poles_table, types_table
from pas.scoring import ItemScorer
from pas.traits import POLES, pole_vectors, measure_poles, measure_types


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--strengths", default="0.5,1,2", help="pole strengths to assess (default 0.5,1,2)")
    p.add_argument("--no-prompts", action="store_true", help="skip the prompting baseline")
    p.add_argument("--no-fluency", action="store_true", help="skip the perplexity ratios and chat strengths")
    p.add_argument("--type-prompts", action="store_true", help="also prompt each of the 16 types")
    p.add_argument("--out", default="results/traits", help="folder for results.json and tables.md")
    p.add_argument("--png", default="docs/traits_heatmap.png", help="heatmap path")
    p.add_argument("--threads", type=int, help="torch threads")
    args = p.parse_args(argv)
    apply_threads(args)
    strengths = [float(s) for s in args.strengths.split(",")]

    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    scorer = ItemScorer(model, tok, data.bank)
    t = time.perf_counter()
    poles = pole_vectors(scorer)
    build_s = time.perf_counter() - t
    print(f"10 poles built in {build_s:.1f} s", flush=True)
    ids = inventory_ids(data.bank, "180")
    t = time.perf_counter()
    res = measure_poles(scorer, poles, ids, strengths, prompts=not args.no_prompts, fluency=not args.no_fluency,
                        progress=True)
    types = measure_types(scorer, poles, ids, prompts=args.type_prompts, progress=True)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "build_seconds": build_s,
              "measure_seconds": time.perf_counter() - t, "items": "180 (not used to build the vectors)",
              "strengths": strengths, "poles": res, "types": types}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(dumps(result, indent=1))
    tables = poles_table(res, strengths) + "\n\n" + types_table(types)
    (out / "tables.md").write_text(tables + "\n")
    panels = {f"steered, strength {s:g}": np.array([[res["poles"][q]["strengths"][s]["shift"][d] for d in DOMAINS]
                                                     for q in POLES]) for s in strengths}
    if not args.no_prompts:
        panels["system prompt"] = np.array([[res["poles"][q]["prompted"][d] for d in DOMAINS] for q in POLES])
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    heatmap(panels, POLES, DOMAINS, Path(args.png),
            "IPIP-NEO domain shift from the unsteered model, 180 held-out items (pole vectors built on the other 120)")
    print(tables)
    print(f"written: {out / 'results.json'}, {out / 'tables.md'}, {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
