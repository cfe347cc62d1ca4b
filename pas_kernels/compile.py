"""torch.compile with a plain-torch fallback."""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, Protocol, cast

import torch

COMPILE_ENV = "PAS_COMPILE"
compile_seconds: dict[str, float] = {}  # first-call (compile) time per kernel, for reports


def compile_enabled() -> bool:
    """Compilation is on unless ``PAS_COMPILE=0``."""
    return os.environ.get(COMPILE_ENV, "1") not in ("0", "false", "no")


class Compiled(Protocol):
    """A compiled kernel: called like its plain-torch reference, which stays at hand as ``.reference``."""

    reference: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


def compiled(reference: Callable) -> Compiled:
    """``reference`` compiled with dynamic shapes; falls back to ``reference`` if disabled or if compiling fails."""
    state: dict = {}

    @functools.wraps(reference)
    def run(*args, **kwargs):
        if not compile_enabled() or state.get("broken"):
            return reference(*args, **kwargs)
        fn = state.get("fn")
        if fn is None:
            # one graph per (rank, 0/1-size, view-layout) variant; a few of them, each compiled once
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            fn = state["fn"] = torch.compile(reference, dynamic=True)
        try:
            if reference.__name__ not in compile_seconds:
                t = time.perf_counter()
                out = fn(*args, **kwargs)
                compile_seconds[reference.__name__] = time.perf_counter() - t
                return out
            return fn(*args, **kwargs)
        except Exception as e:  # a missing compiler toolchain, an unsupported backend...
            warnings.warn(f"torch.compile failed for {reference.__name__} ({type(e).__name__}: {e}); using plain torch")
            state["broken"] = True
            return reference(*args, **kwargs)

    kernel = cast(Compiled, run)
    kernel.reference = reference
    return kernel
