"""``pas serve``: the official ``openai`` client against a live server on 127.0.0.1 (tiny Llama, a store of 64
synthetic people): whole and streamed replies equal each person's :func:`pas.steer.chat.generate` alone, every
bad request gets a 4xx in OpenAI's shape while the server stays up, a full queue gets 503 with Retry-After,
and 64 concurrent requests for 64 people are batched and each equals that person alone."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

MISSING = [name for name in ("fastapi", "uvicorn", "openai", "httpx") if importlib.util.find_spec(name) is None]
if MISSING:
    pytest.skip(f"pas serve tests need {', '.join(MISSING)} (pip install 'pas[serve]' openai httpx)",
                allow_module_level=True)

import httpx  # noqa: E402
import openai  # noqa: E402
import uvicorn  # noqa: E402

from pas.core.arch import layout  # noqa: E402
from pas.population.store import PopulationStore, StoreProvenance  # noqa: E402
from pas.serve.app import create_app  # noqa: E402
from pas.serve.decode import Row, RowBatch, RowSteer, prompt_ids  # noqa: E402
from pas.serve.engine import Engine, EngineConfig  # noqa: E402
from pas.serve.people import People  # noqa: E402
from pas.steer.chat import generate  # noqa: E402
from pas.steer.signature import ModelSignature  # noqa: E402
from pas.steer.vector import Provenance, SteeringVector  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEOPLE = 64
LIMIT = 64  # the test server's --max-tokens-limit


@pytest.fixture(scope="module", autouse=True)
def plain_kernels():
    """Plain-torch kernels here: compiling them (checked against these references in test_kernels) would take
    most of this module's minute on a busy CPU; the server and ``generate`` alone use the same kernels either way."""
    before = os.environ.get("PAS_COMPILE")
    os.environ["PAS_COMPILE"] = "0"
    yield
    if before is None:
        del os.environ["PAS_COMPILE"]
    else:
        os.environ["PAS_COMPILE"] = before


def synthetic_person(model, i: int) -> SteeringVector:
    """Person ``p{i}``: gated (own gates on the last layer, a push on the last two, as a pas-gated fit) or, every
    fourth person, a constant vector on a few heads; seeded by ``i``."""
    lay = layout(model)
    g = torch.Generator().manual_seed(1000 + i)
    shape = (lay.n_layers, lay.n_heads, lay.head_dim)
    offsets = torch.zeros(shape)
    offsets[-2:] = torch.randn(2, lay.n_heads, lay.head_dim, generator=g) * 2
    prov = Provenance(subject=f"p{i}", method="synthetic")
    if i % 4 == 3:
        return SteeringVector.for_model(model, offsets, provenance=prov)
    weights, bias = torch.zeros(shape), torch.zeros(shape[:2])
    weights[-1], bias[-1], bias[-2] = torch.randn(lay.n_heads, lay.head_dim, generator=g), 0.5, 1.0
    return SteeringVector.for_model(model, offsets, gate_weights=weights, gate_bias=bias, provenance=prov)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """An engine and its API served by uvicorn in a thread on 127.0.0.1."""

    def __init__(self, model, tokenizer, people: People, config: EngineConfig) -> None:
        self.engine = Engine(model, tokenizer, people, config).start()
        app = create_app(self.engine, people, tokenizer, max_tokens_limit=LIMIT, default_max_tokens=8)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.engine.close()


