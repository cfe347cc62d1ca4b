import numpy as np
import torch

from pas.score.prompts import PromptTemplate
from pas.score.scorer import ItemScorer, score_texts


def _texts(tokenizer, papi, n=9, system=None):
    return PromptTemplate().render_items(tokenizer, papi.bank, papi.bank.test_ids[:n], system)


def test_batched_equals_unbatched(tiny, tokenizer, papi):
    texts = _texts(tokenizer, papi, system="You are calm.")
    fast = score_texts(tiny, tokenizer, texts, batch_size=4)
    slow = score_texts(tiny, tokenizer, texts, batch_size=1, prefix_cache=False)
    np.testing.assert_allclose(fast.probs, slow.probs, atol=1e-5)
    np.testing.assert_allclose(fast.letter_mass, slow.letter_mass, rtol=1e-4)


def test_matches_plain_forward(tiny, tokenizer, papi):
    texts = _texts(tokenizer, papi, n=3)
    scores = score_texts(tiny, tokenizer, texts)
    from pas.score.prompts import letter_token_ids

    ids = letter_token_ids(tokenizer)
    for n, t in enumerate(texts):
        enc = tokenizer(t, return_tensors="pt", add_special_tokens=False)
        logits = tiny(**enc).logits[0, -1]
        np.testing.assert_allclose(scores.probs[n], torch.softmax(logits[ids].double(), -1).numpy(), atol=1e-5)


def test_probabilities_and_answers(tiny_llama, tokenizer, papi):
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    s = scorer.score(papi.bank.test_ids[:12])
    np.testing.assert_allclose(s.probs.sum(1), 1, atol=1e-9)
    assert set(s.answers) <= {1, 2, 3, 4, 5}
    assert np.all((s.letter_mass > 0) & (s.letter_mass <= 1))
    again = scorer.score(papi.bank.test_ids[:12])  # from the memoised encoding
    np.testing.assert_array_equal(s.probs, again.probs)


def _vector_from(model, layer, seed=1):
    from pas.core.arch import layout
    from pas.steer.vector import SteeringVector

    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(lay.n_layers, lay.n_heads, lay.head_dim)
    offsets[layer:] = torch.randn(lay.n_layers - layer, lay.n_heads, lay.head_dim, generator=g)
    return SteeringVector.for_model(model, offsets)


def test_from_layer_equals_full_pass(tiny, tokenizer, papi):
    """Steering from layer k: the kept input of layer k + layers k.. only == the whole model, bit for bit."""
    from pas.score.scorer import final_logits
    from pas.steer.position import steer

    scorer = ItemScorer(tiny, tokenizer, papi.bank, batch_size=4)
    ids = papi.bank.test_ids[:9]
    enc = scorer.encode(ids)
    for layer in (1, 2):
        vector = _vector_from(tiny, layer)
        assert vector.first_layer == layer
        with torch.no_grad(), steer(tiny, vector, "answer"):
            full = final_logits(tiny, enc, scorer.letter_ids)
            first = final_logits(tiny, enc, scorer.letter_ids, layer)  # keeps the trunk
            assert all(layer in b.trunk for b in enc.batches)
            again = final_logits(tiny, enc, scorer.letter_ids, layer)  # runs layers k.. only
        torch.testing.assert_close(first, full, rtol=0, atol=0)
        torch.testing.assert_close(again, full, rtol=0, atol=1e-6)
        assert not torch.equal(again, final_logits(tiny, enc, scorer.letter_ids))  # the vector does act
    from pas.core.arch import decoder_layers

    assert not any(type(m).__name__ == "_PassThrough" for m in decoder_layers(tiny))  # layers put back


def test_trunk_is_not_used_when_a_layer_below_is_steered(tiny_llama, tokenizer, papi):
    """scorer.score takes the vector's own first layer: a vector reaching below a kept trunk still acts there."""
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank, batch_size=4)
    ids = papi.bank.test_ids[:6]
    high, low = _vector_from(tiny_llama, 2), _vector_from(tiny_llama, 0, seed=2)
    scorer.score(ids, steering=high)  # keeps layer 2's input
    plain = ItemScorer(tiny_llama, tokenizer, papi.bank, batch_size=4)
    np.testing.assert_allclose(scorer.score(ids, steering=low).probs, plain.score(ids, steering=low).probs, atol=1e-6)
    np.testing.assert_allclose(scorer.score(ids, steering=high).probs, plain.score(ids, steering=high).probs,
                               atol=1e-6)


def test_select_equals_encoding_the_subset(tiny, tokenizer, papi):
    from pas.score.scorer import final_logits, keep_trunk

    scorer = ItemScorer(tiny, tokenizer, papi.bank, batch_size=4)
    ids = papi.bank.test_ids[:10]
    enc = keep_trunk(tiny, scorer.encode(ids), scorer.letter_ids, 1)
    pick = [7, 2, 9, 0]
    part = enc.select(pick)
    direct = ItemScorer(tiny, tokenizer, papi.bank).encode([ids[p] for p in pick])
    torch.testing.assert_close(final_logits(tiny, part, scorer.letter_ids, 1),
                               final_logits(tiny, direct, scorer.letter_ids), rtol=0, atol=1e-5)
    import pytest

    with pytest.raises(ValueError, match="distinct"):
        enc.select([1, 1])


def test_prompted_answers_are_remembered(tiny_llama, tokenizer, papi):
    """A prompted model's answers are computed once per (items, prompt) and shared (the persona constructions
    and the description methods ask for the same ones); unprompted or steered scoring is not remembered."""
    from pas.score.scorer import ItemScorer

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = papi.bank.train_ids[:6]
    first = scorer.score(ids, "You are calm.")
    assert scorer.score(ids, "You are calm.") is first
    assert scorer.score(ids, "You are tense.") is not first
    assert scorer.score(ids[:3], "You are calm.") is not first
    assert scorer.score(ids) is not scorer.score(ids)
