import pytest

from pas.core.arch import (
    ARCHITECTURES,
    AttnOutSpec,
    UnsupportedArchitectureError,
    layout,
    o_proj_modules,
    register_architecture,
)


def test_layout_of_tiny_models(tiny):
    lay = layout(tiny)
    assert (lay.n_layers, lay.n_heads, lay.head_dim, lay.hidden_size) == (3, 4, 8, 32)
    assert lay.conv1d == (tiny.config.model_type == "gpt2")
    assert lay.has_bias == (tiny.config.model_type == "gpt2")
    assert len(o_proj_modules(tiny)) == 3


def test_unknown_architecture_says_how_to_register(tiny_llama, monkeypatch):
    monkeypatch.setattr(tiny_llama.config, "model_type", "mystery")
    with pytest.raises(UnsupportedArchitectureError, match="register_architecture\\('mystery'"):
        layout(tiny_llama)
    register_architecture("mystery", AttnOutSpec("model.layers", "self_attn.o_proj"))
    try:
        assert layout(tiny_llama).n_layers == 3
    finally:
        del ARCHITECTURES["mystery"]


def test_fingerprint_changes_with_config(tokenizer):
    from conftest import make_tiny

    a, b = make_tiny("llama", len(tokenizer)), make_tiny("llama", len(tokenizer), seed=1)
    assert layout(a).fingerprint == layout(b).fingerprint  # same config, other weights
    b.config.num_hidden_layers = 5
    assert layout(a).fingerprint != layout(b).fingerprint
