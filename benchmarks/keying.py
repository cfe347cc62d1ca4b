"""Can the model tell a domain's +keyed statements from its -keyed ones at the answer position?

A trait pole's gates read the answer position's head outputs; where a linear readout there cannot
separate a domain's +keyed statements from its -keyed ones, that domain's poles have nothing to gate
on. Per layer and domain: held-out accuracy (on the 180 statements not in the short form) of a
logistic regression fitted on the short form's keying (``measures.poles.keying_accuracy``), for the head
outputs and for the residual stream. No one's answers are read.

    python benchmarks/keying.py --threads 2 --out results/keying
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pas import load_model
from pas.core.data import load_papi
from pas.eval.report import dumps, machine_info
from pas.score.scorer import ItemScorer

from common import apply_threads
from measures.poles import keying_accuracy
from measures.tables import keying_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--out", default="results/keying", help="folder for results.json and tables.md")
    p.add_argument("--threads", type=int, help="torch threads")
    args = p.parse_args(argv)
    apply_threads(args)
    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    scorer = ItemScorer(model, tok, data.bank)
    t = time.perf_counter()
    accuracy = {f: keying_accuracy(scorer, features=f) for f in ("heads", "residual")}
    table = keying_table(accuracy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
                                             "seconds": time.perf_counter() - t, "accuracy": accuracy}, indent=1))
    (out / "tables.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
