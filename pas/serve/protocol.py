"""OpenAI's chat-completions shapes: the request body, a completion, stream chunks, errors; and the text deltas of a
growing reply.

The body accepts OpenAI's fields (unknown ones are ignored, as OpenAI-compatible servers do) plus two of
pas's: ``person`` (who answers, instead of ``model``) and ``strength`` (the vector's multiplier). Replies are
greedy: ``temperature``, ``top_p`` and ``seed`` are accepted and change nothing; ``n`` must be 1 and stop
sequences are refused (both would change what comes back).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class ContentPart(BaseModel):
    """A part of a message's content; only ``{"type": "text", "text": ...}`` parts are read."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def for_template(self) -> dict[str, str]:
        """``{"role", "content"}`` as the chat template takes it (a developer message is a system message)."""
        if isinstance(self.content, list):
            other = sorted({p.type for p in self.content if p.type != "text" or p.text is None})
            if other:
                raise ValueError(f"only text content is read; this message has {', '.join(other)} parts")
            text = "".join(p.text or "" for p in self.content)
        else:
            text = self.content or ""
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one reply per request: greedy replies would all be the same")
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    person: str | None = Field(None, description="pas: who answers (CASE, trait:E+, type:INFP, base)")
    strength: float | None = Field(None, description="pas: the vector's multiplier (default: its chat strength)")


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int,
               strength: float | None) -> dict[str, Any]:
    """A whole chat completion (``pas``: the person and the strength used)."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage(prompt_tokens, completion_tokens), "system_fingerprint": None,
            "pas": {"person": model, "strength": strength}}


def chunk(cid: str, model: str, delta: dict[str, str], finish: str | None = None,
          extra: dict[str, Any] | None = None) -> str:
    """One server-sent event of a streamed completion."""
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **(extra or {})}
    return sse(body)


def sse(body: dict[str, Any] | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"


class TextStream:
    """Text deltas of a growing list of tokens whose concatenation is exactly what :func:`pas.steer.chat.generate`
    returns, ``decode(tokens, skip_special_tokens=True).strip()``: trailing whitespace and an incomplete
    character wait for the next token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.sent = ""

    def push(self, token: int) -> str:
        """The new text that ``token`` makes safe to send."""
        self.tokens.append(token)
        text = self._text().rstrip()
        cut = text.find("\ufffd", len(self.sent))  # a character whose bytes are not all here yet
        return self._send(text if cut < 0 else text[:cut])

    def finish(self) -> str:
        """The rest of the reply."""
        return self._send(self._text().rstrip())

    def _text(self) -> str:
        return str(self.tokenizer.decode(self.tokens, skip_special_tokens=True)).lstrip()

    def _send(self, text: str) -> str:
        if not text.startswith(self.sent):  # decoding more tokens rewrote text already sent: nothing to add
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta
