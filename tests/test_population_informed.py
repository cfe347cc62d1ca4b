"""pas-population: the population map (bilinear ridge across people), its vectors, its cross-fitting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pas.core.data import Subject
from pas.population.bilinear import AnswerStats, HeadMaps, design, item_folds, select_shape, solve_map
from pas.population.informed import PopulationMap, cross_fitted_map, fit_map, person_fold, statement_states


def _direct(stats: AnswerStats, z: np.ndarray, ridge: float) -> np.ndarray:
    """The normal equations written out as one dense Kronecker system (what solve_map must equal)."""
    known = {i: n for n, i in enumerate(stats.known_ids)}
    folds = item_folds(stats.known_ids)
    m, k = stats.ata.shape[0], z.shape[1]
    group = np.array([folds[known[i]] if i in known else -1 for i in stats.target_ids])
    normal, rhs = np.zeros((m * k, m * k)), np.zeros((m, k))
    for g in np.unique(group):
        cols = np.flatnonzero(group == g)
        keep = np.ones(m)
        if g >= 0:
            keep[1 + np.flatnonzero(folds == g)] = 0
        normal += np.kron(stats.ata * keep[:, None] * keep[None, :], z[cols].T @ z[cols])
        rhs += (keep[:, None] * stats.aty[:, cols]) @ z[cols]
    normal[np.diag_indices_from(normal)] += ridge
    return np.linalg.solve(normal, rhs.ravel()).reshape(m, k)


def _planted(bank, x: np.ndarray, n: int, seed: int = 0) -> list[Subject]:
    """People whose every answer is 3 + theta_p * loading_j (rounded), the loading a linear function of the
    statement's head outputs: a population structure the map can learn from the model's own states."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=x.shape[1:])
    loading = (x * c).sum((1, 2))
    loading = (loading - loading.mean()) / loading.std()
    theta = rng.normal(size=n)
    ids = [it.id for it in bank.items]
    people = []
    for p in range(n):
        r = np.clip(np.rint(3 + 1.3 * theta[p] * loading + rng.normal(scale=0.3, size=len(ids))), 1, 5)
        people.append(Subject(f"p{p}", {i: int(v) for i, v in zip(ids, r, strict=True)}, bank=bank))
    return people


def test_solve_map_equals_the_dense_normal_equations(papi):
    rng = np.random.default_rng(1)
    for targets in (papi.bank.train_ids, tuple(it.id for it in papi.bank.items)):
        stats = AnswerStats.empty(papi.bank.train_ids, targets).add(papi.subjects[:60])
        z = rng.normal(size=(len(targets), 5))
        np.testing.assert_allclose(solve_map(stats, z, 30.0), _direct(stats, z, 30.0), rtol=1e-6, atol=1e-9)


def test_answer_stats_add_up_chunk_by_chunk(papi):
    ids = papi.bank.train_ids
    whole = AnswerStats.empty(ids, ids).add(papi.subjects[:50])
    parts = AnswerStats.empty(ids, ids).add(papi.subjects[:20]).add(papi.subjects[20:50])
    np.testing.assert_allclose(whole.ata, parts.ata)
    np.testing.assert_allclose(whole.aty, parts.aty)
    a, y = design(papi.subjects[:2], ids, ids)
    assert a.shape == (2, 121) and (a[:, 0] == 1).all() and y.shape == (2, 120)


def test_planted_population_structure_is_recovered(tiny_llama, tokenizer, papi):
    """Known answers carry each person's trait; the map learns, across people, how a statement's state turns that
    trait into an answer, and predicts held-out people's answers to statements it never learned from."""
    from pas.score.scorer import ItemScorer

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    x = statement_states(scorer, 2)
    people = _planted(papi.bank, x, 300)
    train, held = people[:240], people[240:]
    stats = AnswerStats.empty(papi.bank.train_ids, papi.bank.train_ids).add(train)  # short form only
    where = {it.id: n for n, it in enumerate(papi.bank.items)}
    maps = HeadMaps.fit(stats, x, [where[i] for i in papi.bank.train_ids], 8, 10.0)
    a, _ = design(held, papi.bank.train_ids, ())
    test = list(papi.bank.test_ids)
    pred = maps.predict(a, x[[where[i] for i in test]])
    truth = np.array([[s.responses[i] for i in test] for s in held])
    mae, always3 = np.abs(np.clip(np.rint(pred), 1, 5) - truth).mean(), np.abs(3 - truth).mean()
    assert mae < 0.6 * always3
    assert np.corrcoef(pred.ravel(), truth.ravel())[0, 1] > 0.7
    k, ridge, errors = select_shape(train[:90], x, papi.bank, "short", components=(2, 8), ridges=(10.0, 1e6))
    assert (k, ridge) != (2, 1e6) and len(errors) == 4  # a map that can hold the structure is preferred


