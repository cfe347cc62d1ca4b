"""``pas serve``: an OpenAI-compatible chat API where each request names its person (parsing and running only)."""

from __future__ import annotations

import argparse
import sys

from pas.cli.args import Subparsers, UsageError, add_threads_arg


def add_parsers(sub: Subparsers) -> None:
    """The serve command."""
    p = sub.add_parser("serve", help="an OpenAI-compatible chat API (POST /v1/chat/completions) where each request "
                                     "names its person: model pas:CASE (a person of --store), pas:trait:E+, "
                                     "pas:type:INFP or base; concurrent requests are batched, each row steered "
                                     "by its own person")
    p.add_argument("--store", metavar="STORE", help="a population vector store (pas align-population --out): its "
                                                   "people are served as pas:CASE")
    p.add_argument("--data-dir", help="PAPI data dir whose item bank builds trait poles and types (default: "
                                      "$PAPI_DATA_DIR, else ./papi or ../shared/papi; none found: no poles)")
    p.add_argument("--model", help="Hugging Face id or folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="model dtype (default fp32)")
    p.add_argument("--allow-other-weights", action="store_true",
                   help="accept a store made on other weights of the same architecture (a fine-tuned variant)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=int, default=64, help="rows decoding together (default 64)")
    p.add_argument("--window-ms", type=float, default=10.0,
                   help="how long an idle server waits for more requests after a first one (default 10 ms); a "
                        "running batch takes new requests between decode steps")
    p.add_argument("--max-waiting", type=int, default=256,
                   help="requests queued beyond the batch before new ones get 503 with Retry-After (default 256)")
    p.add_argument("--max-tokens-limit", type=int, default=512, help="the most tokens one reply may ask for "
                                                                     "(default 512; more is refused with 400)")
    p.add_argument("--default-max-tokens", type=int, default=128,
                   help="reply length when a request gives no max_tokens (default 128)")
    p.add_argument("--strength", type=float, default=None,
                   help="default strength for every person (default: each person's chat strength, measured "
                        "once on first use as pas chat measures it); a request's strength overrides it")
    add_threads_arg(p)
    p.set_defaults(func=cmd_serve)


def _checked(args: argparse.Namespace) -> None:
    """Flag values, before any model work."""
    for flag in ("max_batch", "max_waiting", "max_tokens_limit", "default_max_tokens"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.default_max_tokens > args.max_tokens_limit:
        raise UsageError(f"--default-max-tokens {args.default_max_tokens} is more than --max-tokens-limit "
                         f"{args.max_tokens_limit}")


def cmd_serve(args: argparse.Namespace) -> int:
    from pas.serve.server import EXTRA, missing_packages

    _checked(args)
    missing = missing_packages()
    if missing:
        raise UsageError(f"pas serve needs {' and '.join(missing)}, which are not installed: {EXTRA}")
    from pas.core.data import PapiDataError, resolve_data_dir
    from pas.core.models import load_model
    from pas.serve.engine import EngineConfig
    from pas.serve.people import People
    from pas.serve.server import serve
    from pas.steer.fluency import check_strength

    strength = None if args.strength is None else check_strength(args.strength)
    config = EngineConfig(max_batch=args.max_batch, window_ms=args.window_ms, max_waiting=args.max_waiting)
    store = None
    if args.store is not None:
        from pas.population.store import PopulationStore

        store = PopulationStore(args.store)
    try:
        data_dir = resolve_data_dir(args.data_dir)
    except PapiDataError as e:
        if args.data_dir is not None:
            raise
        print(f"pas serve: no trait poles or types ({e})", file=sys.stderr)
        data_dir = None
    model, tok = load_model(args.model, dtype=args.dtype)
    if store is not None and not args.allow_other_weights:
        store.check_model(model)
    people = People(model, tok, store, data_dir=data_dir, strength=strength,
                    allow_other_weights=args.allow_other_weights)
    serve(model, tok, people, config, host=args.host, port=args.port, max_tokens_limit=args.max_tokens_limit,
          default_max_tokens=args.default_max_tokens)
    return 0
