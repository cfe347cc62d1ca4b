"""The population store: exact round trips, sharing, validation, clear errors, and resuming after a kill."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from pas.core.version import __version__
from pas.population.store import CaseExistsError, PopulationStore, StoreError, StoreProvenance
from pas.steer.signature import ModelMismatchError, ModelSignature
from pas.steer.vector import Provenance, SteeringVector

SIG = ModelSignature("toy", "llama", "cfg", 4, 3, 8, 24, (0.5, -0.25))
PROV = StoreProvenance(data="people.parquet", synthetic=True, config={"kind": "gated", "gain": [1.0, 2.0]})
REPO = Path(__file__).resolve().parents[1]


def person(i: int, kind: str = "gated", limit: bool = True, sig: ModelSignature = SIG,
           common_seed: int = 1234) -> SteeringVector:
    """Person ``i``, deterministic. ``"gated"`` is shaped like a pas-gated fit: a correction (``w = 0, b = 1``)
    on the layer below the last and pushes on the last, the same for everyone (of one ``common_seed``); own
    gate weights and bias on the last layer. ``"constant"``: a few random heads (the same for ``i`` and ``i + 3``)."""
    n_layers, n_heads, head_dim = sig.shape
    common = torch.Generator().manual_seed(common_seed)
    correction, push = (torch.randn(n_heads, head_dim, generator=common) for _ in range(2))
    g = torch.Generator().manual_seed(i)
    prov = Provenance(subject=f"p{i}", method=f"pas-{kind}", item_hash=f"h{i % 3}", bank="bank1",
                      config={"seed": 0, "grid": [0.5, 1.0]})
    offsets = torch.zeros(sig.shape)
    if kind == "constant":
        heads = torch.randperm(n_layers * n_heads, generator=torch.Generator().manual_seed(i % 3))[:4]
        offsets.view(-1, head_dim)[heads] = torch.randn(4, head_dim, generator=g)
        return SteeringVector(offsets, sig, provenance=prov)
    offsets[-2], offsets[-1] = correction, push
    weights, bias = torch.zeros(sig.shape), torch.zeros(n_layers, n_heads)
    weights[-1], bias[-2] = torch.randn(n_heads, head_dim, generator=g), 1.0
    bias[-1] = torch.randn(n_heads, generator=g)
    lim = torch.full((n_layers, n_heads), float("inf"))
    lim[-1] = torch.rand(n_heads, generator=g)
    return SteeringVector.for_model(None, offsets, gate_weights=weights, gate_bias=bias,
                                    gate_limit=lim if limit else None, signature=sig, provenance=prov)


def assert_same(a: SteeringVector, b: SteeringVector) -> None:
    assert torch.equal(a.offsets, b.offsets) and a.offsets.dtype == b.offsets.dtype == torch.float32
    assert a.positions == b.positions and a.kind == b.kind and a.signature == b.signature
    assert a.provenance == b.provenance
    if a.gates is not None and b.gates is not None:
        assert torch.equal(a.gates.weights, b.gates.weights) and torch.equal(a.gates.bias, b.gates.bias)
        assert (a.gates.limit is None) == (b.gates.limit is None)
        if a.gates.limit is not None:
            assert torch.equal(a.gates.limit, b.gates.limit)


def make(path: Path, people: list[SteeringVector], shard_size: int = 4) -> None:
    with PopulationStore.create(path, SIG, PROV, shard_size=shard_size) as store:
        store.add_many(people)


def test_round_trip_is_exact(tmp_path):
    """Gated (with and without limits), constant, all-zero, whole-prompt and sign-of-zero vectors come back
    bit-identical, from pending memory, after a commit and after reopening."""
    odd = torch.zeros(SIG.shape)
    odd[1, 2, :4] = -0.0  # a fill of -0.0 is not a fill of 0.0
    odd[2] = torch.randn(SIG.shape[1:])
    people = [person(0), person(1, limit=False), person(2, "constant"), person(3, "constant"),
              SteeringVector(torch.zeros(SIG.shape), SIG, provenance=Provenance(subject="zero")),
              SteeringVector(odd, SIG, positions="all", provenance=Provenance(subject="odd", derived="sum of a and b")),
              (person(4) * 0.5).relabel(subject="scaled")]
    store = PopulationStore.create(tmp_path / "s", SIG, PROV, shard_size=3)
    store.add_many(people)
    assert store.stats().pending == 1 and "scaled" in store
    for v in people:
        assert_same(store[v.subject], v)
    store.close()
    reopened = PopulationStore(tmp_path / "s")
    assert reopened.cases() == [v.subject for v in people] and len(reopened) == len(people)
    for v in people:
        assert_same(reopened[v.subject], v)
    assert torch.equal(reopened["odd"].offsets.view(torch.int32), odd.view(torch.int32))


def test_shared_units_are_stored_once(tmp_path):
    """A pas-gated population stores the correction and pushes once; each person keeps only their own gate."""
    n = 40
    make(tmp_path / "s", [person(i) for i in range(n)], shard_size=16)
    store = PopulationStore(tmp_path / "s")
    n_heads, head_dim = SIG.n_heads, SIG.head_dim
    stats = store.stats()
    assert stats.people == n and stats.shards == 3 and stats.shared_units == 2 * n_heads
    own = 0
    for shard in sorted((tmp_path / "s" / "shards").glob("shard-*")):
        with safe_open(shard, "pt") as f:
            own += f.get_slice("data").get_shape()[0]
    # the first person keeps the units nobody had shared yet
    assert own == n * (n_heads * head_dim + 2 * n_heads) + 2 * n_heads * head_dim
    dense = 2 * 4 * int(np.prod(SIG.shape)) + 2 * 4 * SIG.n_layers * n_heads  # float32 offsets, weights, bias, limit
    assert stats.bytes_per_person < dense


def test_resume_adding_after_reopen(tmp_path):
    make(tmp_path / "s", [person(i) for i in range(5)])
    store = PopulationStore.open(tmp_path / "s")
    assert len(store) == 5 and "p4" in store and "p5" not in store
    todo = [person(i) for i in range(10) if f"p{i}" not in store]
    with store:
        store.add_many(todo)
    again = PopulationStore(tmp_path / "s")
    assert again.cases() == [f"p{i}" for i in range(10)]
    for i in range(10):
        assert_same(again[f"p{i}"], person(i))


def test_refuses_duplicates_and_bad_vectors_before_adding_any(tmp_path):
    store = PopulationStore.create(tmp_path / "s", SIG, PROV)
    store.add_many([person(0)])
    with pytest.raises(CaseExistsError, match="'p0' is already in"):
        store.add_many([person(1), person(0)])
    with pytest.raises(CaseExistsError, match="'p2'"):
        store.add_many([person(2), person(2)])
    with pytest.raises(ValueError, match="without a subject"):
        store.add(person(3).relabel(subject=None))
    other = dataclasses.replace(SIG, n_layers=5)
    with pytest.raises(ModelMismatchError, match="layers: vector 5 vs model 4|layers"):
        store.add(person(3, sig=other))
    with pytest.raises(ModelMismatchError, match="other weights"):
        store.add(person(3, sig=dataclasses.replace(SIG, weights_sample=(9.0, 9.0))))
    nan = person(3)
    nan.gates.weights[-1, 0, 0] = float("nan")  # tensors are mutable after the checks at construction
    with pytest.raises(ValueError, match="'p3': gate_weights contains NaN"):
        store.add_many([person(4), nan])
    with pytest.raises(ValueError, match="does not convert exactly to float32"):
        store.add(SteeringVector(torch.full(SIG.shape, 0.1, dtype=torch.float64), SIG,
                                 provenance=Provenance(subject="f64")))
    store.add(SteeringVector(torch.full(SIG.shape, 0.5, dtype=torch.float64), SIG, provenance=Provenance(subject="ok")))
    assert store.cases() == ["p0", "ok"]
    store.close()


def test_unknown_case_names_it_and_the_count(tmp_path):
    make(tmp_path / "s", [person(i) for i in range(3)])
    store = PopulationStore(tmp_path / "s")
    with pytest.raises(KeyError, match=r"'nobody' is not in the population store .* \(3 people\)"):
        store["nobody"]
    with pytest.raises(KeyError, match="1 cases are not in"):
        store.get_many(["p0", "nobody"])


def test_provenance_of_the_store(tmp_path):
    make(tmp_path / "s", [person(0)])
    prov = PopulationStore(tmp_path / "s").provenance
    assert (prov.data, prov.synthetic, prov.model, prov.pas_version) == ("people.parquet", True, "toy", __version__)
    assert prov.config == {"kind": "gated", "gain": [1.0, 2.0]}
    assert datetime.fromisoformat(prov.created).tzinfo is not None
    assert PopulationStore(tmp_path / "s").signature == SIG
    with pytest.raises(ValueError, match="synthetic must be True or False"):
        StoreProvenance(data="x", synthetic="yes")  # type: ignore[arg-type]


def test_create_refuses_an_existing_store_unless_overwrite(tmp_path):
    make(tmp_path / "s", [person(0)])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        PopulationStore.create(tmp_path / "s", SIG, PROV)
    with PopulationStore.create(tmp_path / "s", SIG, PROV, overwrite=True) as fresh:
        assert len(fresh) == 0
    assert len(PopulationStore(tmp_path / "s")) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="holds other files"):
        PopulationStore.create(tmp_path / "other", SIG, PROV, overwrite=True)
    with pytest.raises(StoreError, match="not a population store"):
        PopulationStore(tmp_path / "other")


def test_one_writer_at_a_time(tmp_path):
    first = PopulationStore.create(tmp_path / "s", SIG, PROV)
    first.add(person(0))
    second = PopulationStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match="another process is adding"):
        second.add(person(1))
    first.close()
    second.add(person(1))
    second.close()
    assert PopulationStore(tmp_path / "s").cases() == ["p0", "p1"]


def test_corrupt_files_give_clear_errors_and_the_index_rebuilds(tmp_path):
    root = tmp_path / "s"
    make(root, [person(i) for i in range(10)])
    shard = root / "shards" / "shard-000001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-8])  # truncated
    with pytest.raises(StoreError, match="shard-000001.safetensors: .*truncated or changed.*rebuild_index"):
        PopulationStore(root)
    n = int.from_bytes(data[:8], "little")
    end = 8 + n + json.loads(data[8 : 8 + n])["data"]["data_offsets"][1]  # the last person's last float
    shard.write_bytes(data[: end - 2] + bytes(b ^ 0x55 for b in data[end - 2 : end]) + data[end:])  # flipped bits
    store = PopulationStore(root)
    assert_same(store["p0"], person(0))
    with pytest.raises(StoreError, match="shard-000001.safetensors: the floats of case 'p7' fail their checksum"):
        store["p7"]
    shard.write_bytes(data)
    index = root / "index.safetensors"
    index.write_bytes(index.read_bytes()[:100])
    with pytest.raises(StoreError, match="index.safetensors: corrupt or truncated index .*rebuild_index"):
        PopulationStore(root)
    rebuilt = PopulationStore.rebuild_index(root)
    rebuilt.close()
    assert PopulationStore(root).cases() == [f"p{i}" for i in range(10)]
    shard.unlink()
    with pytest.raises(StoreError, match="shard-000001.safetensors: shard file is missing"):
        PopulationStore(root)
    header = json.loads((root / "store.json").read_text())
    (root / "store.json").write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(StoreError, match="store format version 99"):
        PopulationStore(root)


def test_resume_after_a_simulated_kill(tmp_path):
    """The states a kill can leave: a shard committed but the index not rewritten, a half-written shard and
    index under temporary names. Reopened, nothing committed is lost, nothing is duplicated, adding goes on."""
    root = tmp_path / "s"
    make(root, [person(i) for i in range(8)])  # shards 0, 1
    old_index = (root / "index.safetensors").read_bytes()
    with PopulationStore.open(root) as store:
        store.add_many([person(i) for i in range(8, 12)])  # shard 2
    (root / "index.safetensors").write_bytes(old_index)  # killed before the index was rewritten
    partial = (root / "shards" / "shard-000002.safetensors").read_bytes()[:300]
    (root / "shards" / ".shard-000003.safetensors.tmp-4242").write_bytes(partial)  # killed mid-shard
    (root / ".index.safetensors.tmp-4242").write_bytes(old_index[:50])  # killed mid-index
    reader = PopulationStore(root)
    assert reader.cases() == [f"p{i}" for i in range(12)]
    store = PopulationStore.open(root)
    todo = [person(i) for i in range(20) if f"p{i}" not in store]
    assert [v.subject for v in todo] == [f"p{i}" for i in range(12, 20)]
    store.add_many(todo)
    store.close()
    assert not list(root.rglob(".*.tmp-*"))
    final = PopulationStore(root)
    assert final.cases() == [f"p{i}" for i in range(20)]
    for i in range(20):
        assert_same(final[f"p{i}"], person(i))


def test_units_shared_by_a_killed_writer_are_kept(tmp_path, monkeypatch):
    """Killed after writing newly shared units but before the shard using them: a resumed writer uses those
    units and writes its own new ones beside them, never over them."""
    import pas.population.store as store_module

    root = tmp_path / "s"
    killed = PopulationStore.create(root, SIG, PROV)
    killed.add_many([person(0), person(1)])

    def die(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(store_module, "write_shard", die)
    with pytest.raises(OSError, match="killed"):
        killed.flush()
    monkeypatch.undo()
    assert list((root / "shared").glob("shared-*")) and not list((root / "shards").glob("shard-*"))
    os.close(killed._lock)  # the process is gone, and its lock with it
    killed._lock, killed._pending = None, []
    people = [person(i) for i in range(4)] + [person(i, common_seed=7) for i in range(4, 8)]
    with PopulationStore.open(root) as store:
        store.add_many(people)
    assert len(list((root / "shared").glob("shared-*"))) == 2
    reopened = PopulationStore(root)
    for v in people:
        assert_same(reopened[v.subject], v)


KILLED_WRITER = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from test_store import person
from pas.population.store import PopulationStore
store = PopulationStore.open({root!r})
for i in range(len(store), 100000):
    store.add(person(i))
"""


