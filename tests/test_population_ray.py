"""align_population on Ray workers: the same vectors as in one process, a dead worker's chunk retried (nobody lost
or stored twice), a driver killed with SIGKILL resumed from the store; a plan rebuilt from its shared state fits
the same vectors. Ray is an optional extra: its tests skip without it (the plan's shared state is tested anyway)."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pas.cli.main import main
from pas.core.models import load_model
from pas.fit.config import GatedConfig
from pas.population.fit import align_population
from pas.population.gated_many import GatedPlan
from pas.population.plan import PopulationPlan, SharedPlan
from pas.population.store import PopulationStore, StoreProvenance
from pas.score.scorer import ItemScorer
from pas.steer.signature import ModelMismatchError, ModelSignature

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_llama, tokenizer) -> str:
    """The tiny Llama in a folder, so that worker processes load the very same model by path."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def scorer(saved, papi):
    model, tok = load_model(saved)
    return ItemScorer(model, tok, papi.bank)


@pytest.fixture(scope="module")
def people(papi, scorer):
    """Four real people (one who skipped an item) and two planted ones (readouts that calibrate above gain 0)."""
    from test_population_fit import planted

    train = papi.bank.train_ids
    missing = next(s for s in papi.subjects if len(s.responses_to(train)) < len(train))
    return [*papi.subjects[:3], missing, planted(scorer, papi.subjects[5], 1, "planted-1"),
            planted(scorer, missing, 2, "planted-2")]


@pytest.fixture(scope="module")
def here(scorer, people):
    """The vectors fitted in this process."""
    return align_population(scorer, people, chunk=2, progress=False)


@pytest.fixture(scope="module", autouse=True)
def plain_torch():
    """These tests check distribution (same vectors, retries, resume), not the fused kernel (tests/test_kernels.py,
    tests/test_population_subspace.py): plain torch here and on every worker spares each new process compiling it
    (seconds per shape class)."""
    before = os.environ.get("PAS_COMPILE")
    os.environ["PAS_COMPILE"] = "0"
    yield
    if before is None:
        os.environ.pop("PAS_COMPILE", None)
    else:
        os.environ["PAS_COMPILE"] = before


