"""The gated kind: hook arithmetic worked out by hand, invariances, per-row, files, fold, fitting."""

import dataclasses

import pytest
import torch

from pas.core.arch import layout, o_proj_modules
from pas.fit.align import fit_subject
from pas.fit.config import GatedConfig
from pas.steer.gates import Gates
from pas.steer.vector import SteeringVector


def random_gated(model, seed: int = 0, layers=(1,), scale: float = 0.5) -> SteeringVector:
    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    shape = (lay.n_layers, lay.n_heads, lay.head_dim)
    w, b, v = torch.zeros(shape), torch.zeros(shape[:2]), torch.zeros(shape)
    for layer in layers:
        w[layer] = torch.randn(shape[1:], generator=g) * scale
        b[layer] = torch.randn(shape[1], generator=g) * scale
        v[layer] = torch.randn(shape[1:], generator=g) * scale
    return SteeringVector.for_model(model, v, gate_weights=w, gate_bias=b, positions="all")


def _ids(tokenizer, n=2, t=7):
    ids = tokenizer.encode("Tell me about yourself and your friends today", add_special_tokens=False)[:t]
    return torch.tensor([ids] * n)


def test_gated_hook_adds_what_the_formula_says(tiny, tokenizer):
    vec = random_gated(tiny, layers=(1,))
    lay = layout(tiny)
    proj = o_proj_modules(tiny)[1]
    seen = {}
    h = proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone()))
    with torch.no_grad():
        tiny(_ids(tokenizer))
    h.remove()
    x = seen["x"]  # unsteered input of layer 1's projection (steering at layer 1 does not change it)
    xs = x.reshape(*x.shape[:-1], lay.n_heads, lay.head_dim)
    gate = (xs * vec.gates.weights[1]).sum(-1) + vec.gates.bias[1]
    want = (xs + gate[..., None] * vec.offsets[1]).reshape(x.shape)
    got = {}
    with vec.apply(tiny), torch.no_grad():  # a capture hook registered after ours sees the steered input
        h = proj.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach().clone()))
        tiny(_ids(tokenizer))
        h.remove()
    torch.testing.assert_close(got["x"], want, rtol=1e-5, atol=1e-6)


def test_gated_invariances(tiny, tokenizer):
    ids = _ids(tokenizer)
    with torch.no_grad():
        base = tiny(ids).logits
        vec = random_gated(tiny)
        with (vec * 0.0).apply(tiny):
            torch.testing.assert_close(tiny(ids).logits, base)  # strength 0 = base logits
        with vec.apply(tiny):
            steered = tiny(ids).logits
        assert not torch.allclose(steered, base)
        assert torch.equal(tiny(ids).logits, base)  # hook removed: bit-identical
        with vec.apply(tiny):  # batched = unbatched
            torch.testing.assert_close(tiny(ids[:1]).logits, steered[:1], rtol=1e-5, atol=1e-5)