def test_resume_after_kill_9(tmp_path):
    """A writer killed with SIGKILL mid-run: the store opens, holds a prefix of the people exactly, and a
    resumed run adds the rest without duplicating anyone."""
    root = tmp_path / "s"
    PopulationStore.create(root, SIG, PROV, shard_size=5).close()
    code = KILLED_WRITER.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list((root / "shards").glob("shard-*"))) < 6:
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "the writer made no shards"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = PopulationStore.open(root)
    n = len(store)
    assert n >= 25 and n % 5 == 0
    assert store.cases() == [f"p{i}" for i in range(n)]
    for vectors in store.iter_batches(7):
        for v in vectors:
            assert_same(v, person(int(v.subject[1:])))
    store.add_many([person(i) for i in range(n, n + 12)])
    store.close()
    final = PopulationStore(root)
    assert final.cases() == [f"p{i}" for i in range(n + 12)]


def test_iter_batches_and_get_many(tmp_path):
    store = PopulationStore.create(tmp_path / "s", SIG, PROV, shard_size=4)
    people = [person(i, "constant" if i % 2 else "gated") for i in range(11)]
    store.add_many(people)  # shards of 4, 4 and 3 pending
    batches = list(store.iter_batches(3))
    assert [len(b) for b in batches] == [3, 3, 3, 2]
    for got, want in zip([v for b in batches for v in b], people, strict=True):
        assert_same(got, want)
    picked = store.get_many(["p9", "p0", "p5"])
    assert [v.subject for v in picked] == ["p9", "p0", "p5"]
    store.close()
    assert sum(len(b) for b in PopulationStore(tmp_path / "s").iter_batches(100)) == 11


