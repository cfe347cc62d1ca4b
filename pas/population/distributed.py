"""A population fitted on Ray workers, when one process is not enough: ``align_population(..., executor=RayExecutor())``
(CLI: ``pas align-population --workers N`` on this machine, ``--address ADDR`` on a running cluster).

The workers are Ray actors that load the model once each, with one torch thread; started early
(:meth:`RayExecutor.start`), they load it while the driver does the person-independent work (the plan).
The driver then puts the plan's model-free state (:class:`pas.population.plan.SharedPlan`) in Ray's object
store once; each worker rebuilds the plan from it on its own model (on its first chunk) without redoing any
of that work. Chunks of people go to whichever worker is free (``queue`` chunks per worker in flight, so
that a worker has its next chunk while the driver takes in the last one), and their fits come back to
the driver, which alone writes the store: a resumed run is ``align_population``'s, the same as without
Ray.

Why an :class:`ray.util.ActorPool` of stateful workers rather than Ray Data's ``map_batches``: retrying a
chunk whose worker died is two actor options (``max_restarts``, ``max_task_retries``): Ray restarts the
actor (reloading the model and the shared plan) and re-runs its chunks on it, and the driver still gets
exactly one result per chunk, so nobody is lost or stored twice. The people come from a lazy iterator that
the driver filters against the store as it goes, and the driver must write each chunk as it comes back;
submitting to a pool of actors does both with a bounded number in flight, without turning people into a
Dataset of rows or starting Ray Data's scheduler.

Ray is an optional extra (``pip install 'pas[ray]'``), imported only when a :class:`RayExecutor` is made.
Ray moves objects between processes by pickling them; nothing here is written to disk.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from pas.core.data import Subject
from pas.core.models import load_model, set_threads
from pas.population.plan import ChunkFits, PopulationPlan, fit_here

INSTALL = "pip install 'pas[ray]'"


def import_ray() -> ModuleType:
    """Ray, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"fitting on Ray workers (--workers, --address) needs Ray: {INSTALL}") from e
    return ray


class FitWorker:
    """One Ray worker: the model, loaded once as the driver loaded it, and the plan of the run it serves."""

    def __init__(self, model: str | None, dtype: str, threads: int) -> None:
        set_threads(threads)
        self.model, self.tokenizer = load_model(model, dtype=dtype)
        self.plan: tuple[str, PopulationPlan] | None = None

    def fit(self, shared: list[Any], people: Sequence[Subject]) -> ChunkFits:
        """One chunk's fits and skips under the plan in ``shared[0]`` (an object ref, in a list so that Ray
        passes the ref itself): the plan is rebuilt from it on the first chunk of a run, then kept."""
        import ray

        key = shared[0].hex()
        if self.plan is None or self.plan[0] != key:
            self.plan = None  # the previous run's plan goes before the next one is unpacked
            state = pickle.loads(ray.get(shared[0]))  # its own writable copy (object-store arrays are read-only)
            self.plan = key, state.attach(self.model, self.tokenizer)
        return next(fit_here(self.plan[1], [people]))


class RayExecutor:
    """An :class:`pas.population.plan.Executor` that fits chunks on Ray workers (see the module docstring).

    ``model``, ``dtype``: what the driver gave :func:`pas.core.models.load_model` (every worker loads the same;
    a worker whose model differs from the plan's refuses the plan). ``workers``: how many (default: the
    cluster's CPUs // ``threads``). ``address``: a running cluster to join; without it, the Ray session this
    process already has, else a new local one with ``workers * threads`` CPUs. ``threads``: torch threads per
    worker. ``retries``: how many times a worker whose process died is restarted, its chunks re-run, before
    the run fails (people already stored stay stored; rerunning resumes). ``queue``: chunks in flight per
    worker (the one it fits and those waiting for it).

    The workers live from :meth:`start` (or the first run) to :meth:`close` (or the end of a ``with`` block)
    and serve one run at a time."""

    def __init__(self, model: str | None = None, dtype: str = "fp32", *, workers: int | None = None,
                 address: str | None = None, threads: int = 1, retries: int = 3, queue: int = 2) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads < 1 or retries < 0 or queue < 1:
            raise ValueError(f"threads and queue must be >= 1, retries >= 0, got {threads}, {queue}, {retries}")
        self.ray = import_ray()  # a missing Ray is said now, before any work
        self.model, self.dtype, self.workers, self.address = model, dtype, workers, address
        self.threads, self.retries, self.queue = threads, retries, queue
        self.actors: list[Any] = []

    def start(self) -> RayExecutor:
        """Join the cluster (or start a local one) and start the workers, which begin loading the model now."""
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                ray.init(num_cpus=self.workers * self.threads if self.workers else None, include_dashboard=False)
        if not self.actors:
            count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
            worker = ray.remote(num_cpus=self.threads, max_restarts=self.retries,
                                max_task_retries=self.retries)(FitWorker)
            self.actors = [worker.remote(self.model, self.dtype, self.threads) for _ in range(count)]
        return self

    def __call__(self, plan: PopulationPlan, chunks: Iterable[Sequence[Subject]]) -> Iterator[ChunkFits]:
        """Fit ``chunks`` on the workers, yielding each chunk's fits as it comes back."""
        from ray.util import ActorPool

        ref = self.ray.put(np.frombuffer(pickle.dumps(shared_state(plan), protocol=5), dtype=np.uint8))  # once
        pool = ActorPool(self.start().actors * self.queue)  # each actor runs its calls one at a time, in order
        try:
            for people in chunks:
                if not people:  # everyone already stored: nothing to send
                    yield ChunkFits([], [], [])
                    continue
                if not pool.has_free():
                    yield pool.get_next_unordered()
                pool.submit(lambda actor, people: actor.fit.remote([ref], people), people)
            while pool.has_next():
                yield pool.get_next_unordered()
        finally:
            if pool.has_next():  # left early (an error, or the caller stopped): drop the workers' unfinished work
                self.close()

    def close(self) -> None:
        """Stop the workers (Ray itself keeps running until this process ends or ``ray.shutdown()``)."""
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def shared_state(plan: PopulationPlan) -> Any:
    """``plan.shared()``: the plan without its model (:class:`pas.population.plan.SharedPlan`), or a clear error."""
    share = getattr(plan, "shared", None)
    if share is None:
        raise TypeError(f"{type(plan).__name__} cannot be sent to Ray workers: it has no shared() "
                        f"(see pas.population.plan.SharedPlan)")
    return share()
