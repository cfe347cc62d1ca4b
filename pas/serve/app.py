"""The HTTP API (FastAPI): ``POST /v1/chat/completions`` (whole or streamed), ``GET /v1/models``, ``GET /health``.

Every request is checked before it is queued, and refused in OpenAI's error shape: a body that is not valid
(400), a person not here (404), a strength out of range (400), more tokens asked than ``max_tokens_limit``
(400), a conversation that with its reply passes the model's context (400). A full queue answers 503 with
Retry-After. The server stays up through all of them. One log line per request (logger ``pas.serve``):
person, strength, prompt and completion tokens, latency, status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from pas.serve.decode import prompt_ids
from pas.serve.engine import Engine, Event, Failed, Finished, Job, Overloaded, Started, Token
from pas.serve.names import PersonName, UnknownPerson, request_name
from pas.serve.protocol import ChatRequest, TextStream, chunk, completion, completion_id, error_body, sse, usage
from pas.steer.chat import ContextLengthError, context_limit, refuse_over
from pas.steer.fluency import check_strength

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pas.serve.people import People

log = logging.getLogger("pas.serve")


class Refused(Exception):
    """A request refused before it is queued: HTTP ``status`` and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.headers = status, param, code, headers


class Channel:
    """A request's events, from the worker thread to the request's coroutine."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop closed (shutdown): nobody is listening
            pass

    async def get(self) -> Event:
        return await self.queue.get()


def create_app(engine: Engine, people: People, tokenizer: PreTrainedTokenizerBase, *, max_tokens_limit: int = 512,
               default_max_tokens: int = 128, models_listed: int = 1000) -> FastAPI:
    """The API over a started :class:`Engine` (see the module docstring). ``tokenizer`` lays out prompts and
    decodes replies on the event loop's thread; ``max_tokens`` defaults to ``default_max_tokens``."""
    app = FastAPI(title="pas serve", description="an OpenAI-compatible chat API where each request names its person")
    context = context_limit(engine.model, tokenizer)
    default_max_tokens = min(default_max_tokens, max_tokens_limit)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            where, message = "", f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'unreadable')})"
        else:
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
            message = f"{where or 'body'}: {first.get('msg', 'not a valid request body')}"
        log_request(None, None, 0, 0.0, 400, message)
        return JSONResponse(error_body(message, param=where or None), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), code=str(exc.status_code)), exc.status_code)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        kind = "server_overloaded" if exc.status == 503 else "invalid_request_error"
        return JSONResponse(error_body(str(exc), kind, exc.param, exc.code), exc.status, headers=exc.headers)

    @app.get("/health")
    async def health() -> JSONResponse:
        s = engine.stats
        body = {"status": "ok" if engine.alive else "down", "running": s.running, "waiting": s.waiting,
                "steps": s.steps, "peak_rows": s.peak_rows, "finished": s.finished, "failed": s.failed,
                "max_batch": engine.config.max_batch, "people": len(people.store) if people.store else 0}
        return JSONResponse(body, 200 if engine.alive else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        made = int(engine.stats.started)
        return {"object": "list", "data": [{"id": i, "object": "model", "created": made, "owned_by": "pas"}
                                           for i in people.ids(models_listed)]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        start = time.perf_counter()
        person: PersonName | None = None
        try:
            person, prompt, max_tokens = check(body)
            channel = Channel(asyncio.get_running_loop())
            job = Job(person, body.strength, prompt, max_tokens, channel.put)
            try:
                engine.submit(job)
            except Overloaded as e:
                raise Refused(503, str(e), code="overloaded", headers={"Retry-After": str(e.retry_after)}) from None
        except Refused as e:
            log_request(person, body.strength, 0, time.perf_counter() - start, e.status, str(e))
            raise
        try:
            first = await channel.get()
        except asyncio.CancelledError:
            job.cancel()
            raise
        if isinstance(first, Failed):
            log_request(person, body.strength, len(prompt), time.perf_counter() - start, first.status, first.message)
            kind = "invalid_request_error" if first.status == 404 else "server_error"
            return JSONResponse(error_body(first.message, kind, "model" if first.status == 404 else None,
                                           "model_not_found" if first.status == 404 else None), first.status)
        strength = cast(Started, first).strength
        reply = Reply(person, strength, len(prompt), start, completion_id(), job, channel)
        if body.stream:
            include = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(reply.stream(tokenizer, include), media_type="text/event-stream")
        return await reply.whole(tokenizer)

    def check(body: ChatRequest) -> tuple[PersonName, list[int], int]:
        """The person, prompt tokens and reply length of a request, or :class:`Refused` saying what is wrong."""
        try:
            person = people.find(request_name(body.model, body.person))
        except UnknownPerson as e:
            raise Refused(404, str(e), "person" if body.person else "model", "model_not_found") from None
        if body.strength is not None:
            if not person.steered:
                raise Refused(400, "strength needs a person: base is unsteered", "strength")
            try:
                check_strength(body.strength)
            except ValueError as e:
                raise Refused(400, str(e).replace("--strength", "strength"), "strength") from None
        if body.stop:
            raise Refused(400, "stop sequences are not supported by pas serve", "stop")
        try:
            messages = [m.for_template() for m in body.messages]
        except ValueError as e:
            raise Refused(400, str(e), "messages") from None
        asked = body.max_completion_tokens or body.max_tokens
        if asked is not None and asked > max_tokens_limit:
            raise Refused(400, f"max_tokens is {asked} but this server makes at most {max_tokens_limit} tokens "
                               f"per reply (pas serve --max-tokens-limit); ask for fewer", "max_tokens",
                          "max_tokens_too_large")
        prompt = prompt_ids(tokenizer, messages)
        # not asked: the default, or what room the context leaves (at least 1, else the check below refuses)
        room = max(context - len(prompt), 1) if context is not None else default_max_tokens
        max_tokens = asked or min(default_max_tokens, room)
        try:
            refuse_over(len(prompt), context, reserve=max_tokens, what="the conversation",
                        reserve_for=f"the reply (max_tokens={max_tokens})")
        except ContextLengthError as e:
            raise Refused(400, str(e), "messages", "context_length_exceeded") from None
        return person, prompt, max_tokens

    return app


class Reply:
    """One admitted request's reply, whole or streamed, and its log line."""

    def __init__(self, person: PersonName, strength: float | None, prompt_tokens: int, start: float, cid: str,
                 job: Job, channel: Channel) -> None:
        self.person, self.strength, self.prompt_tokens, self.start = person, strength, prompt_tokens, start
        self.cid, self.job, self.channel = cid, job, channel

    async def whole(self, tokenizer: PreTrainedTokenizerBase) -> JSONResponse:
        try:
            while not isinstance(event := await self.channel.get(), Finished | Failed):
                pass
        except asyncio.CancelledError:
            self.job.cancel()
            raise
        if isinstance(event, Failed):
            self.log(0, event.status, event.message)
            return JSONResponse(error_body(event.message, "server_error"), event.status)
        text = str(tokenizer.decode(list(event.tokens), skip_special_tokens=True)).strip()
        self.log(len(event.tokens), 200, event.reason)
        return JSONResponse(completion(self.cid, self.person.id, text, event.reason, self.prompt_tokens,
                                       len(event.tokens), self.strength))

    async def stream(self, tokenizer: PreTrainedTokenizerBase, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: a role chunk, content deltas, a finish chunk, (usage), ``[DONE]``."""
        text, model, done = TextStream(tokenizer), self.person.id, False
        try:
            yield chunk(self.cid, model, {"role": "assistant", "content": ""},
                        extra={"pas": {"person": model, "strength": self.strength}})
            while True:
                event = await self.channel.get()
                if isinstance(event, Token):
                    if delta := text.push(event.token):
                        yield chunk(self.cid, model, {"content": delta})
                    continue
                done = True
                if isinstance(event, Failed):
                    self.log(len(text.tokens), event.status, event.message)
                    yield sse(error_body(event.message, "server_error"))
                elif isinstance(event, Finished):
                    if tail := text.finish():
                        yield chunk(self.cid, model, {"content": tail})
                    yield chunk(self.cid, model, {}, event.reason)
                    if include_usage:
                        yield sse({"id": self.cid, "object": "chat.completion.chunk", "created": int(time.time()),
                                   "model": model, "choices": [],
                                   "usage": usage(self.prompt_tokens, len(event.tokens))})
                    self.log(len(event.tokens), 200, f"{event.reason}, streamed")
                yield sse("[DONE]")
                return
        finally:
            if not done:  # the client left mid-stream
                self.job.cancel()
                self.log(len(text.tokens), 499, "client closed the stream")

    def log(self, completion_tokens: int, status: int, note: str) -> None:
        log_request(self.person, self.strength, self.prompt_tokens, time.perf_counter() - self.start, status, note,
                    completion_tokens)


def log_request(person: PersonName | None, strength: float | None, prompt_tokens: int, seconds: float, status: int,
                note: str = "", completion_tokens: int = 0) -> None:
    """The one log line of a request."""
    log.info("person=%s strength=%s prompt_tokens=%d completion_tokens=%d latency=%.3fs status=%d %s",
             person.id if person else "-", "default" if strength is None else f"{strength:g}", prompt_tokens,
             completion_tokens, seconds, status, note)
