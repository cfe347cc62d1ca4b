"""Steered generation and an interactive chat.

How a vector is applied while generating is :func:`pas.steer.position.position_rule`'s rule (phase
"generate"): a "last" vector steers every position that produces a token, an "all"
vector every position.

Inputs longer than the model reads are refused before any work (:func:`check_fits`): counting
tokens costs one tokenisation, and past its context a model answers nonsense or nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch

from pas.steer.position import steer

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

    from pas.core.models import CausalLM
    from pas.steer.vector import SteeringVector

MAX_SANE_TOKENIZER_LIMIT = 10_000_000  # tokenizers that know no limit report about 1e30


class ContextLengthError(ValueError):
    """An input longer than the model reads; the message gives the count, the limit and what to shorten."""


def context_limit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> int | None:
    """Tokens ``model`` reads at most: its config's ``max_position_embeddings`` (GPT-2: ``n_positions``), else
    ``tokenizer.model_max_length`` when that is a real limit; None when neither says."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("max_position_embeddings", "n_positions"):
        n = getattr(config, name, None)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < MAX_SANE_TOKENIZER_LIMIT else None


def count_tokens(tokenizer: PreTrainedTokenizerBase, text_or_messages: str | Sequence[dict]) -> int:
    """Tokens of a text, or of messages as the chat template lays them out (with the assistant's turn opened)."""
    if isinstance(text_or_messages, str):
        return len(tokenizer.encode(text_or_messages, add_special_tokens=False))
    # tokenize=False gives the text; transformers types the result as every shape the call can return
    text = cast(str, tokenizer.apply_chat_template(list(text_or_messages), tokenize=False,
                                                   add_generation_prompt=True))
    return len(tokenizer.encode(text, add_special_tokens=False))


def check_fits(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, text_or_messages: str | Sequence[dict], *,
               reserve: int = 0, what: str = "the input", reserve_for: str = "the reply") -> int:
    """The token count of ``text_or_messages``; raises :class:`ContextLengthError` when it and ``reserve`` more
    tokens (``reserve_for``: the reply, a questionnaire prompt around a system prompt) pass the model's context.

    ``what`` names the input in the message (a flag such as ``"--system"``). Call it before long work.
    """
    n = count_tokens(tokenizer, text_or_messages)
    chars = len(text_or_messages) if isinstance(text_or_messages, str) else sum(
        len(str(m.get("content", ""))) for m in text_or_messages)
    refuse_over(n, context_limit(model, tokenizer), reserve=reserve, what=what, reserve_for=reserve_for,
                chars=chars)
    return n


def refuse_over(n: int, limit: int | None, *, reserve: int = 0, what: str = "the input",
                reserve_for: str = "the reply", chars: int | None = None) -> None:
    """Raise :class:`ContextLengthError` if ``n`` tokens plus ``reserve`` do not fit ``limit`` (None: no limit)."""
    if limit is None or n + reserve <= limit:
        return
    if reserve >= limit:
        raise ContextLengthError(f"{reserve_for} needs {reserve:,} tokens but the model reads at most {limit:,} "
                                 f"tokens in all: ask for fewer")
    over = n + reserve - limit
    about = f" (about {math.ceil(over * chars / n):,} of its {chars:,} characters)" if chars and n else ""
    kept = f", {reserve:,} of them kept for {reserve_for}" if reserve else ""
    raise ContextLengthError(f"{what} is {n:,} tokens; the model reads at most {limit:,} tokens{kept}: "
                             f"shorten {what} by at least {over:,} tokens{about}")


@torch.no_grad()
def generate(model: CausalLM, tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict],
             vector: SteeringVector | None = None, *, max_new_tokens: int = 128, system: str | None = None) -> str:
    """Greedy reply to ``prompt`` (a user message or a message list) with ``vector`` steering on.

    Raises :class:`ContextLengthError` before generating when the prompt and ``max_new_tokens`` pass the
    model's context.
    """
    messages = prompt if isinstance(prompt, list) else (
        ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}])
    # return_dict=True gives a BatchEncoding; transformers types the result as every shape the call can return
    enc: Mapping[str, Any] = cast("BatchEncoding", tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True))
    refuse_over(enc["input_ids"].shape[1], context_limit(model, tokenizer), reserve=max_new_tokens,
                what="the conversation" if isinstance(prompt, list) else "the prompt",
                reserve_for=f"the reply (max_new_tokens={max_new_tokens})")
    enc = {k: v.to(model.device) for k, v in enc.items()}
    with steer(model, vector, "generate"):
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    # one sequence decodes to one text; transformers types the result as a text or a batch of them
    return cast(str, tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)).strip()


def chat_loop(model: CausalLM, tokenizer: PreTrainedTokenizerBase, vector: SteeringVector | None = None, *,
              max_new_tokens: int = 128, system: str | None = None) -> None:
    """Read user turns from stdin until EOF or 'exit'; keeps the conversation (after ``system``, if given).

    A turn that would take the conversation past the model's context is dropped with a note; the
    conversation so far is kept.
    """
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    print("pas chat: type a message ('exit' or Ctrl-D to quit)")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text.lower() in ("exit", "quit"):
            return
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        try:
            reply = generate(model, tokenizer, messages, vector, max_new_tokens=max_new_tokens)
        except ContextLengthError as e:
            messages.pop()
            print(f"pas chat: {e}. That message was dropped: send a shorter one, or quit and start a new chat")
            continue
        messages.append({"role": "assistant", "content": reply})
        print(f"model> {reply}")