@pytest.fixture(scope="module")
def planted_map(tiny_llama, tokenizer, papi):
    from pas.score.scorer import ItemScorer

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    people = _planted(papi.bank, statement_states(scorer, 2), 60, seed=3)
    return scorer, people, fit_map(scorer, people, "short", components=4, ridge=10.0)


def test_a_persons_vector_is_closed_form_and_saved_maps_load(planted_map, tmp_path):
    scorer, people, pmap = planted_map
    v = pmap.vector(people[0])
    assert v.kind == "gated" and v.provenance.method == "pas-population"
    # each head's gate is that head's own prediction: (gain * (x_h . w_h + b_h - 3) + shift) / H
    w, b = pmap.readouts(people[0].responses)
    gates = v.gates
    assert gates is not None
    n_heads = w.shape[0]
    np.testing.assert_allclose(gates.weights[pmap.layer].numpy(), pmap.gain * w / n_heads, rtol=1e-5, atol=1e-7)
    back = PopulationMap.load(pmap.save(tmp_path / "map.safetensors"))
    v2 = back.vector(people[0])
    assert torch.equal(v.offsets, v2.offsets) and torch.allclose(v.gates.weights, v2.gates.weights)
    other = dataclasses.replace(people[0], responses={i: 6 - r for i, r in people[0].responses.items()})
    assert not torch.allclose(pmap.vector(other).gates.weights, v.gates.weights)
    out = scorer.score(scorer.bank.test_ids[:5], steering=v)
    assert out.probs.shape == (5, 5)


def test_a_map_file_is_checked(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable population map"):
        PopulationMap.load(bad)


def test_cross_fitting_never_sees_the_person(planted_map, papi):
    """The map used for a person is fitted without them: scrambling everything they answered outside the short
    form (their test answers) leaves their vector bit-identical; their known answers are all it reads."""
    scorer, people, _ = planted_map
    person = people[0]
    kw = {"components": 4, "ridge": 10.0, "gain": 2.0, "shift": 0.0}  # choose_gain reads only the others: skipped
    a = cross_fitted_map(scorer, people, person, "full", **kw)
    assert person.case in a.excluded and a.people == sum(person_fold(s.case) != person_fold(person.case)
                                                         for s in people)
    rng = np.random.default_rng(0)
    test = set(papi.bank.test_ids)
    scrambled = dataclasses.replace(person, responses={i: (int(rng.integers(1, 6)) if i in test else r)
                                                       for i, r in person.responses.items()})
    population = [scrambled if s.case == person.case else s for s in people]
    from pas.score.scorer import ItemScorer

    fresh = ItemScorer(scorer.model, scorer.tokenizer, scorer.bank)  # nothing remembered: the map is fitted anew
    b = cross_fitted_map(fresh, population, scrambled, "full", **kw)
    va, vb = a.vector(person), b.vector(scrambled)
    assert torch.equal(va.gates.weights, vb.gates.weights) and torch.equal(va.gates.bias, vb.gates.bias)


def test_cli_fits_a_map_and_aligns_a_person_from_it(data_dir, papi, tiny_llama, tokenizer, monkeypatch, tmp_path,
                                                    capsys):
    import pas.core.models
    from pas.cli.main import main
    from pas.steer.vector import SteeringVector

    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: (tiny_llama, tokenizer))
    out = tmp_path / "map.safetensors"
    argv = ["population-map", "--data-dir", str(data_dir), "--first", "40", "--components", "4", "--ridge", "10",
            "--gain", "2", "--shift", "0", "--out", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "population map of 40 real people" in said and out.exists()
    assert main(argv) == 2  # never overwritten without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    vec = tmp_path / "v.safetensors"
    assert main(["align", "--data-dir", str(data_dir), "--subject", "172481", "--kind", "population", "--map",
                 str(out), "--out", str(vec)]) == 0
    assert "made from the map" in capsys.readouterr().out
    v = SteeringVector.load(vec)
    assert v.kind == "gated" and v.provenance.method == "pas-population"
    person = next(s for s in papi.subjects if s.case == "172481")
    assert torch.equal(v.gates.weights, PopulationMap.load(out).vector(person).gates.weights)
    assert main(["align", "--data-dir", str(data_dir), "--subject", "172481", "--kind", "population",
                 "--out", str(tmp_path / "w.safetensors")]) == 2  # --map missing: said, nothing made


def test_gain_is_chosen_on_the_maps_own_people(planted_map):
    """choose_gain steers the model with each person's out-of-fold vectors and keeps the best (gain, shift) of
    its grid; a grid of one is returned as it is."""
    from pas.population.informed import choose_gain

    scorer, people, pmap = planted_map
    assert choose_gain(scorer, pmap, people[:2], gains=(1.5,), shifts=(0.5,)) == (1.5, 0.5)
    gain, shift = choose_gain(scorer, pmap, people[:2], gains=(0.0, 2.0), shifts=(0.0,))
    assert (gain, shift) in {(0.0, 0.0), (2.0, 0.0)}
