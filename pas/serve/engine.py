"""The model worker: one thread owns the model and batches every request, each row steered by its own person.

Requests wait in a bounded queue (:class:`Overloaded` when it is full: the API answers 503 with
Retry-After). The worker runs continuous batching:

- **idle**: it blocks for a first request, then waits up to ``window_ms`` for more (up to ``max_batch``),
  prefills them together and starts decoding;
- **running**: before every decode step it takes whoever is waiting, up to ``max_batch`` rows in all, and
  prefills them into the running batch (they wait for at most one step and one prefill, never for the batch);
- **long requests**: rows finish independently (an end-of-sequence token or their ``max_tokens``) and leave
  at once, freeing their slot and their cache; a long request only ever holds its own slot.

Each new person is resolved when their request is admitted (:meth:`pas.serve.people.People.steer`; a
trait pole or a chat strength is measured on the model once and cached), between steps, with the decode
hooks off. A failure there fails that request alone; a failed forward fails the rows in it, and the worker
goes on. Events go back through each job's ``emit`` (called on the worker thread).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pas.serve.decode import Row, RowBatch
from pas.serve.names import PersonName, UnknownPerson

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pas.core.models import CausalLM
    from pas.serve.people import People

log = logging.getLogger("pas.serve")


@dataclass(frozen=True)
class EngineConfig:
    """How requests are batched. ``max_batch``: rows decoding together; ``window_ms``: how long an idle worker
    waits for company after a first request; ``max_waiting``: requests queued beyond the batch before new
    ones are refused (503); ``retry_after``: seconds a refused client is told to wait."""

    max_batch: int = 64
    window_ms: float = 10.0
    max_waiting: int = 256
    retry_after: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.window_ms <= 10_000:
            raise ValueError(f"window_ms must be between 0 and 10000, got {self.window_ms}")
        if self.max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {self.max_waiting}")


class Overloaded(RuntimeError):
    """Too many requests waiting: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Started:
    """The job joined the batch, steered at ``strength`` (None: unsteered)."""

    strength: float | None


@dataclass(frozen=True)
class Token:
    token: int


@dataclass(frozen=True)
class Finished:
    """``reason``: ``"stop"`` or ``"length"``; ``tokens``: every token made."""

    reason: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Failed:
    """The job failed: ``status`` 404 (its person is not here), 500 (a failure here) or 503 (shutting down)."""

    status: int
    message: str


Event = Started | Token | Finished | Failed


@dataclass(eq=False)
class Job:
    """One request for the worker: a person, a strength (None: the person's default), prompt tokens, how many
    tokens to make, and ``emit`` for its events. ``stop_at_eos=False`` makes exactly ``max_new_tokens``
    (benchmarks)."""

    person: PersonName
    strength: float | None
    prompt: list[int]
    max_new_tokens: int
    emit: Callable[[Event], None]
    stop_at_eos: bool = True
    cancelled: bool = False

    def cancel(self) -> None:
        """Stop making tokens for this job (its client left); the worker drops it before its next step."""
        self.cancelled = True


@dataclass
class EngineStats:
    """Counters for /health and tests: steps, the most rows in one step, jobs finished and failed."""

    steps: int = 0
    peak_rows: int = 0
    finished: int = 0
    failed: int = 0
    waiting: int = 0
    running: int = 0
    started: float = field(default_factory=time.time)


