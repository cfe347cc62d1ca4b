import math

import pytest
import torch

from pas.steer.fluency import NEUTRAL_PROMPTS, chat_strength, check_strength, perplexity_ratio, reply_nll
from pas.steer.vector import SteeringVector


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAS_CACHE", str(tmp_path))
    return tmp_path


def _vector(model, scale):
    g = torch.Generator().manual_seed(0)
    return SteeringVector.for_model(model, torch.randn(3, 4, 8, generator=g) * scale)


def test_zero_strength_keeps_perplexity(tiny_llama, tokenizer, cache):
    assert perplexity_ratio(tiny_llama, tokenizer, _vector(tiny_llama, 5.0) * 0.0) == pytest.approx(1.0, abs=1e-6)
    assert list((cache / "fluency").iterdir())  # the base replies are cached


def test_chat_strength_is_the_largest_within_the_bound(tiny_llama, tokenizer, cache):
    vec = _vector(tiny_llama, 50.0)
    strength, ratios = chat_strength(tiny_llama, tokenizer, vec, bound=1.3, grid=(1.0, 0.1, 0.01, 0.001))
    assert ratios[1.0] > 1.3  # this vector is far too strong as it is
    assert strength < 1.0 and ratios[strength] <= 1.3
    assert all(r > 1.3 for s, r in ratios.items() if s > strength)


def test_reply_nll_steers_only_reply_positions_for_last_vectors(tiny_llama, tokenizer, cache):
    """A 'last' vector's steering starts at the prompt's last position, as in generation."""
    import dataclasses

    vec = _vector(tiny_llama, 5.0)
    last, every = vec, dataclasses.replace(vec, positions="all")
    prompts = NEUTRAL_PROMPTS[:2]
    assert not math.isclose(reply_nll(tiny_llama, tokenizer, last, prompts),
                            reply_nll(tiny_llama, tokenizer, every, prompts))


def test_check_strength():
    assert check_strength(0.3) == 0.3
    for bad in (float("nan"), float("inf"), 11, -1e9):
        with pytest.raises(ValueError, match="--strength"):
            check_strength(bad)
