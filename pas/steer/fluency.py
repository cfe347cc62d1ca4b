"""Does steered chat stay fluent? Perplexity of the base model's own replies, steered vs not.

A fixed set of neutral chat prompts and the *base* model's greedy replies to them are
the yardstick: a steered model that still speaks the language gives those replies a
perplexity close to the base model's. ``pas chat`` uses :func:`chat_strength` to choose
its default strength: the largest multiple of the vector whose perplexity ratio stays
within :data:`PERPLEXITY_BOUND`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pas.core.models import CausalLM
    from pas.steer.vector import SteeringVector

PERPLEXITY_BOUND = 1.3  # steered / base perplexity on the neutral replies
STRENGTH_GRID = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)  # tried from the strongest down
MAX_STRENGTH = 10.0  # |--strength| beyond this only produces noise; refused with a clear error
REPLY_TOKENS = 40

NEUTRAL_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "How do I boil an egg?",
    "Explain what a rainbow is.",
    "Give me a tip for learning a new language.",
    "What is photosynthesis?",
    "How many days are in a leap year?",
    "Describe a typical breakfast.",
    "What does a librarian do?",
    "How does a bicycle work?",
    "Name three kinds of trees.",
    "What is the weather like in spring?",
    "How do you make a cup of tea?",
    "What is a good way to save money?",
    "Tell me about the moon.",
    "How do plants grow?",
    "What is the purpose of a map?",
    "Explain how to tie a shoelace.",
    "What are clouds made of?",
    "Why do we need sleep?",
    "What is a healthy snack?",
)


def check_strength(strength: float) -> float:
    """A usable multiplier of a vector: finite and at most :data:`MAX_STRENGTH` in size."""
    s = float(strength)
    if not math.isfinite(s) or abs(s) > MAX_STRENGTH:
        raise ValueError(f"--strength {strength!r} is outside the usable range -{MAX_STRENGTH:g}..{MAX_STRENGTH:g} "
                         f"(1 = the vector as learned for questionnaires; chat usually needs 0.05-0.5)")
    return s


def _chat_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    # tokenize=False gives the text; transformers types the result as every shape the call can return
    text = cast(str, tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                   add_generation_prompt=True))
    return tokenizer.encode(text, add_special_tokens=False)


def _replies_key(model: PreTrainedModel, prompts: Sequence[str], max_new_tokens: int = REPLY_TOKENS) -> str:
    """Which base replies these are: model weights, dtype, prompts and reply length."""
    from pas.core.models import model_name, weights_digest, weights_sample

    return hashlib.sha256(json.dumps([model_name(model), weights_digest(weights_sample(model)), str(model.dtype),
                                      list(prompts), max_new_tokens]).encode()).hexdigest()[:20]


_BASE_NLL: dict[str, float] = {}


@torch.no_grad()
def base_replies(model: CausalLM, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str] = NEUTRAL_PROMPTS,
                 max_new_tokens: int = REPLY_TOKENS) -> list[list[int]]:
    """The unsteered model's greedy reply tokens to each prompt; cached on disk per model weights."""
    from pas.core.models import cache_dir

    path = Path(cache_dir()) / "fluency" / f"{_replies_key(model, prompts, max_new_tokens)}.json"
    if path.exists():
        return json.loads(path.read_text())
    replies = []
    for prompt in prompts:
        ids = torch.tensor([_chat_ids(tokenizer, prompt)], device=model.device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
        replies.append(out[0, ids.shape[1]:].tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(replies))
    return replies


@torch.no_grad()
def reply_nll(model: CausalLM, tokenizer: PreTrainedTokenizerBase, vector: SteeringVector | None = None,
              prompts: Sequence[str] = NEUTRAL_PROMPTS, replies: Sequence[Sequence[int]] | None = None) -> float:
    """Mean negative log-likelihood per reply token, ``vector`` steering as in chat (phase "reply" of
    :func:`pas.steer.position.position_rule`)."""
    from pas.steer.position import steer

    replies = base_replies(model, tokenizer, prompts) if replies is None else replies
    total, count = 0.0, 0
    for prompt, reply in zip(prompts, replies, strict=False):
        if not reply:
            continue
        head = _chat_ids(tokenizer, prompt)
        ids = torch.tensor([head + list(reply)], device=model.device)
        with steer(model, vector, "reply", len(head)):
            logits = model(ids).logits[0, len(head) - 1 : -1].float()
        target = ids[0, len(head):]
        total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        count += len(reply)
    return total / max(count, 1)


def base_nll(model: CausalLM, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str] = NEUTRAL_PROMPTS) -> float:
    """:func:`reply_nll` of the unsteered model, computed once per process for these weights and prompts."""
    key = _replies_key(model, prompts)
    if key not in _BASE_NLL:
        _BASE_NLL[key] = reply_nll(model, tokenizer, None, prompts, base_replies(model, tokenizer, prompts))
    return _BASE_NLL[key]


def perplexity_ratio(model: CausalLM, tokenizer: PreTrainedTokenizerBase, vector: SteeringVector,
                     prompts: Sequence[str] = NEUTRAL_PROMPTS) -> float:
    """Steered / base perplexity of the base model's replies to ``prompts`` (1 = as fluent as base)."""
    replies = base_replies(model, tokenizer, prompts)
    return math.exp(reply_nll(model, tokenizer, vector, prompts, replies) - base_nll(model, tokenizer, prompts))


def chat_strength(model: CausalLM, tokenizer: PreTrainedTokenizerBase, vector: SteeringVector,
                  bound: float = PERPLEXITY_BOUND,
                  grid: Sequence[float] = STRENGTH_GRID) -> tuple[float, dict[float, float]]:
    """The largest strength in ``grid`` whose perplexity ratio is within ``bound`` (0 if none), and every ratio
    tried."""
    replies = base_replies(model, tokenizer)
    base = base_nll(model, tokenizer)
    ratios = {}
    for s in sorted(grid, reverse=True):
        ratios[s] = math.exp(reply_nll(model, tokenizer, vector * s, NEUTRAL_PROMPTS, replies) - base)
        if ratios[s] <= bound:
            return s, ratios
    return 0.0, ratios
