import torch

from pas.core.arch import o_proj_modules
from pas.fit.activations import collect_head_outputs, head_activations


def test_matches_nnsight_reading(tiny_llama, tokenizer):
    """Our pre-hook reading of head outputs equals nnsight's view of the output projection's input."""
    from nnsight import NNsight

    texts = ["Hello there, friend.", "Hi"]
    ours = collect_head_outputs(tiny_llama, tokenizer, texts)
    traced = NNsight(tiny_llama)
    for n, text in enumerate(texts):
        ids = tokenizer([text], return_tensors="pt", add_special_tokens=False)["input_ids"]
        with traced.trace(ids):
            x = traced.model.layers[2].self_attn.o_proj.input.save()
        torch.testing.assert_close(ours[n, 2].reshape(-1), x[0, -1], atol=1e-5, rtol=1e-5)


def test_head_split_and_cache(tiny, tokenizer, papi, tmp_path, monkeypatch):
    monkeypatch.setenv("PAS_CACHE", str(tmp_path))
    ids = papi.bank.train_ids[:5]
    acts = head_activations(tiny, tokenizer, papi.bank, ids)
    assert acts.acts.shape == (5, 2, 3, 4, 8)
    assert not torch.equal(acts.acts[:, 0], acts.acts[:, 1])  # the A and E prompts differ
    files = list((tmp_path / "activations").glob("*.safetensors"))
    assert len(files) == 1
    again = head_activations(tiny, tokenizer, papi.bank, ids)
    assert torch.equal(again.acts, acts.acts)
    files[0].write_bytes(b"")  # refresh=True recomputes (and rewrites) instead of reading the cache
    assert torch.equal(head_activations(tiny, tokenizer, papi.bank, ids, refresh=True).acts, acts.acts)
    assert files[0].stat().st_size > 0
    # the cached tensor is what a fresh computation gives for one prompt
    grabbed = {}
    proj = o_proj_modules(tiny)[1]
    h = proj.register_forward_pre_hook(lambda m, a: grabbed.setdefault("x", a[0][0, -1].clone()))
    from pas.fit.activations import contrastive_texts
    from pas.score.prompts import PromptTemplate

    text = contrastive_texts(tokenizer, papi.bank, ids[:1], PromptTemplate())[1]
    tiny(**tokenizer(text, return_tensors="pt", add_special_tokens=False))
    h.remove()
    torch.testing.assert_close(acts.acts[0, 1, 1].reshape(-1), grabbed["x"], atol=1e-5, rtol=1e-5)