class Engine:
    """The worker thread and its queue (see the module docstring). ``start()`` it; ``close()`` stops it."""

    def __init__(self, model: CausalLM, tokenizer: PreTrainedTokenizerBase, people: People,
                 config: EngineConfig | None = None) -> None:
        self.model, self.people = model, people
        self.config = config or EngineConfig()
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0]
        self.batch = RowBatch(model, eos_ids, int(pad))
        self.stats = EngineStats()
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=self.config.max_waiting)
        self._jobs: dict[int, Job] = {}  # id(row) -> its job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pas-serve-worker", daemon=True)

    def start(self) -> Engine:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after its current step; jobs still waiting or running fail (503)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        while not self._queue.empty():  # submitted while the worker was stopping
            self._queue.get_nowait().emit(Failed(503, "the server is shutting down"))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`Overloaded` when ``max_waiting`` jobs already wait (or the worker stopped)."""
        if not self.alive:
            raise Overloaded("the model worker is not running", self.config.retry_after)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self.config.max_waiting} requests are already waiting for the model; retry in "
                             f"{self.config.retry_after} s", self.config.retry_after) from None
        self.stats.waiting = self._queue.qsize()

    # ------------------------------------------------------------ the worker thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = self._take()
                if jobs:
                    self._admit(jobs)
                if len(self.batch):
                    self._step()
            except Exception as e:  # noqa: BLE001 - a bug must fail its rows, never the worker
                log.exception("pas serve: the model worker failed a batch")
                self._fail_all(f"internal error ({type(e).__name__}: {e})")
        self._fail_all("the server is shutting down", status=503)
        while not self._queue.empty():
            self._queue.get_nowait().emit(Failed(503, "the server is shutting down"))

    def _take(self) -> list[Job]:
        """Jobs to admit now: see the module docstring (idle: a first job and the window; running: whoever waits)."""
        free = self.config.max_batch - len(self.batch)
        jobs: list[Job] = []
        if free <= 0:
            return jobs
        if not len(self.batch):
            try:
                jobs.append(self._queue.get(timeout=0.1))
            except queue.Empty:
                return jobs
            deadline = time.monotonic() + self.config.window_ms / 1000
            while len(jobs) < free and (left := deadline - time.monotonic()) > 0:
                try:
                    jobs.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
        while len(jobs) < free:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.stats.waiting = self._queue.qsize()
        return [j for j in jobs if not j.cancelled]

    def _admit(self, jobs: list[Job]) -> None:
        """Resolve each job's person (model work, hooks off), then prefill the admitted ones into the batch."""
        self.batch.detach()
        rows = []
        for job in jobs:
            try:
                steer, strength = self.people.steer(job.person, job.strength)
            except UnknownPerson as e:
                self._fail(job, 404, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - one person's failure fails that request alone
                log.exception("pas serve: resolving %s failed", job.person.id)
                self._fail(job, 500, f"could not prepare {job.person.id}: {type(e).__name__}: {e}")
                continue
            row = Row(job.prompt, steer, job.max_new_tokens, job.stop_at_eos)
            self._jobs[id(row)] = job
            job.emit(Started(strength))
            rows.append(row)
        if not rows:
            return
        try:
            self.batch.join(rows)
        except Exception as e:  # noqa: BLE001 - the batch's cache may be half-merged: fail every row in it
            log.exception("pas serve: prefill failed")
            self._fail_all(f"prefill failed ({type(e).__name__}: {e})", extra=rows)
            return
        self._emit(rows)

    def _step(self) -> None:
        for row in self.batch.rows:
            if self._jobs[id(row)].cancelled:
                row.finish = "cancelled"
        self._finish(self.batch.evict())
        if not len(self.batch):
            return
        self.stats.peak_rows = max(self.stats.peak_rows, len(self.batch))
        self.stats.running = len(self.batch)
        try:
            self.batch.step()
        except Exception as e:  # noqa: BLE001 - a failed forward fails its rows, not the server
            log.exception("pas serve: decode step failed")
            self._fail_all(f"decode step failed ({type(e).__name__}: {e})")
            return
        self.stats.steps += 1
        self._emit(self.batch.rows)

    def _emit(self, rows: list[Row]) -> None:
        """Each row's newest token, then the rows that finished leave the batch."""
        for row in rows:
            self._jobs[id(row)].emit(Token(row.tokens[-1]))
        self._finish(self.batch.evict())
        self.stats.running = len(self.batch)

    def _finish(self, rows: list[Row]) -> None:
        for row in rows:
            job = self._jobs.pop(id(row))
            if row.finish != "cancelled":
                job.emit(Finished(row.finish or "stop", tuple(row.tokens)))
                self.stats.finished += 1

    def _fail(self, job: Job, status: int, message: str) -> None:
        self.stats.failed += 1
        job.emit(Failed(status, message))

    def _fail_all(self, message: str, extra: Sequence[Row] = (), status: int = 500) -> None:
        """Fail every row of the batch (and ``extra`` rows not yet in it) and start afresh."""
        for row in [*self.batch.reset(), *extra]:
            job = self._jobs.pop(id(row), None)
            if job is not None:
                self._fail(job, status, message)
        self.stats.running = 0