@pytest.fixture(scope="module")
def session():
    """One small Ray session for the module: 2 CPUs, no dashboard; workers can import this test module."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'pas[ray]')")
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
           "PAS_COMPILE": "0"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def assert_same_fits(got, want):
    assert set(got) == set(want)
    for case, v in want.items():
        assert torch.equal(got[case].offsets, v.offsets) and torch.equal(got[case].gates.weights, v.gates.weights)
        assert torch.equal(got[case].gates.bias, v.gates.bias) and got[case].provenance == v.provenance


# ------------------------------------------------------------ the plan without its model (no Ray needed)

def test_a_plan_rebuilt_from_its_shared_state_fits_the_same_vectors(saved, scorer, people, tiny_llama, tokenizer):
    plan = GatedPlan(scorer, GatedConfig())
    shared = pickle.loads(pickle.dumps(plan.shared()))  # as a worker receives it
    assert isinstance(shared, SharedPlan) and "scorer" not in shared.state
    model, tok = load_model(saved)  # another copy of the same weights, as a worker loads it
    fits, skipped = shared.attach(model, tok).fit_many(people)
    want, want_skipped = plan.fit_many(people)
    assert skipped == want_skipped == []
    assert_same_fits({f.vector.subject: f.vector for f in fits}, {f.vector.subject: f.vector for f in want})
    assert [f.choice for f in fits] == [f.choice for f in want] and {0.0} != {f.choice[0] for f in fits}
    from conftest import make_tiny

    with pytest.raises(ModelMismatchError, match="other weights"):
        pickle.loads(pickle.dumps(plan.shared())).attach(make_tiny("llama", len(tokenizer), seed=1), tok)


def test_workers_without_ray_say_how_to_install_it(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    args = ["align-population", "--data-dir", str(data_dir), "--first", "1", "--out", str(tmp_path / "s")]
    assert main([*args, "--workers", "2"]) == 2
    assert "pip install 'pas[ray]'" in capsys.readouterr().err and not (tmp_path / "s").exists()


# ------------------------------------------------------------ on Ray workers

def test_two_ray_workers_fit_the_same_vectors_as_one_process(session, saved, scorer, people, request):
    from pas.population.distributed import RayExecutor

    with RayExecutor(saved, workers=2) as two:  # both of the session's CPUs, until the block ends
        here = request.getfixturevalue("here")  # fitted here while the workers load their model
        report = align_population(scorer, people, chunk=2, progress=False, executor=two)  # 3 chunks on 2 workers
    assert report.fitted == len(people) and report.choices == here.choices
    assert_same_fits(report.vectors, here.vectors)


@dataclass(frozen=True)
class Dying:
    """Shared state that rebuilds a plan whose worker process dies (``os._exit``) the first time it is given
    ``case``; the marker file says the death happened, so that the retry goes through."""

    shared: SharedPlan
    case: str
    marker: str

    def attach(self, model, tokenizer) -> PopulationPlan:
        return DyingPlan(self.shared.attach(model, tokenizer), self.case, self.marker)


@dataclass
class DyingPlan:
    """A plan (driver side: its :meth:`shared` is what workers receive) that kills its process once, on ``case``."""

    plan: PopulationPlan
    case: str
    marker: str

    @property
    def method(self) -> str:
        return self.plan.method

    def fit_many(self, people):
        if any(s.case == self.case for s in people) and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return self.plan.fit_many(people)

    def shared(self) -> Dying:
        return Dying(self.plan.shared(), self.case, self.marker)  # type: ignore[attr-defined]


def test_a_worker_killed_mid_chunk_has_its_chunk_retried(session, saved, scorer, people, here, tmp_path, data_dir,
                                                         monkeypatch):
    """One worker, whose process dies on its first try at one chunk: Ray restarts it and re-runs the chunk; the
    store ends with everyone once, the same vectors as fitted in one process."""
    import pas.population.fit as fit_module
    from pas.population.distributed import RayExecutor

    marker, real = tmp_path / "died", fit_module.population_plan
    monkeypatch.setattr(fit_module, "population_plan", lambda *a, **k: DyingPlan(real(*a, **k), people[3].case,
                                                                                 str(marker)))
    prov = StoreProvenance(data=str(data_dir), synthetic=False)
    with PopulationStore.create(tmp_path / "store", ModelSignature.of(scorer.model), prov) as store, \
            RayExecutor(saved, workers=1) as one:
        report = align_population(scorer, people, store=store, chunk=2, progress=False, executor=one)
    assert marker.exists(), "the worker should have died on its first try at the chunk"
    assert report.fitted == len(people) and not report.skipped
    store = PopulationStore(tmp_path / "store")
    assert sorted(store.cases()) == sorted(s.case for s in people)  # everyone, once
    assert_same_fits({c: store[c] for c in store.cases()}, here.vectors)


ALIGN = [sys.executable, "-c", "import sys; from pas.cli.main import main; sys.exit(main(sys.argv[1:]))"]


def test_a_killed_driver_resumes_from_the_store(session, saved, data_dir, tmp_path, capsys):
    """``pas align-population --workers 1`` (on this module's Ray cluster: ``--address``) killed with SIGKILL once
    the store holds people; the same command rerun resumes: everyone stored exactly once."""
    out, first = tmp_path / "store", 120
    address = session.get_runtime_context().gcs_address
    flags = ["align-population", "--data-dir", str(data_dir), "--first", str(first), "--model", saved, "--out",
             str(out), "--chunk", "2", "--flush-seconds", "0", "--workers", "1", "--address", address, "--threads", "1"]
    env, log = {**os.environ, "OMP_NUM_THREADS": "1"}, tmp_path / "killed.log"
    with log.open("w") as err:
        child = subprocess.Popen([*ALIGN, *flags], env=env, cwd=REPO, stdout=err, stderr=err, start_new_session=True)
    deadline = time.monotonic() + 150
    while stored(out) < 2:
        assert child.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the killed run stored nobody"
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    killed_at = stored(out)
    assert 2 <= killed_at < first
    assert main(flags) == 0
    printed = capsys.readouterr().out
    done = re.search(r"(\d+) fitted, (\d+) already stored", printed)
    assert done and int(done[2]) >= killed_at and int(done[1]) + int(done[2]) == first
    cases = PopulationStore(out).cases()
    assert len(cases) == len(set(cases)) == first


def stored(path: Path) -> int:
    """People committed to the store at ``path`` so far (0 while it is being made)."""
    try:
        return len(PopulationStore(path))
    except (OSError, ValueError):
        return 0
