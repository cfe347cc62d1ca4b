"""Steered generation and chat: inputs past the model's context are refused before any work, with the count."""

import types

import pytest

from pas.steer.chat import (
    ContextLengthError,
    chat_loop,
    check_fits,
    context_limit,
    count_tokens,
    generate,
)


def test_context_limit_of_each_family(tiny, tokenizer):
    """Llama and Qwen2 say ``max_position_embeddings``, GPT-2 ``n_positions``: 4096 for the tiny models."""
    assert context_limit(tiny, tokenizer) == 4096


def test_context_limit_falls_back_on_a_sane_tokenizer_limit():
    bare = types.SimpleNamespace(config=types.SimpleNamespace())
    assert context_limit(bare, types.SimpleNamespace(model_max_length=2048)) == 2048
    assert context_limit(bare, types.SimpleNamespace(model_max_length=int(1e30))) is None  # "no limit"
    assert context_limit(bare) is None


def test_check_fits_counts_and_refuses(tiny_llama, tokenizer):
    assert check_fits(tokenizer, tiny_llama, "word " * 100) == 101
    assert check_fits(tokenizer, tiny_llama, "word " * 3000, reserve=1000) == 3001
    with pytest.raises(ContextLengthError, match=r"^--system is 4,001 tokens; the model reads at most 4,096 tokens, "
                                                 r"128 of them kept for the reply: shorten --system by at least 33 "
                                                 r"tokens \(about 165 of its 20,000 characters\)$"):
        check_fits(tokenizer, tiny_llama, "word " * 4000, reserve=128, what="--system")
    with pytest.raises(ContextLengthError, match="needs 5,000 tokens but the model reads at most 4,096"):
        check_fits(tokenizer, tiny_llama, "hi", reserve=5000)


def test_messages_are_counted_with_the_chat_template(tiny_llama, tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "word " * 4090}]
    n = count_tokens(tokenizer, messages)
    assert n > count_tokens(tokenizer, "be brief") + count_tokens(tokenizer, "word " * 4090)  # the template's tokens
    with pytest.raises(ContextLengthError, match=rf"the conversation is {n:,} tokens"):
        check_fits(tokenizer, tiny_llama, messages, what="the conversation")


def test_generate_refuses_a_prompt_past_the_context(tiny_llama, tokenizer, monkeypatch):
    monkeypatch.setattr(tiny_llama, "generate", lambda *a, **k: pytest.fail("generated past the context"),
                        raising=False)
    with pytest.raises(ContextLengthError, match=r"the prompt is 5,0\d\d tokens.*max_new_tokens=16"):
        generate(tiny_llama, tokenizer, "word " * 5000, max_new_tokens=16)
    with pytest.raises(ContextLengthError, match="the prompt is"):
        generate(tiny_llama, tokenizer, "hi", system="word " * 5000, max_new_tokens=16)


def test_chat_loop_drops_a_turn_past_the_context_and_goes_on(tiny_llama, tokenizer, monkeypatch, capsys):
    import pas.steer.chat

    turns = iter(["word " * 5000, "hello", "exit"])
    seen = []
    real = pas.steer.chat.generate

    def fake_generate(model, tok, messages, vector=None, **kw):
        if len(messages) > 1 or len(messages[0]["content"]) > 100:
            return real(model, tok, messages, vector, **kw)  # the long turn: refused before generating
        seen.append([m["content"] for m in messages])
        return "hi there"

    monkeypatch.setattr("builtins.input", lambda prompt="": next(turns))
    monkeypatch.setattr(pas.steer.chat, "generate", fake_generate)
    chat_loop(tiny_llama, tokenizer, max_new_tokens=8)
    out = capsys.readouterr().out
    assert "the conversation is 5,0" in out and "That message was dropped" in out
    assert seen == [["hello"]] and "model> hi there" in out  # the long turn left no trace in the conversation
