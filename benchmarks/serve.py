"""pas serve's model worker: generated tokens/s with N distinct people per batch vs unsteered, latency, and
whether replies under concurrency equal each person alone.

    python benchmarks/serve.py [--store STORE] [--sizes 16,64] [--max-tokens 16] [--reps 5] [--check 64]
                               [--threads 1] [--json PATH]

Each repetition, for each batch size N, N requests are submitted at once to one :class:`pas.serve.engine.Engine`
(what ``pas serve`` runs: window 10 ms, max batch 64), once all unsteered (``base``) and once for N distinct
people, in a shuffled order. Every request makes exactly ``--max-tokens`` tokens (end-of-sequence ignored, so
both sides do the same work). Throughput = tokens made / seconds from the first submit to the last token
(prefill included); the ratio is the median over repetitions of steered / unsteered tok/s of the same
repetition (paired, so a slow spell of a busy machine hits both). Latency: each request's submit to last
token, p50/p95 over all repetitions. People: ``--store``'s (cycled with distinct strengths 0.3..0.7 when it
holds fewer than N), else synthetic vectors shaped like pas-gated fits (gates on the last layer, pushes on the
last two), written to a temporary store. ``--check K``: afterwards K people at once, greedy and stopping at
end-of-sequence, each compared with :func:`pas.steer.chat.generate` for that person alone.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time

import torch

from pas import SteeringVector, load_model
from pas.core.arch import layout
from pas.population.store import PopulationStore, StoreProvenance
from pas.serve.decode import prompt_ids
from pas.serve.engine import Engine, EngineConfig, Failed, Finished, Job
from pas.serve.names import PersonName
from pas.serve.people import People
from pas.steer.chat import generate
from pas.steer.signature import ModelSignature
from pas_kernels.compile import compile_enabled

from common import add_run_args, apply_threads, finish

PROMPTS = ("How do you spend a free evening?", "What do you think about meeting new people at a big party?",
           "Describe your ideal weekend.", "How do you deal with a stressful week at work?",
           "What would you do with an unexpected day off?", "Tell me about a book or film you love, and why.")


def synthetic_store(model, n: int, path: str) -> PopulationStore:
    """``n`` people shaped like pas-gated fits: gate weights and bias on the last layer, pushes on the last two."""
    lay = layout(model)
    shape = (lay.n_layers, lay.n_heads, lay.head_dim)
    people = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        v, w, b = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape[:2])
        v[-2:] = torch.randn(2, *shape[1:], generator=g) * 0.5
        w[-1], b[-1], b[-2] = torch.randn(shape[1:], generator=g) * 0.05, torch.randn(shape[1], generator=g), 1.0
        people.append(SteeringVector.for_model(model, v, gate_weights=w, gate_bias=b).relabel(subject=f"s{i}"))
    store = PopulationStore.create(path, ModelSignature.of(model), StoreProvenance("benchmarks/serve.py", True))
    store.add_many(people)
    store.close()
    return PopulationStore(path)


def people_for(cases: list[str], n: int) -> list[tuple[PersonName, float]]:
    """``n`` distinct (person, strength) pairs: each case in turn, its strength stepping through 0.3..0.7."""
    strengths = (0.5, 0.3, 0.7, 0.4, 0.6, 0.35, 0.45, 0.55, 0.65)
    return [(PersonName("case", cases[i % len(cases)]), strengths[(i // len(cases)) % len(strengths)])
            for i in range(n)]


def run_batch(engine: Engine, prompts: list[list[int]], who: list[tuple[PersonName, float] | None],
              max_tokens: int, stop_at_eos: bool = False) -> tuple[float, int, list[float], list[tuple[int, ...]]]:
    """Submit one request per row at once and wait for all: (seconds, tokens made, latencies, tokens per row)."""
    done, lock, left, failed = threading.Event(), threading.Lock(), [len(prompts)], []
    latencies: list[float] = [0.0] * len(prompts)
    made: list[tuple[int, ...]] = [()] * len(prompts)
    start = time.perf_counter()

    def emit_for(i: int, submitted: float):
        def emit(event) -> None:
            if isinstance(event, Failed):
                failed.append(f"request {i} failed: {event.message}")
                done.set()
            if isinstance(event, Finished):
                latencies[i], made[i] = time.perf_counter() - submitted, event.tokens
                with lock:
                    left[0] -= 1
                    if not left[0]:
                        done.set()
        return emit

    for i, (prompt, person) in enumerate(zip(prompts, who, strict=True)):
        name, strength = person if person else (PersonName("base"), None)
        engine.submit(Job(name, strength, prompt, max_tokens, emit_for(i, time.perf_counter()),
                          stop_at_eos=stop_at_eos))
    if not done.wait(1800) or failed:
        raise SystemExit(failed[0] if failed else "the engine did not finish in 30 minutes")
    return time.perf_counter() - start, sum(len(m) for m in made), latencies, made


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="HF id or folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--store", help="a population store for the model (default: synthetic people)")
    p.add_argument("--sizes", default="16,64", help="requests per batch (default 16,64)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens made per request (default 16)")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    p.add_argument("--check", type=int, default=64, help="people checked against generate alone (default 64; 0: none)")
    add_run_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args)
    model, tok = load_model(args.model)
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(0)
    tmp = tempfile.TemporaryDirectory()
    store = PopulationStore(args.store) if args.store else synthetic_store(model, max(sizes), tmp.name + "/store")
    store.check_model(model)
    engine = Engine(model, tok, People(model, tok, store), EngineConfig(max_batch=max(64, *sizes))).start()
    cases = store.cases()
    results: dict = {"model": args.model or "SmolLM2-135M-Instruct", "threads": torch.get_num_threads(),
                     "compile": compile_enabled(), "people": f"{len(cases)} of {args.store}" if args.store
                     else f"{len(cases)} synthetic", "max_tokens": args.max_tokens, "reps": args.reps,
                     "load_before": os.getloadavg()[0], "sizes": {}}
    try:
        for n in sizes:
            prompts = [prompt_ids(tok, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]) for i in range(n)]
            sides = {"unsteered": [None] * n, "people": people_for(cases, n)}
            for who in sides.values():  # warm-up: kernels compiled, people resolved, outside the timings
                run_batch(engine, prompts, who, 2)
            runs: dict[str, list[tuple[float, int, list[float]]]] = {k: [] for k in sides}
            order = list(sides)
            for _ in range(args.reps):
                rng.shuffle(order)
                for side in order:
                    seconds, tokens, lat, _ = run_batch(engine, prompts, sides[side], args.max_tokens)
                    runs[side].append((seconds, tokens, lat))
            row: dict = {}
            for side, rs in runs.items():
                lat = [x for r in rs for x in r[2]]
                row[side] = {"tok_s": statistics.median(t / s for s, t, _ in rs), "p50_s": percentile(lat, 0.5),
                             "p95_s": percentile(lat, 0.95)}
            row["ratios"] = [round((p[1] / p[0]) / (u[1] / u[0]), 4)
                             for p, u in zip(runs["people"], runs["unsteered"], strict=True)]
            row["ratio"] = statistics.median(row["ratios"])
            results["sizes"][str(n)] = row
            print(f"{n} people per batch: {row['people']['tok_s']:.0f} tok/s vs unsteered "
                  f"{row['unsteered']['tok_s']:.0f} tok/s (ratio {row['ratio']:.3f}); latency p50/p95 "
                  f"{row['people']['p50_s']:.2f}/{row['people']['p95_s']:.2f} s vs "
                  f"{row['unsteered']['p50_s']:.2f}/{row['unsteered']['p95_s']:.2f} s", file=sys.stderr, flush=True)
        if args.check:
            who = people_for(cases, args.check)
            messages = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(args.check)]
            _, _, _, made = run_batch(engine, [prompt_ids(tok, m) for m in messages], list(who), args.max_tokens,
                                      stop_at_eos=True)
            together = [str(tok.decode(list(m), skip_special_tokens=True)).strip() for m in made]
            alone = [generate(model, tok, m, store[name.key] * s, max_new_tokens=args.max_tokens)
                     for m, (name, s) in zip(messages, who, strict=True)]
            results["identical_to_alone"] = f"{sum(a == b for a, b in zip(together, alone, strict=True))}/{len(alone)}"
            results["distinct_replies"] = len(set(together))
    finally:
        engine.close()
        tmp.cleanup()
    results["load_after"] = os.getloadavg()[0]
    finish(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
