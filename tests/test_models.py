"""Model loading: the known transformers deprecation notices are silenced once, narrowly."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

from pas.core.models import (
    KNOWN_FUTURE_WARNING,
    KNOWN_LOG_LINE,
    quiet_known_deprecations,
)

REPO = Path(__file__).resolve().parents[1]


def test_a_scoring_forward_prints_no_deprecation_notice(data_dir):
    """A tiny model scored through ItemScorer, in a fresh interpreter with Python's default warning filters."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from conftest import make_tiny
        from transformers import AutoTokenizer
        from pas.core.data import load_papi
        from pas.core.models import _dequantised_cache, embedded_gguf_path
        from pas.score.scorer import ItemScorer

        tok = AutoTokenizer.from_pretrained(_dequantised_cache(embedded_gguf_path()))
        tok.padding_side = "left"
        bank = load_papi({str(data_dir)!r}).bank
        scores = ItemScorer(make_tiny("llama", len(tok)), tok, bank).score(bank.train_ids[:4])
        print("scored", len(scores.answers))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY")}
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO,
                         timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert "scored 4" in run.stdout
    assert "past_key_values" not in run.stderr and "deprecated" not in run.stderr, run.stderr


def test_only_the_known_notices_are_silenced():
    import logging

    quiet_known_deprecations()
    quiet_known_deprecations()  # once: a second call adds nothing
    logger = logging.getLogger("transformers.utils.generic")
    assert sum(type(f).__name__ == "_KnownDeprecation" for f in logger.filters) == 1
    known = ("`past_key_values` is deprecated and will be removed in version 5.40.0 for "
             "`LlamaForCausalLM.forward`. Use `cache` instead.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_known_deprecations()
        warnings.warn(known, FutureWarning, stacklevel=1)
        warnings.warn("`other_arg` is deprecated and will be removed in version 6.0.", FutureWarning, stacklevel=1)
        warnings.warn(known, UserWarning, stacklevel=1)  # another category: not ours to hide
    assert [str(w.message)[:11] for w in caught] == ["`other_arg`", "`past_key_v"]
    assert KNOWN_LOG_LINE.startswith("`past_key_values`/`cache_params`") and "cache" in KNOWN_FUTURE_WARNING
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning(KNOWN_LOG_LINE)
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert records == ["something else"]
