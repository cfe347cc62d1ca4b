"""align_population (pas-gated, exact): the same vectors as fit_subject person by person, resume from a store,
bad people skipped with their reasons, progress lines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pas.fit.activations import answer_states
from pas.fit.align import fit_subject
from pas.fit.config import GatedConfig
from pas.fit.gated import fit_head_readouts
from pas.population.fit import align_population
from pas.population.gated_many import GatedPlan, letter_head
from pas.population.store import PopulationStore, StoreProvenance
from pas.score.many import score_many
from pas.score.metric import UnscorableSubject
from pas.score.scorer import ItemScorer
from pas.steer.signature import ModelSignature

LAYER = 2  # the tiny models' last layer: the gated one


def planted(scorer, subject, seed: int, case: str):
    """``subject`` (their missing items kept) with short-form answers planted from the gated layer's head outputs,
    so that their readouts predict them and calibration picks a gain above 0 (real people on a random model
    get gain 0: nothing to read)."""
    heads = answer_states(scorer, scorer.bank.train_ids).heads[:, LAYER]
    u = torch.randn(heads.shape[1:], generator=torch.Generator().manual_seed(seed))
    z = (heads * u).sum(-1).mean(-1)
    y = torch.clamp(torch.round(3 + 1.5 * (z - z.mean()) / z.std()), 1, 5).int().tolist()
    answers = dict(zip(scorer.bank.train_ids, y, strict=True))
    responses = {i: answers.get(i, a) for i, a in subject.responses.items()}
    return dataclasses.replace(subject, case=case, responses=responses)


@pytest.fixture(scope="module")
def scorer(tiny_llama, tokenizer, papi):
    return ItemScorer(tiny_llama, tokenizer, papi.bank)


@pytest.fixture(scope="module")
def people(papi, scorer):
    """Six real people (one who skipped an item) and two planted ones (one with that person's missing item)."""
    train = papi.bank.train_ids
    missing = next(s for s in papi.subjects if len(s.responses_to(train)) < len(train))
    real = [*papi.subjects[:5], missing]
    return real + [planted(scorer, papi.subjects[5], 1, "planted-1"), planted(scorer, missing, 2, "planted-2")]


@pytest.fixture(scope="module")
def reference(tiny_llama, tokenizer, papi, people):
    """fit_subject person by person, on a scorer of its own (nothing shared with the population path)."""
    own = ItemScorer(tiny_llama, tokenizer, papi.bank)
    return {s.case: fit_subject(tiny_llama, s, GatedConfig(), scorer=own, progress=False) for s in people}


def assert_same_vector(got, want):
    torch.testing.assert_close(got.offsets, want.offsets, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.gates.weights, want.gates.weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.gates.bias, want.gates.bias, rtol=1e-5, atol=1e-6)
    assert got.positions == want.positions == "last" and got.signature == want.signature
    assert got.provenance == want.provenance


def assert_same_answers(scorer, got, want):
    """Steered answers on the 180 test items, every person, identical."""
    ids = scorer.bank.test_ids
    for a, b in zip(score_many(scorer, ids, got), score_many(scorer, ids, want), strict=True):
        np.testing.assert_array_equal(a.answers, b.answers)


@pytest.mark.parametrize("letters_only", [True, False])
def test_population_fit_equals_per_person_fit(scorer, people, reference, letters_only):
    report = align_population(scorer, people, chunk=3, progress=False, letters_only=letters_only)  # 3 chunks
    assert report.fitted == len(people) and not report.skipped and report.already_stored == 0
    assert set(report.vectors) == {s.case for s in people}
    for s in people:
        assert_same_vector(report.vectors[s.case], reference[s.case][0])
        facts = reference[s.case][1].gated
        assert report.choices[(facts.gain, facts.shift)] >= 1
    gains = {reference[s.case][1].gated.gain for s in people}
    assert gains - {0.0}, "the planted people should exercise the readouts (a gain above 0)"
    cases = [s.case for s in people]
    assert_same_answers(scorer, [report.vectors[c] for c in cases], [reference[c][0] for c in cases])
    assert report.mean_known_composite == pytest.approx(np.mean([reference[c][1].gated.readout_cv for c in cases]))


def test_readout_maps_are_fit_head_readouts(scorer, papi, people):
    """The batched ridge (linear maps of the answers) gives every head's readout per fold and on all items."""
    plan = GatedPlan(scorer, GatedConfig())
    states = answer_states(scorer, papi.bank.train_ids)
    for s in (people[0], people[5], people[7]):  # complete, one item missing, planted with one missing
        known = s.responses_to(papi.bank.train_ids)
        ids = tuple(sorted(known))
        y = np.array([known[i] for i in ids], dtype=np.float64)
        want = fit_head_readouts(states.rows(ids).heads[:, LAYER], y, papi.bank, s, ids)
        g = plan.group(ids)
        w, b = g.readouts(y[None])
        for k, part in enumerate(want.folds):
            np.testing.assert_array_equal(g.folds[k], part)
            torch.testing.assert_close(w[k, 0], want.fold_weights[k], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(b[k, 0], want.fold_intercepts[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w[-1, 0], want.weights, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b[-1, 0], want.intercepts, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g.out_of_fold @ y, want.cv_mean, rtol=1e-9, atol=1e-9)


def test_letter_head_narrows_and_restores(tiny_llama, tokenizer, scorer):
    ids = torch.tensor([tokenizer.encode("Which option fits you best? Answer:", add_special_tokens=False)])
    head = tiny_llama.get_output_embeddings()
    weight = head.weight
    with torch.no_grad():
        full = tiny_llama(ids).logits[0, -1]
        with letter_head(tiny_llama, scorer.letter_ids) as letters:
            narrow = tiny_llama(ids).logits[0, -1]
        after = tiny_llama(ids).logits[0, -1]
    assert letters == (0, 1, 2, 3, 4) and narrow.shape == (5,)
    torch.testing.assert_close(narrow, full[list(scorer.letter_ids)], rtol=1e-5, atol=1e-6)
    assert head.weight is weight and torch.equal(after, full)


def test_resume_skips_people_already_stored(tiny_llama, scorer, people, reference, tmp_path, data_dir):
    path = tmp_path / "store"
    prov = StoreProvenance(data=str(data_dir), synthetic=False, config=dataclasses.asdict(GatedConfig()))
    done = [people[1].case, people[6].case]
    with PopulationStore.create(path, ModelSignature.of(tiny_llama), prov) as store:
        store.add_many([reference[c][0] for c in done])
    store = PopulationStore.open(path)
    report = align_population(scorer, people, store=store, chunk=3, progress=False)
    store.close()
    assert report.already_stored == 2 and report.fitted == len(people) - 2 and not report.skipped
    assert not report.vectors  # they went to the store
    store = PopulationStore.open(path)
    assert sorted(store.cases()) == sorted(s.case for s in people)  # everyone once, nobody twice
    for s in people:
        assert_same_vector(store[s.case], reference[s.case][0])
    again = align_population(scorer, people, store=store, progress=False)  # nothing left to do
    store.close()
    assert again.fitted == 0 and again.already_stored == len(people) and len(PopulationStore.open(path)) == len(people)


def test_bad_people_are_skipped_with_their_reasons(tiny_llama, scorer, papi, people, reference):
    s0, train = papi.subjects[0], set(papi.bank.train_ids)
    few = dataclasses.replace(s0, case="few", responses={i: a for n, (i, a) in enumerate(s0.responses.items())
                                                         if i not in train or n % 20 == 0})
    no_o = dataclasses.replace(s0, case="no-openness",
                               responses={i: a for i, a in s0.responses.items() if papi.bank.by_id[i].domain != "O"})
    threes = dataclasses.replace(s0, case="all-threes", responses=dict.fromkeys(s0.responses, 3))
    own = ItemScorer(tiny_llama, scorer.tokenizer, papi.bank)
    with pytest.raises(ValueError, match="at least 10 known items, got 4") as few_error:
        fit_subject(tiny_llama, few, GatedConfig(), scorer=own, progress=False)
    with pytest.raises(UnscorableSubject) as no_o_error:
        fit_subject(tiny_llama, no_o, GatedConfig(), scorer=own, progress=False)
    threes_ref, threes_report = fit_subject(tiny_llama, threes, GatedConfig(), scorer=own, progress=False)
    assert threes_report.adds_nothing  # fit_subject fits an always-3 person (gain 0): so does the population
    batch = [few, people[0], no_o, people[6], threes, people[0]]
    report = align_population(scorer, batch, chunk=4, progress=False)
    reasons = {s.case: s.reason for s in report.skipped}
    assert reasons == {"few": str(few_error.value), "no-openness": str(no_o_error.value),
                       people[0].case: f"case {people[0].case!r} appears twice in the input; fitted once"}
    assert report.fitted == 3 and set(report.vectors) == {people[0].case, people[6].case, "all-threes"}
    assert_same_vector(report.vectors["all-threes"], threes_ref)
    assert_same_vector(report.vectors[people[6].case], reference[people[6].case][0])
    assert report.summary()["skipped"] == 3


def test_progress_lines(scorer, people, capsys, monkeypatch):
    import pas.population.fit as fit

    monkeypatch.setattr(fit, "PROGRESS_SECONDS", 0.0)  # a line per chunk (the default: one per 5 s)
    report = align_population(scorer, people[:5], chunk=2, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 + 3 + 1  # after the one-time work, then one per chunk, then the last one
    assert all(line.startswith("pas: align-population: ") and "people/s" in line for line in lines)
    assert "5/5 people: 5 fitted, 0 skipped, 0 already stored" in lines[-1] and "ETA" in lines[-1]
    assert report.people_per_second > 0 and report.one_time_seconds > 0


def test_refuses_what_it_cannot_do(scorer, people):
    with pytest.raises(ValueError, match="GatedConfig"):
        align_population(scorer, people, "gated", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk"):
        align_population(scorer, people, chunk=0, progress=False)
