import pytest
import torch

from pas.fit.align import FitReport, PASConfig, align_to_subject, fit_subject
from pas.steer.vector import SteeringVector


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
    v1, r1 = fit_subject(tiny_llama, s, fast_config, tokenizer=tokenizer, bank=papi.bank)
    v2, r2 = fit_subject(tiny_llama, s, fast_config, tokenizer=tokenizer, bank=papi.bank)
    assert torch.equal(v1.offsets, v2.offsets) and r1.alpha == r2.alpha
    assert isinstance(v1, SteeringVector) and len(r1.heads) == 4 and v1.subject == s.case
    assert v1.provenance.method == "pas-learned" and len(r1.probe_accuracies) == len(r1.sigmas) == 4
    # changing the subject's *test* answers cannot change the vector
    import dataclasses

    scrambled = dataclasses.replace(s, responses={i: (1 if i in papi.bank.test_ids else a)
                                                  for i, a in s.responses.items()})
    v3 = align_to_subject(tiny_llama, scrambled, fast_config, tokenizer=tokenizer, bank=papi.bank)
    assert torch.equal(v1.offsets, v3.offsets)
    nonzero = {(layer, h) for layer in range(3) for h in range(4) if v1.offsets[layer, h].any()}
    assert nonzero <= set(r1.heads) and set(v1.heads) == nonzero


def test_align_searched_only(tiny_llama, tokenizer, papi, fast_config):
    import dataclasses

    v, report = fit_subject(tiny_llama, papi.subjects[0], dataclasses.replace(fast_config, learn=False),
                            tokenizer=tokenizer, bank=papi.bank)
    assert isinstance(report, FitReport) and report.best_step is None and report.learn_trace == []
    assert report.alpha in report.alpha_trace and v.provenance.method == "pas"
    assert report.fit_items + report.val_items == len(papi.subjects[0].known()) and report.fit_seconds > 0


def test_align_uses_the_subjects_own_bank(tiny_llama, tokenizer, papi, fast_config, monkeypatch):
    """No bank argument and no default data dir: the subject carries the bank it was loaded with."""
    monkeypatch.delenv("PAPI_DATA_DIR", raising=False)
    monkeypatch.chdir("/")
    v = align_to_subject(tiny_llama, papi.subjects[0], fast_config, tokenizer=tokenizer)
    assert v.subject == papi.subjects[0].case


def test_contrast_labels_follow_responses(tiny_llama, tokenizer, papi, fast_config):
    """The label of a reverse-keyed item comes from the response, not the stored keyed score."""
    from pas.fit.activations import head_activations
    from pas.fit.directions import contrast_set

    s = papi.subjects[0]
    bank = papi.bank
    rev = [i for i in bank.train_ids if bank.by_id[i].keyed == "-" and s.responses.get(i, 3) != 3]
    acts = head_activations(tiny_llama, tokenizer, bank, rev, use_cache=False)
    data = contrast_set(acts, s.responses_to(rev))
    for n, item in enumerate(rev):
        a_prompt_label = int(data.y[2 * n])
        assert a_prompt_label == int(s.responses[item] >= 4)


def test_progress_is_shown(tiny_llama, tokenizer, papi, fast_config, capsys):
    fit_subject(tiny_llama, papi.subjects[0], fast_config, tokenizer=tokenizer, bank=papi.bank, progress=True)
    err = capsys.readouterr().err
    assert "strength search" in err and "learning offsets" in err


def test_a_fit_that_adds_nothing_says_so():
    """#27: a vector whose steered answers to the known items are all "Neither" adds nothing over always-3."""
    report = FitReport("p", 0.0, {}, 80, 40, 0.0, 1.0, known_answers={1: 3, 2: 3})
    assert report.adds_nothing and report.summary()["adds_nothing"]
    assert not FitReport("p", 0.0, {}, 80, 40, 0.0, 1.0, known_answers={1: 3, 2: 4}).adds_nothing
    assert not FitReport("p", 0.0, {}, 80, 40, 0.0, 1.0).adds_nothing  # no answers recorded: nothing to say


def test_fit_reports_its_known_answers_and_stages_without_a_terminal(tiny_llama, tokenizer, papi, fast_config,
                                                                       capsys):
    """Without a terminal the bars do not show: one line per stage on stderr (#27); the report holds the steered
    model's answers to the known items."""
    s = papi.subjects[2]
    v, report = fit_subject(tiny_llama, s, fast_config, tokenizer=tokenizer, bank=papi.bank)
    err = capsys.readouterr().err
    assert f"pas: subject {s.case}: reading head activations" in err and "searching the strength" in err
    assert "learning offsets" in err
    assert sorted(report.known_answers) == sorted(s.responses_to(papi.bank.train_ids))
    assert set(report.known_answers.values()) <= {1, 2, 3, 4, 5}
    fit_subject(tiny_llama, s, fast_config, tokenizer=tokenizer, bank=papi.bank, progress=False)
    assert "pas: subject" not in capsys.readouterr().err
