"""The population store at SmolLM2-135M's shapes: seconds to add N people, load-one latency, bytes per person, peak RSS.

    python benchmarks/store.py [--people 20000] [--chunk 512] [--loads 1000] [--out DIR] [--json PATH]

People are synthetic pas-gated vectors built without the model: a ModelSignature with SmolLM2-135M's
shapes (30 layers, 9 heads, head_dim 64), the same correction (layer 28) and pushes (layer 29) for
everyone, random gate weights, bias and limits per person on the last layer. They are made and added
``--chunk`` at a time, so memory is bounded by the chunk. Load latency is measured after reopening
the store, on ``--loads`` random cases (the first read of each shard included).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import torch

from pas.eval.report import machine_info
from pas.population.store import PopulationStore, StoreProvenance
from pas.steer.signature import ModelSignature
from pas.steer.vector import Provenance, SteeringVector

from common import add_run_args, apply_threads, finish

SMOLLM2 = ModelSignature("SmolLM2-135M-Instruct (shapes only)", "llama", "benchmark", 30, 9, 64, 576,
                         tuple(float(x) for x in range(16)))


def people(start: int, n: int) -> list[SteeringVector]:
    """Synthetic pas-gated people ``start .. start + n - 1`` (shared correction and pushes, own gates)."""
    shape = SMOLLM2.shape
    common = torch.Generator().manual_seed(0)
    correction, push = torch.randn(shape[1:], generator=common), torch.randn(shape[1:], generator=common)
    out = []
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(i + 1)
        offsets, weights, bias = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape[:2])
        offsets[-2], offsets[-1], bias[-2] = correction, push, 1.0
        weights[-1], bias[-1] = torch.randn(shape[1:], generator=g) * 0.01, torch.randn(shape[1], generator=g)
        limit = torch.full(shape[:2], float("inf"))
        limit[-1] = torch.rand(shape[1], generator=g) * 3
        prov = Provenance(subject=f"synthetic-{i:07d}", method="pas-gated", item_hash="0123456789abcdef",
                          bank="bank", config={"gate_layer": -1, "seed": 0})
        out.append(SteeringVector.for_model(None, offsets, gate_weights=weights, gate_bias=bias, gate_limit=limit,
                                            signature=SMOLLM2, provenance=prov))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=20000, help="people to add (default 20000)")
    parser.add_argument("--chunk", type=int, default=512, help="people made and added at a time (default 512)")
    parser.add_argument("--loads", type=int, default=1000, help="random single-person loads timed (default 1000)")
    parser.add_argument("--out", help="store folder (default: a temporary one, deleted afterwards)")
    add_run_args(parser)
    args = parser.parse_args()
    apply_threads(args)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pas-store-bench-")) / "store"
    proc = psutil.Process()
    rss_start, rss_max = proc.memory_info().rss, 0

    add_seconds = 0.0
    store = PopulationStore.create(root, SMOLLM2, StoreProvenance(data="benchmarks/store.py", synthetic=True,
                                                                  config={"kind": "gated"}), overwrite=True)
    for start in range(0, args.people, args.chunk):
        chunk = people(start, min(args.chunk, args.people - start))
        t = time.perf_counter()
        store.add_many(chunk)
        add_seconds += time.perf_counter() - t
        rss_max = max(rss_max, proc.memory_info().rss)
    t = time.perf_counter()
    store.close()
    add_seconds += time.perf_counter() - t

    t = time.perf_counter()
    store = PopulationStore.open(root)
    open_seconds = time.perf_counter() - t
    cases = random.Random(0).sample(store.cases(), min(args.loads, len(store)))
    times = []
    for case in cases:
        t = time.perf_counter()
        store[case]
        times.append(time.perf_counter() - t)
    times.sort()
    t = time.perf_counter()
    n_iter = sum(len(b) for b in store.iter_batches(256))
    iter_seconds = time.perf_counter() - t
    rss_max = max(rss_max, proc.memory_info().rss)
    stats = store.stats()
    dense = people(0, 1)[0]
    dense_bytes = sum(t.numel() * 4 for t in (dense.offsets, dense.gates.weights, dense.gates.bias, dense.gates.limit))
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "synthetic": True,
        "command": f"python benchmarks/store.py --people {args.people} --chunk {args.chunk} --loads {args.loads}",
        "people": stats.people, "shards": stats.shards, "shared_units": stats.shared_units,
        "add_seconds": round(add_seconds, 2), "add_people_per_s": round(args.people / add_seconds, 1),
        "open_seconds": round(open_seconds, 4),
        "load_one_ms_median": round(1e3 * statistics.median(times), 3),
        "load_one_ms_p99": round(1e3 * times[int(0.99 * (len(times) - 1))], 3),
        "load_one_ms_max": round(1e3 * times[-1], 3),
        "iter_batches_people_per_s": round(n_iter / iter_seconds, 1),
        "store_bytes": stats.bytes, "bytes_per_person": round(stats.bytes_per_person, 1),
        "dense_tensor_bytes_per_person": dense_bytes,
        "compression": round(dense_bytes / stats.bytes_per_person, 1),
        "rss_start_mb": round(rss_start / 2**20, 1), "rss_max_sampled_mb": round(rss_max / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if not args.out:
        shutil.rmtree(root.parent)
    finish(args, result)


if __name__ == "__main__":
    main()