def test_constant_as_gated_is_the_same_steering(tiny, tokenizer):
    lay = layout(tiny)
    off = torch.randn(lay.n_layers, lay.n_heads, lay.head_dim)
    off[0] = 0
    const = SteeringVector.for_model(tiny, off, positions="all")
    ids = _ids(tokenizer)
    with torch.no_grad():
        with const.apply(tiny):
            a = tiny(ids).logits
        with const.as_gated().apply(tiny):
            b = tiny(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gated_per_row_equals_each_row_alone(tiny_llama, tokenizer):
    from pas.steer.rows import generate_many

    vecs = [random_gated(tiny_llama, seed=s) for s in range(3)]
    vecs = [dataclasses.replace(v, positions="last") for v in vecs]
    prompts = ["Hello there", "What is a cat?", "Tell me a joke"]
    together = generate_many(tiny_llama, tokenizer, prompts, [vecs[0], None, vecs[2]], max_new_tokens=5)
    alone = [generate_many(tiny_llama, tokenizer, [p], [v], max_new_tokens=5)[0]
             for p, v in zip(prompts, [vecs[0], None, vecs[2]], strict=True)]
    assert together == alone


def test_gated_score_many_equals_one_by_one(tiny_llama, tokenizer, papi):
    import numpy as np

    from pas.score.many import score_many
    from pas.score.scorer import ItemScorer

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = papi.bank.test_ids[:6]
    vecs = [dataclasses.replace(random_gated(tiny_llama, seed=s), positions="last") for s in range(2)]
    vecs[1] = dataclasses.replace(vecs[1], gates=dataclasses.replace(vecs[1].gates, limit=torch.full(
        vecs[1].gates.bias.shape, 0.1)))  # clamped gates
    mixed = [vecs[0], None, vecs[1]]
    many = score_many(scorer, ids, mixed)
    for got, v in zip(many, mixed, strict=True):
        one = scorer.score(ids, steering=v)
        np.testing.assert_allclose(got.probs, one.probs, rtol=1e-4, atol=1e-6)


def test_gated_save_load_and_fold_refuses(tiny, tmp_path):
    vec = random_gated(tiny)
    path = vec.save(tmp_path / "g.safetensors")
    back = SteeringVector.load(path)
    assert back.kind == "gated" and back.gates.limit is None
    assert torch.equal(back.offsets, vec.offsets)
    assert torch.equal(back.gates.weights, vec.gates.weights) and torch.equal(back.gates.bias, vec.gates.bias)
    limit = torch.full(vec.gates.bias.shape, float("inf"))
    limit[1] = 0.25
    limited = dataclasses.replace(vec, gates=Gates(vec.gates.weights, vec.gates.bias, limit))
    back = SteeringVector.load(limited.save(tmp_path / "limited.safetensors"))
    assert torch.equal(back.gates.limit, limit)  # inf survives the file
    assert torch.equal((limited * -2.0).gates.limit, limit * 2.0)
    with pytest.raises(ValueError, match="gate_limit must be >= 0"):
        Gates(vec.gates.weights, vec.gates.bias, -limit)
    with pytest.raises(ValueError, match="gate_limit only with them"):
        SteeringVector.for_model(tiny, vec.offsets, gate_limit=limit)
    with pytest.raises(ValueError, match="cannot be folded"):
        vec.fold(tiny)
    with pytest.raises(ValueError, match="needs gate_weights and gate_bias"):
        SteeringVector.for_model(tiny, vec.offsets, gate_bias=vec.gates.bias)
    with pytest.raises(ValueError, match="gate_bias have shape"):
        Gates(vec.gates.weights, vec.gates.bias[:, :1])


def test_version_1_file_still_loads_with_identical_logits(tiny, tokenizer, tmp_path):
    """A file written by the previous format (version 1, no kind) loads as a constant vector."""
    import json

    from safetensors.torch import save_file

    lay = layout(tiny)
    off = torch.randn(lay.n_layers, lay.n_heads, lay.head_dim)
    vec = SteeringVector.for_model(tiny, off, positions="all")
    meta = {**dataclasses.asdict(vec.signature), "positions": "all", "format_version": 1}
    path = tmp_path / "v1.safetensors"
    save_file({"offsets": off}, path, metadata={"pas": json.dumps(meta)})
    old = SteeringVector.load(path)
    assert old.kind == "constant"
    ids = _ids(tokenizer)
    with torch.no_grad():
        with vec.apply(tiny):
            a = tiny(ids).logits
        with old.apply(tiny):
            b = tiny(ids).logits
    assert torch.equal(a, b)


def test_gated_arithmetic(tiny):
    a = random_gated(tiny, seed=1, layers=(1,))
    b = random_gated(tiny, seed=2, layers=(2,))
    half = a * 0.5  # gates scale, pushes stay: the same output as halving the pushes
    assert torch.equal(half.offsets, a.offsets) and torch.equal(half.gates.weights, a.gates.weights * 0.5)
    s = a + b  # different heads: defined
    assert s.kind == "gated" and torch.equal(s.gates.weights[2], b.gates.weights[2])
    with pytest.raises(ValueError, match="same heads"):
        a + random_gated(tiny, seed=3, layers=(1,))  # same heads, pushes not parallel


def test_gated_sum_with_parallel_pushes_adds_their_changes(tiny):
    """Two gated vectors pushing the same heads alike add: the sum's change to a head output is the sum of
    their changes; scaling a gated vector (gates) equals scaling its pushes."""
    from pas_kernels import add_gated_offsets_reference as gated_add

    a = random_gated(tiny, seed=1, layers=(1,))
    b = dataclasses.replace(random_gated(tiny, seed=4, layers=(1,)), offsets=a.offsets * -2.0)  # parallel pushes
    lay = layout(tiny)
    x = torch.randn(2, 5, lay.n_heads * lay.head_dim, generator=torch.Generator().manual_seed(0))

    def change(vec):
        w, bias, v, lim = vec.gated_tables()
        return gated_add(x, w[1], bias[1], v[1], torch.tensor(0), lim[1]) - x

    torch.testing.assert_close(change(a + 0.5 * b), change(a) + change(0.5 * b), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(change(a * 0.5), change(dataclasses.replace(a, offsets=a.offsets * 0.5)))
    torch.testing.assert_close(change(-a), -change(a))


def test_fit_gated_tiny_uses_known_items_only(tiny_llama, tokenizer, papi, tmp_path, monkeypatch):
    monkeypatch.setenv("PAS_CACHE", str(tmp_path))
    s = papi.subjects[3]
    config = GatedConfig()
    v1, report = fit_subject(tiny_llama, s, config, tokenizer=tokenizer, bank=papi.bank, progress=False)
    assert v1.kind == "gated" and report.gated.layer == 2 and v1.provenance.method == "pas-gated"
    scrambled = dataclasses.replace(s, responses={i: (1 if i in papi.bank.test_ids else a)
                                                  for i, a in s.responses.items()})
    v2, _ = fit_subject(tiny_llama, scrambled, config, tokenizer=tokenizer, bank=papi.bank, progress=False)
    assert torch.equal(v1.offsets, v2.offsets)
    assert torch.equal(v1.gates.weights, v2.gates.weights) and torch.equal(v1.gates.bias, v2.gates.bias)
    with pytest.raises(TypeError, match="positions"):  # fitted at the answer position: no other can be asked for
        GatedConfig(positions="all")


def test_gated_kernel_matches_reference():
    from pas_kernels import add_gated_offsets

    torch.manual_seed(0)
    for rows in (False, True):
        x = torch.randn(3, 6, 4 * 8)
        shape = (3, 1, 32) if rows else (32,)
        w, v = torch.randn(shape), torch.randn(shape)
        b = torch.randn((3, 1, 4) if rows else (4,))
        lim = torch.rand(b.shape) * 2
        lim[..., 0] = float("inf")  # head 0 unlimited
        for first in (0, 2, 5):
            ref = add_gated_offsets.reference(x, w, b, v, torch.tensor(first), lim)
            torch.testing.assert_close(add_gated_offsets(x, w, b, v, torch.tensor(first), lim), ref, rtol=1e-5,
                                       atol=1e-5)
            torch.testing.assert_close(ref[:, :first], x[:, :first])
        # the gate is clamped to [-lim, lim]: recover it from the change along each head's push
        change = (ref - x).unflatten(-1, (4, 8))[:, first:]
        push = v.unflatten(-1, (4, 8))
        gate = (change * push).sum(-1) / (push * push).sum(-1)
        gate_free = (x.unflatten(-1, (4, 8))[:, first:] * w.unflatten(-1, (4, 8))).sum(-1) + b
        torch.testing.assert_close(gate, torch.maximum(torch.minimum(gate_free, lim), -lim), rtol=1e-4, atol=1e-4)