def test_score_and_generate_many_straight_from_the_store(tmp_path, tiny_llama, tokenizer, papi):
    """Rows taken from the store score and generate exactly as the vectors that went in."""
    from pas.score.many import score_many
    from pas.score.scorer import ItemScorer
    from pas.steer.rows import generate_many

    sig = ModelSignature.of(tiny_llama)
    people = [person(i, "constant" if i % 3 == 0 else "gated", sig=sig) for i in range(6)]
    with PopulationStore.create(tmp_path / "s", sig, PROV, shard_size=4) as store:
        store.add_many(people)
    store = PopulationStore(tmp_path / "s")
    store.check_model(tiny_llama)
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank, batch_size=8)
    ids = papi.bank.test_ids[:5]
    cases = [v.subject for v in people]
    want = score_many(scorer, ids, people)
    got = score_many(scorer, ids, [v for batch in store.iter_batches(4) for v in batch])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.probs, b.probs)
    prompts = ["Do you like parties?"] * 3
    assert generate_many(tiny_llama, tokenizer, prompts, store.get_many(cases[:3]), max_new_tokens=4) == \
        generate_many(tiny_llama, tokenizer, prompts, people[:3], max_new_tokens=4)


def test_a_copied_store_reads_the_same(tmp_path):
    make(tmp_path / "s", [person(i) for i in range(6)])
    shutil.copytree(tmp_path / "s", tmp_path / "copy")
    assert_same(PopulationStore(tmp_path / "copy")["p5"], person(5))
