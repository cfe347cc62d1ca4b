"""How fast is the synthetic stand-in, and how much does it look like the real people?

Fits the Gaussian copula of :mod:`pas.population.synth` to a data dir's real people, writes N
synthetic people (default 300,000, parquet only) to an output folder, and prints people/s, seconds,
bytes written and the resemblance check (mean |r_syn - r_real| over item pairs, the opposite-keyed
within-facet correlation real vs synthetic, per-item mean and missing-rate differences), with the
date and machine. The output is synthetic and labelled so (``papi.json``).

    python benchmarks/synth.py --people 300000 --out /tmp/papi-synth-300k
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

from pas.population.synth import CHECK_PEOPLE, DEPENDENCES, FORMATS
from pas.population.synth_write import write_synthetic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="real PAPI data to fit (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--people", type=int, default=300_000, help="synthetic people to write (default 300000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--format", default="parquet", help=f"comma-separated, of {','.join(FORMATS)} (default parquet)")
    p.add_argument("--chunk", type=int, default=10_000, help="people generated and written at a time (default 10000)")
    p.add_argument("--check-people", type=int, default=CHECK_PEOPLE,
                   help=f"synthetic people compared with the real ones (default {CHECK_PEOPLE})")
    p.add_argument("--dependence", choices=DEPENDENCES, default="matched", help="latent correlation estimator")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic data dir at --out")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    report = write_synthetic(args.data_dir, args.out, args.people, args.seed, args.format.split(","), args.overwrite,
                             chunk=args.chunk, check_people=args.check_people, dependence=args.dependence)
    result = {
        "data": "synthetic", "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "command": "python benchmarks/synth.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "source": report.source, "out": str(report.out_dir), "people": report.people, "seed": report.seed,
        "seconds": round(report.seconds, 2), "people_per_second": round(report.people_per_second),
        "bytes": report.files, "bytes_per_person": round(sum(report.files.values()) / report.people, 1),
        "check": report.resemblance.to_dict(),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
