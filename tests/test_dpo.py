import pytest
import torch

from pas.eval.dpo import DPOSettings, load_adapter, preference_pairs, save_adapter, train_dpo
from pas.score.scorer import ItemScorer


def test_settings_validation():
    with pytest.raises(ValueError, match="positive"):
        DPOSettings(epochs=0)


def test_pairs_use_subjects_answer_and_models_top_mistake(tiny_llama, tokenizer, papi):
    s = papi.subjects[0]
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = papi.bank.train_ids[:6]
    pairs = preference_pairs(scorer, s, ids)
    probs = scorer.score(ids).probs
    letters = "ABCDE"
    for item, pair, p in zip(ids, pairs, probs, strict=True):
        assert pair["chosen"] == letters[5 - s.responses[item]] and pair["rejected"] != pair["chosen"]
        assert p[letters.index(pair["rejected"])] == max(p[k] for k in range(5) if letters[k] != pair["chosen"])
        assert pair["prompt"].endswith("(")


def test_train_changes_adapter_only_and_round_trips(tiny_llama, tokenizer, papi, tmp_path):
    import dataclasses

    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    s = papi.subjects[2]
    keep = set(papi.bank.train_ids[:25]) | set(papi.bank.test_ids)  # fewer known answers: a quicker test
    s = dataclasses.replace(s, responses={i: a for i, a in s.responses.items() if i in keep})
    res = train_dpo(tiny_llama, tokenizer, papi.bank, s, DPOSettings(epochs=2, lr=5e-2, batch_size=16))
    assert all(torch.equal(v, tiny_llama.state_dict()[k]) for k, v in before.items())  # base untouched
    assert res.train_loss is not None and torch.isfinite(torch.tensor(res.train_loss))
    assert [e for e, *_ in res.val_trace] == [0, 1, 2] and res.best_epoch in (0, 1, 2)
    lora = {k: v for k, v in res.model.named_parameters() if "lora_B" in k}
    assert lora  # a LoRA adapter was trained
    if res.best_epoch > 0:
        assert any(v.abs().sum() > 0 for v in lora.values())  # lora_B starts at zero
    path = save_adapter(res, tmp_path / "adapter")
    again = load_adapter(tiny_llama, path)
    ids = papi.bank.test_ids[:5]
    a = ItemScorer(res.model, tokenizer, papi.bank).score(ids).probs
    b = ItemScorer(again, tokenizer, papi.bank).score(ids).probs
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=1e-5)
    with pytest.raises(FileExistsError):
        save_adapter(res, path)
