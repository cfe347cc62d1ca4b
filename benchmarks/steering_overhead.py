"""What steering costs at inference: tokens/s unsteered vs hook vs folded vs per-row (a different person per row),
for constant vectors (PAS) and gated ones (pas-gated: each head's offset scales with its own output).

    python benchmarks/steering_overhead.py [--batches 1,16,64] [--prompt-len 32] [--decode 16] [--reps 7] [--json PATH]

All modes run interleaved in one process, on the same prompts: each repetition runs every
mode once, in a shuffled order, and a mode's overhead is the median over repetitions of
its time divided by the unsteered time *of the same repetition* (paired, so a slow spell
of a noisy machine hits both sides). Overheads are fractions: 0.03 = 3% slower than unsteered.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch

from pas import SteeringVector, load_model
from pas.core.arch import layout
from pas.steer.hooks import add_offsets, add_row_biases
from pas.steer.rows import bias_table, row_steering
from pas_kernels.compile import compile_enabled, compile_seconds

from common import add_run_args, apply_threads, finish

MODES = ("unsteered", "hook", "folded", "per_row", "per_row_hook", "gated_hook", "gated_per_row")


def random_vector(model, seed: int, k: int = 24) -> SteeringVector:
    """A vector shaped like align_to_subject's: k random heads, offsets of realistic size."""
    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    off = torch.zeros(lay.n_layers, lay.n_heads, lay.head_dim)
    for idx in torch.randperm(lay.n_layers * lay.n_heads, generator=g)[:k].tolist():
        off[idx // lay.n_heads, idx % lay.n_heads] = torch.randn(lay.head_dim, generator=g)
    return SteeringVector.for_model(model, off, positions="all")


def random_gated(model, seed: int) -> SteeringVector:
    """A vector shaped like pas-gated's: every head of one late layer gated, realistic sizes."""
    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    layer = lay.n_layers - 1 - seed % 4
    shape = (lay.n_layers, lay.n_heads, lay.head_dim)
    w, b, v = torch.zeros(shape), torch.zeros(shape[:2]), torch.zeros(shape)
    w[layer] = torch.randn(shape[1:], generator=g) * 0.01
    b[layer] = torch.randn(shape[1], generator=g) * 0.01
    v[layer] = torch.randn(shape[1:], generator=g)
    return SteeringVector.for_model(model, v, gate_weights=w, gate_bias=b, positions="all")


def compile_kernels(model) -> dict[str, float]:
    """First-call (compile) seconds of each steering kernel, at this model's widths.

    Decode steps never call them (see pas.steer.hooks), so they are compiled here explicitly;
    a later call with another batch size or length reuses the same graph (dynamic shapes).
    """
    from pas_kernels import add_head_offsets, add_row_bias

    lay = layout(model)
    x = torch.randn(3, 7, lay.attn_width, device=model.device, dtype=model.dtype)
    add_head_offsets(x, torch.randn(lay.attn_width, device=x.device, dtype=x.dtype), torch.tensor(4))
    y = torch.randn(3, 7, lay.hidden_size, device=model.device, dtype=model.dtype)
    add_row_bias(y, torch.randn(4, lay.hidden_size, device=y.device, dtype=y.dtype),
                 torch.tensor([0, 3, 1], device=y.device))
    from pas_kernels import add_gated_offsets

    w = torch.randn(lay.attn_width, device=x.device, dtype=x.dtype)
    add_gated_offsets(x, w, torch.randn(lay.n_heads, device=x.device, dtype=x.dtype), w, torch.tensor(4),
                      torch.full((lay.n_heads,), 2.0, device=x.device, dtype=x.dtype))
    return dict(compile_seconds)


@contextmanager
def steering(mode: str, model, vectors: list[SteeringVector], table: torch.Tensor, offsets: torch.Tensor,
             gated: list[SteeringVector]):
    rows = torch.arange(len(vectors), device=model.device)
    if mode == "unsteered":
        ctx = nullcontext()
    elif mode == "hook":
        ctx = vectors[0].apply(model)
    elif mode == "folded":
        ctx = vectors[0].fold(model)
    elif mode == "per_row":
        ctx = add_row_biases(model, table, rows)
    elif mode == "gated_hook":
        ctx = gated[0].apply(model)
    elif mode == "gated_per_row":
        ctx = row_steering(model, gated, rows)
    else:
        ctx = add_offsets(model, offsets, rows=rows)
    with ctx:
        yield


@torch.no_grad()
def run_once(model, ids: torch.Tensor, decode: int) -> tuple[float, float]:
    """Seconds for the prefill of ``ids`` and for ``decode`` greedy steps after it."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    t0 = time.perf_counter()
    out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    t1 = time.perf_counter()
    nxt = out.logits[:, -1:].argmax(-1)
    for _ in range(decode):
        out = model(nxt, past_key_values=cache, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
    return t1 - t0, time.perf_counter() - t1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="HF id or folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--batches", default="1,16,64", help="batch sizes (default 1,16,64)")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row (default 32)")
    p.add_argument("--decode", type=int, default=16, help="decode steps (default 16)")
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions (default 7)")
    add_run_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_model(args.model, dtype=args.dtype, device=device)
    batches = [int(b) for b in args.batches.split(",")]
    rng = random.Random(0)
    vectors = [random_vector(model, s) for s in range(max(batches))]
    gated = [random_gated(model, s) for s in range(max(batches))]
    text = "Tell me honestly how you feel about meeting new people at a large party, and why. " * 8
    base_ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, : args.prompt_len]
    results: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                     "threads": torch.get_num_threads(), "compile": compile_enabled(), "dtype": args.dtype,
                     "prompt_len": args.prompt_len, "decode_steps": args.decode, "reps": args.reps, "batches": {}}
    for b in batches:
        ids = base_ids.repeat(b, 1).to(device)
        vecs = vectors[:b]
        table = bias_table(model, vecs).to(device)
        offsets = torch.stack([v.flat_offsets() for v in vecs]).to(device, model.dtype)
        for mode in MODES:  # warm-up (and compilation) outside the timings
            with steering(mode, model, vecs, table, offsets, gated[:b]):
                run_once(model, ids, 2)
        times = {m: ([], []) for m in MODES}
        order = list(MODES)
        for _ in range(args.reps):
            rng.shuffle(order)
            for mode in order:
                with steering(mode, model, vecs, table, offsets, gated[:b]):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    pre, dec = run_once(model, ids, args.decode)
                    if device == "cuda":
                        torch.cuda.synchronize()
                times[mode][0].append(pre)
                times[mode][1].append(dec)
        row = {}
        for mode in MODES:
            pre, dec = statistics.median(times[mode][0]), statistics.median(times[mode][1])
            row[mode] = {"prefill_tok_s": b * args.prompt_len / pre, "decode_tok_s": b * args.decode / dec,
                         "prefill_s": pre, "decode_s": dec}
        for mode in MODES[1:]:
            for phase, k in (("prefill", 0), ("decode", 1)):
                ratios = [t / u for t, u in zip(times[mode][k], times["unsteered"][k], strict=True)]
                row[mode][f"{phase}_overhead"] = statistics.median(ratios) - 1
        results["batches"][str(b)] = row
        print(f"batch {b}: " + ", ".join(
            f"{m} decode {row[m]['decode_tok_s']:.0f} tok/s"
            + (f" ({row[m]['decode_overhead']:+.1%})" if m != "unsteered" else "")
            for m in MODES), flush=True)
    r = results["batches"]
    if "16" in r:
        results["hook_overhead"] = r["16"]["hook"]["decode_overhead"]
        results["folded_overhead"] = r["16"]["folded"]["decode_overhead"]
        results["per_row_overhead_16"] = r["16"]["per_row"]["decode_overhead"]
        results["gated_hook_overhead_16"] = r["16"]["gated_hook"]["decode_overhead"]
        results["gated_per_row_overhead_16"] = r["16"]["gated_per_row"]["decode_overhead"]
    if "64" in r:
        results["per_row_overhead_64"] = r["64"]["per_row"]["decode_overhead"]
        results["gated_hook_overhead_64"] = r["64"]["gated_hook"]["decode_overhead"]
        results["gated_per_row_overhead_64"] = r["64"]["gated_per_row"]["decode_overhead"]
    results["compile_seconds"] = compile_kernels(model)
    finish(args, results, omit_from_print=("batches",))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
