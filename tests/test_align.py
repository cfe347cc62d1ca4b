import pytest
import torch

from pas.align import PASConfig, align_to_subject
from pas.steering import SteeringVector


def test_config_validation():
    with pytest.raises(ValueError, match="k must be"):
        PASConfig(k=0)
    with pytest.raises(ValueError, match="val_fraction"):
        PASConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match="learned offsets need positions='last'"):
        PASConfig(positions="all")
    PASConfig(positions="all", learn=False)


@pytest.fixture(scope="module")
def fast_config():
    return PASConfig(k=4, alpha_grid=(0.0, 2.0, 8.0), refine_steps=2, steps=4, eval_every=2, patience=2)


def test_align_tiny_is_deterministic_and_test_items_unused(tiny_llama, tokenizer, papi, fast_config, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("PAS_CACHE", str(tmp_path))
    s = papi.subjects[3]
    v1 = align_to_subject(tiny_llama, s, fast_config, tokenizer=tokenizer, bank=papi.bank)
    v2 = align_to_subject(tiny_llama, s, fast_config, tokenizer=tokenizer, bank=papi.bank)
    assert torch.equal(v1.offsets, v2.offsets) and v1.alpha == v2.alpha
    assert isinstance(v1, SteeringVector) and len(v1.heads) == 4 and v1.subject == s.case
    # changing the subject's *test* answers cannot change the vector
    import dataclasses

    scrambled = dataclasses.replace(s, answers={i: (1 if i in papi.bank.test_ids else a) for i, a in s.answers.items()})
    v3 = align_to_subject(tiny_llama, scrambled, fast_config, tokenizer=tokenizer, bank=papi.bank)
    assert torch.equal(v1.offsets, v3.offsets)
    nonzero = {(l, h) for l in range(3) for h in range(4) if v1.offsets[l, h].any()}
    assert nonzero <= set(v1.heads)


def test_align_searched_only(tiny_llama, tokenizer, papi, fast_config):
    import dataclasses

    v = align_to_subject(tiny_llama, papi.subjects[0], dataclasses.replace(fast_config, learn=False),
                         tokenizer=tokenizer, bank=papi.bank)
    assert v.extra["learn"] == {} and v.alpha in (float(a) for a in v.extra["alpha_trace"])
