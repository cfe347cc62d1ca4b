"""Running a server: what it needs installed, and the model worker with the HTTP server around it.

FastAPI and uvicorn are an optional extra (``pip install 'pas[serve]'``); they are imported only here and in
:mod:`pas.serve.app`, so ``import pas`` works without them.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pas.core.models import CausalLM
    from pas.serve.engine import EngineConfig
    from pas.serve.people import People

EXTRA = "pip install 'pas[serve]'"
PACKAGES = ("fastapi", "uvicorn")


def missing_packages() -> list[str]:
    """The packages of the ``serve`` extra that are not installed."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def serve(model: CausalLM, tokenizer: PreTrainedTokenizerBase, people: People, config: EngineConfig, *,
          host: str = "127.0.0.1", port: int = 8000, max_tokens_limit: int = 512,
          default_max_tokens: int = 128) -> None:
    """Start the model worker and serve the API until interrupted (Ctrl-C); the worker stops with the server."""
    import uvicorn

    from pas.serve.app import create_app
    from pas.serve.engine import Engine

    log = logging.getLogger("pas.serve")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s pas serve: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    engine = Engine(model, tokenizer, people, config).start()
    try:
        app = create_app(engine, people, tokenizer, max_tokens_limit=max_tokens_limit,
                         default_max_tokens=default_max_tokens)
        log.info("serving on http://%s:%d/v1 (max batch %d, window %g ms, at most %d waiting, max_tokens <= %d)",
                 host, port, config.max_batch, config.window_ms, config.max_waiting, max_tokens_limit)
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")  # pas logs each request
    finally:
        engine.close()
