"""Shared fixtures: tiny random models of three families, the real tokenizer and real PAPI data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def papi_dir() -> Path:
    """The real PAPI data: $PAPI_DATA_DIR or ../shared/papi. Missing data fails loudly, never skips."""
    path = Path(os.environ.get("PAPI_DATA_DIR", REPO.parent / "shared" / "papi"))
    if not (path / "items.csv").exists():
        raise RuntimeError(f"real PAPI data not found at {path}; set PAPI_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return papi_dir()


@pytest.fixture(scope="session")
def papi(data_dir):
    from pas.core.data import load_papi

    return load_papi(data_dir)


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (with its chat template), from the embedded model's cache."""
    from transformers import AutoTokenizer

    from pas.core.models import _dequantised_cache, embedded_gguf_path

    tok = AutoTokenizer.from_pretrained(_dequantised_cache(embedded_gguf_path()))
    tok.padding_side = "left"
    return tok


def make_tiny(arch: str, vocab: int, seed: int = 0):
    """A randomly initialised model of ``arch`` with hidden size 32."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    elif arch == "qwen2":
        cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_positions=4096)
    else:
        raise ValueError(arch)
    cfg._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    model.requires_grad_(False)
    return model


ARCHS = ["llama", "qwen2", "gpt2"]


@pytest.fixture(scope="session", params=ARCHS)
def tiny(request, tokenizer):
    model = make_tiny(request.param, len(tokenizer))
    model.pas_tokenizer = tokenizer
    return model


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    model = make_tiny("llama", len(tokenizer))
    model.pas_tokenizer = tokenizer
    return model


@pytest.fixture(scope="session")
def real_model():
    from pas.core.models import load_model

    return load_model()
