import numpy as np
import torch

from pas.prompts import PromptTemplate
from pas.scoring import ItemScorer, score_texts


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
    from pas.prompts import letter_token_ids

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