@pytest.fixture(scope="module")
def people_store(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("serve") / "store"
    people = [synthetic_person(tiny_llama, i) for i in range(PEOPLE)]
    with PopulationStore.create(path, ModelSignature.of(tiny_llama),
                                StoreProvenance(data="synthetic test people", synthetic=True)) as store:
        store.add_many(people)
    return PopulationStore(path)


@pytest.fixture(scope="module")
def live(tiny_llama, tokenizer, people_store, data_dir):
    people = People(tiny_llama, tokenizer, people_store, data_dir=data_dir)
    server = LiveServer(tiny_llama, tokenizer, people, EngineConfig(max_batch=64, window_ms=10, max_waiting=128))
    yield server
    server.close()


def alone(model, tokenizer, store, case: str, messages, strength: float, max_tokens: int) -> str:
    return generate(model, tokenizer, messages, store[case] * strength, max_new_tokens=max_tokens)


MESSAGES = [{"role": "system", "content": "You are friendly."}, {"role": "user", "content": "Do you like parties?"}]


def test_chat_completion_equals_the_person_alone(live, tiny_llama, tokenizer, people_store):
    reply = live.client().chat.completions.create(model="pas:p5", messages=MESSAGES, max_tokens=10,
                                                  extra_body={"strength": 0.7})
    assert reply.choices[0].message.content == alone(tiny_llama, tokenizer, people_store, "p5", MESSAGES, 0.7, 10)
    assert reply.model == "pas:p5" and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.model_extra["pas"] == {"person": "pas:p5", "strength": 0.7}
    assert reply.usage.prompt_tokens == len(prompt_ids(tokenizer, MESSAGES))
    assert 1 <= reply.usage.completion_tokens <= 10
    other = live.client().chat.completions.create(model="pas", messages=MESSAGES, max_tokens=10,
                                                  extra_body={"person": "p6", "strength": 0.7})
    assert other.choices[0].message.content == alone(tiny_llama, tokenizer, people_store, "p6", MESSAGES, 0.7, 10)
    base = live.client().chat.completions.create(model="base", messages=MESSAGES, max_tokens=10)
    assert base.choices[0].message.content == generate(tiny_llama, tokenizer, MESSAGES, None, max_new_tokens=10)


def test_streamed_completion_equals_the_whole_one(live, tiny_llama, tokenizer, people_store):
    stream = live.client().chat.completions.create(model="pas:p7", messages=MESSAGES, max_tokens=12, stream=True,
                                                   extra_body={"strength": 1.0},
                                                   stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == alone(tiny_llama, tokenizer, people_store, "p7", MESSAGES, 1.0, 12)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_default_strength_is_the_chat_strength_measured_once(live, tiny_llama, tokenizer, people_store, monkeypatch):
    import pas.serve.people
    from pas.steer.fluency import chat_strength

    measured = []

    def spy(model, tok, vector):
        measured.append(chat_strength(model, tok, vector))
        return measured[-1]

    monkeypatch.setattr(pas.serve.people, "chat_strength", spy)
    body = {"model": "pas:p9", "messages": MESSAGES, "max_tokens": 6}
    replies = [httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=120).json() for _ in range(2)]
    assert len(measured) == 1, "a person's chat strength is measured once"
    strength = measured[0][0]
    assert replies[0] == {**replies[1], "id": replies[0]["id"], "created": replies[0]["created"]}
    assert replies[0]["pas"] == {"person": "pas:p9", "strength": strength}
    assert replies[0]["choices"][0]["message"]["content"] == alone(tiny_llama, tokenizer, people_store, "p9",
                                                                   MESSAGES, strength, 6)


def test_a_trait_pole_is_built_from_its_spec(live, tiny_llama, tokenizer, data_dir):
    from pas.core.data import load_items
    from pas.score.scorer import ItemScorer
    from pas.space.spec import SteeringSpec, vector_from_spec

    reply = live.client().chat.completions.create(model="pas:trait:e+", messages=MESSAGES, max_tokens=6,
                                                  extra_body={"strength": 0.5})
    pole = vector_from_spec(SteeringSpec(trait="E+"), tiny_llama, ItemScorer(tiny_llama, tokenizer,
                                                                             load_items(data_dir)))
    assert reply.model == "pas:trait:E+"
    assert reply.choices[0].message.content == generate(tiny_llama, tokenizer, MESSAGES, pole * 0.5, max_new_tokens=6)


def test_models_and_health(live):
    ids = [m.id for m in live.client().models.list()]
    assert ids[0] == "base" and "pas:trait:E+" in ids and "pas:type:INFP" in ids and "pas:p63" in ids
    health = httpx.get(f"{live.url}/health").json()
    assert health["status"] == "ok" and health["people"] == PEOPLE


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"model": "pas:nobody"}, 404, "no person 'nobody'"),
    ({"model": "gpt-4o"}, 404, "not served here"),
    ({"model": "pas", "person": "trait:"}, 404, "names no one"),
    ({"model": "pas:trait:X+"}, 404, "trait pole"),
    ({"model": "pas:p1", "person": "p2"}, 404, "different people"),
    ({"model": "pas:p1", "strength": 50}, 400, "outside the usable range"),
    ({"model": "base", "strength": 0.5}, 400, "base is unsteered"),
    ({"model": "pas:p1", "max_tokens": LIMIT + 1}, 400, f"at most {LIMIT} tokens"),
    ({"model": "pas:p1", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "pas:p1", "messages": []}, 400, "messages"),
    ({"model": "pas:p1", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": "pas:p1", "n": 3}, 400, "n"),
    ({"model": "pas:p1", "stop": ["\n"]}, 400, "stop sequences"),
    ({"model": "pas:p1", "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "shorten the conversation"),
])
def test_bad_requests_get_openai_errors_and_the_server_stays_up(live, body, status, words):
    full = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}
    r = httpx.post(f"{live.url}/v1/chat/completions", json=full, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and {"message", "type", "param", "code"} <= set(error)
    assert httpx.get(f"{live.url}/health").status_code == 200


def test_malformed_bodies_and_the_official_client_errors(live):
    for raw, words in ((b"{not json", "not valid JSON"), (b"[]", "valid dictionary"),
                       (b'{"model": 5, "messages": "hi"}', "model: Input should be a valid string")):
        r = httpx.post(f"{live.url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and words in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="no person"):
        live.client().chat.completions.create(model="pas:ghost", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="context_length_exceeded|reads at most"):
        live.client().chat.completions.create(model="pas:p1", messages=[{"role": "user", "content": "a " * 5000}])


def test_a_full_queue_gets_503_with_retry_after(tiny_llama, tokenizer, people_store):
    """One row at a time, one waiting: while the worker is held inside a request, the second waits and the
    third is refused with Retry-After; once released, both admitted requests finish."""
    people = People(tiny_llama, tokenizer, people_store, strength=1.0)
    entered, release = threading.Event(), threading.Event()
    steer = people.steer

    def held(name, strength=None):
        entered.set()
        release.wait(30)
        return steer(name, strength)

    people.steer = held  # type: ignore[method-assign]
    server = LiveServer(tiny_llama, tokenizer, people, EngineConfig(max_batch=1, window_ms=0, max_waiting=1))
    try:
        body = {"model": "pas:p1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        url = f"{server.url}/v1/chat/completions"
        results: list[int] = []
        first = threading.Thread(target=lambda: results.append(httpx.post(url, json=body, timeout=60).status_code))
        first.start()
        assert entered.wait(30)
        second = threading.Thread(target=lambda: results.append(httpx.post(url, json=body, timeout=60).status_code))
        second.start()
        deadline = time.monotonic() + 10
        while server.engine.stats.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = httpx.post(url, json=body, timeout=60)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "already waiting" in refused.json()["error"]["message"]
        release.set()
        first.join(30)
        second.join(30)
        assert results == [200, 200]
    finally:
        release.set()
        server.close()


def test_64_concurrent_people_each_equal_themselves_alone(live, tiny_llama, tokenizer, people_store):
    """64 requests at once, each for another person, with prompts and reply lengths that differ (rows pad
    differently, finish at different steps); every greedy reply equals that person's generate alone."""
    prompts = ["Do you like parties?", "Describe a perfect day.", "What do you do when you are stressed?",
               "Tell me about your friends and what you like to do together on weekends."]
    jobs = [(f"p{i}", [{"role": "user", "content": prompts[i % 4]}], 0.5 + (i % 3) * 0.25, 3 + i % 7)
            for i in range(PEOPLE)]
    client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)

    async def ask(case, messages, strength, n):
        r = await client.chat.completions.create(model=f"pas:{case}", messages=messages, max_tokens=n,
                                                 extra_body={"strength": strength})
        return r.choices[0].message.content

    async def everyone():
        return await asyncio.wait_for(asyncio.gather(*(ask(*job) for job in jobs)), 120)

    peak_before = live.engine.stats.peak_rows
    t = time.perf_counter()
    together = asyncio.run(everyone())
    seconds = time.perf_counter() - t
    assert live.engine.stats.peak_rows > max(peak_before, 8), "the concurrent requests were not batched"
    expected = [alone(tiny_llama, tokenizer, people_store, *job) for job in jobs]
    assert together == expected
    assert len(set(together)) > PEOPLE // 2, "the people should answer differently"
    assert seconds < 60


def test_rows_joining_a_running_batch_equal_each_alone(tiny_llama, tokenizer, people_store):
    """Continuous batching, step by step: rows join mid-decode and leave when done; gated, constant, whole-prompt
    ("all") and unsteered rows mixed."""
    everyone = [people_store["p0"], people_store["p3"], None,
                SteeringVector.for_model(tiny_llama, people_store["p7"].offsets, positions="all"), people_store["p2"]]
    prompts = ["Hi!", "Tell me about your weekend plans, in detail please.", "Why?", "Describe a perfect day.",
               "Do you like parties?"]
    messages = [[{"role": "user", "content": p}] for p in prompts]
    rows = [Row(prompt_ids(tokenizer, m), RowSteer.of(tiny_llama, v) if v is not None else None, 9)
            for m, v in zip(messages, everyone, strict=True)]
    batch = RowBatch(tiny_llama, [tokenizer.eos_token_id], tokenizer.pad_token_id)
    batch.join(rows[:2])
    for joining in ([], [], rows[2:4], [], rows[4:]):
        batch.evict()
        if joining:
            batch.join(joining)
            batch.evict()
        batch.step()
    while len(batch):
        batch.evict()
        batch.step()
    got = [tokenizer.decode(r.tokens, skip_special_tokens=True).strip() for r in rows]
    assert got == [generate(tiny_llama, tokenizer, m, v, max_new_tokens=9) for m, v in zip(messages, everyone,
                                                                                           strict=True)]
    assert batch.length == 0


def test_pas_imports_without_the_serve_extra_and_says_how_to_get_it(monkeypatch, capsys):
    """Only pas.serve.app, .protocol and .server name FastAPI, uvicorn or pydantic, and .server only inside a
    function: ``import pas`` (and the CLI) never needs them. Without them ``pas serve`` says how to get them."""
    import pas
    import pas.serve.server
    from pas.cli.main import main

    extra = {"fastapi", "uvicorn", "pydantic", "starlette"}
    for path in Path(pas.__file__).parent.rglob("*.py"):
        if path.parent.name == "serve" and path.name in ("app.py", "protocol.py"):
            continue
        for node in ast.parse(path.read_text()).body:  # top-level imports only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & extra, f"{path} imports the serve extra at the top"
    monkeypatch.setattr(pas.serve.server, "missing_packages", lambda: ["fastapi", "uvicorn"])
    assert main(["serve"]) == 2
    assert "needs fastapi and uvicorn, which are not installed: pip install 'pas[serve]'" in capsys.readouterr().err


def test_json_error_shape_for_unknown_routes(live):
    r = httpx.get(f"{live.url}/v1/nothing")
    assert r.status_code == 404 and json.loads(r.text)["error"]["message"]
