import numpy as np
import torch

from pas.core.arch import layout
from pas.score.many import offset_logits_many, score_many
from pas.score.scorer import ItemScorer, final_logits
from pas.steer.hooks import add_offsets, add_row_biases
from pas.steer.rows import bias_table, generate_many
from pas.steer.vector import Provenance, SteeringVector


def _vec(model, seed, scale=2.0, positions="last"):
    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    off = torch.zeros(lay.n_layers, lay.n_heads, lay.head_dim)
    off[seed % lay.n_layers, seed % lay.n_heads] = torch.randn(lay.head_dim, generator=g) * scale
    off[(seed + 1) % lay.n_layers] = torch.randn(lay.n_heads, lay.head_dim, generator=g) * scale
    return SteeringVector.for_model(model, off, positions=positions, provenance=Provenance(subject=f"s{seed}"))


def test_score_many_equals_one_by_one(tiny, tokenizer, papi):
    scorer = ItemScorer(tiny, tokenizer, papi.bank, batch_size=4)
    ids = papi.bank.test_ids[:7]
    vectors = [_vec(tiny, 1), None, _vec(tiny, 2), _vec(tiny, 3)]
    many = score_many(scorer, ids, vectors, max_rows=8)  # several passes per batch
    for v, got in zip(vectors, many, strict=True):
        alone = scorer.score(ids, steering=v)
        np.testing.assert_allclose(got.probs, alone.probs, atol=1e-5)


def test_score_many_from_a_kept_trunk(tiny, tokenizer, papi):
    """Vectors that all start at layer 1 or above: only those layers run per vector, and the scores still equal
    each vector alone (constant and gated mixed, an unsteered row among them)."""
    scorer = ItemScorer(tiny, tokenizer, papi.bank, batch_size=4)
    ids = papi.bank.test_ids[:7]
    lay = layout(tiny)
    g = torch.Generator().manual_seed(5)
    top = torch.zeros(lay.n_layers, lay.n_heads, lay.head_dim)
    top[-1] = torch.randn(lay.n_heads, lay.head_dim, generator=g)
    gated = SteeringVector.for_model(tiny, top, gate_weights=torch.randn(top.shape, generator=g),
                                     gate_bias=torch.ones(lay.n_layers, lay.n_heads))
    vectors = [_vec(tiny, 1), None, _vec(tiny, 4, scale=3.0), gated]
    assert min(v.first_layer for v in vectors if v is not None) == 1
    many = score_many(scorer, ids, vectors, max_rows=8)
    assert all(1 in b.trunk for b in scorer.encode(ids).batches)
    fresh = ItemScorer(tiny, tokenizer, papi.bank, batch_size=4)  # no trunk kept: whole passes
    for v, got in zip(vectors, many, strict=True):
        np.testing.assert_allclose(got.probs, fresh.score(ids, steering=v).probs, atol=1e-5)


def test_offset_table_equals_each_offset_alone(tiny, tokenizer, papi):
    """Offsets riding as answer positions that share each prompt's cache: each offset's logits equal it alone
    (whole passes, and from a kept trunk with layer 0 untouched), several passes per batch."""
    scorer = ItemScorer(tiny, tokenizer, papi.bank, batch_size=4)
    ids = papi.bank.test_ids[:7]
    lay = layout(tiny)
    table = torch.stack([_vec(tiny, s).flat_offsets() for s in (1, 2, 3)] + [torch.zeros(lay.n_layers, lay.attn_width)])
    enc = scorer.encode(ids)
    for first in (0, 1):
        if first:
            table[:, :first] = 0
        got = offset_logits_many(tiny, enc, scorer.letter_ids, table, from_layer=first, max_rows=8)
        for offsets, mine in zip(table, got, strict=True):
            with torch.no_grad(), add_offsets(tiny, offsets):
                alone = final_logits(tiny, enc, scorer.letter_ids)
            torch.testing.assert_close(mine, alone, atol=1e-5, rtol=1e-5)


def test_per_row_hooks_equal_rows_alone(tiny, tokenizer):
    texts = ["Tell me about your weekend plans.", "Hi!", "What do you think of crowds?"]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    vectors = [_vec(tiny, 4, positions="all"), None, _vec(tiny, 5, positions="all")]
    table = torch.stack([v.flat_offsets() for v in vectors if v is not None])
    rows = torch.tensor([0, -1, 1])
    with add_offsets(tiny, table, rows=rows):
        batched = tiny(**enc).logits
    folded_table = bias_table(tiny, [v for v in vectors if v is not None])
    with add_row_biases(tiny, folded_table, rows):
        folded = tiny(**enc).logits
    for r, v in enumerate(vectors):
        row = {k: t[r : r + 1] for k, t in enc.items()}
        with v.apply(tiny) if v is not None else torch.no_grad():
            alone = tiny(**row).logits
        keep = row["attention_mask"][0].bool()
        torch.testing.assert_close(batched[r, keep], alone[0, keep], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(folded[r, keep], alone[0, keep], atol=1e-4, rtol=1e-4)


def test_generate_many_equals_alone(tiny_llama, tokenizer):
    from pas.steer.chat import generate

    prompts = ["Describe a perfect day.", "Do you like parties?"]
    vectors = [_vec(tiny_llama, 6), None]
    together = generate_many(tiny_llama, tokenizer, prompts, vectors, max_new_tokens=6)
    alone = [generate(tiny_llama, tokenizer, p, v, max_new_tokens=6) for p, v in zip(prompts, vectors, strict=True)]
    assert together == alone
