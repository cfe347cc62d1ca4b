"""pas-population's costs beside its scores: a person's vector from a fitted map, and the steered fluency.

    python benchmarks/population_informed.py --map MAP [--data-dir DIR] [--people 20] [--threads 2] [--json PATH]

``MAP`` is a population map (``pas population-map ... --out MAP``). For the first ``--people`` people of the
data dir: the seconds to make each one's vector from the map (closed form; target <= 50 ms), and for the
first ``--fluency-people`` (5) of them the steered/base perplexity of the base model's neutral replies at
strength 1 and the chat strength (the largest strength within 1.3x; pas.steer.fluency). The scores themselves come from
``pas eval --method pas-population --transfer`` (docs/population-informed.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

from pas.core.data import load_papi
from pas.eval.report import machine_info
from pas.population.informed import PopulationMap

from common import add_run_args, apply_threads, finish

FLUENCY_PEOPLE = 5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--map", required=True, help="a population map file (pas population-map)")
    p.add_argument("--data-dir", help="the people (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--people", type=int, default=20, help="people to time (default 20)")
    p.add_argument("--fluency-people", type=int, default=FLUENCY_PEOPLE,
                   help=f"of them, people whose chat strength is searched (default {FLUENCY_PEOPLE}; ~1-2 min each)")
    add_run_args(p)
    args = p.parse_args()
    apply_threads(args)
    from pas.core.models import load_model
    from pas.steer.fluency import chat_strength, perplexity_ratio

    pmap = PopulationMap.load(args.map)
    people = load_papi(args.data_dir).subjects[: args.people]
    seconds, vectors = [], []
    for s in people:
        t = time.perf_counter()
        vectors.append(pmap.vector(s))
        seconds.append(time.perf_counter() - t)
    model, tok = load_model()
    pmap.signature.check(model)
    fluency = []
    for s, v in zip(people[: args.fluency_people], vectors, strict=False):
        strength, ratios = chat_strength(model, tok, v)
        fluency.append({"case": s.case, "ratio_at_1": perplexity_ratio(model, tok, v), "chat_strength": strength,
                        "ratios": ratios})
    finish(args, {"map": args.map, "map_people": pmap.people, "setting": pmap.setting,
                  "vector_ms_median": 1000 * statistics.median(seconds), "vector_ms_max": 1000 * max(seconds),
                  "people": len(people), "fluency": fluency, "machine": machine_info()})


if __name__ == "__main__":
    main()
