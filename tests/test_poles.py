"""pas assess (keyed scoring of the inventory), trait poles, types, groups and their arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.measures.poles import keying_accuracy, on_off_target, type_signs
from pas.core.arch import layout
from pas.core.data import Item, ItemBank, Subject
from pas.fit.activations import ANSWER_STATES, AnswerStates
from pas.score.assess import assess, inventory_ids, keyed_means, percentile
from pas.score.scorer import ItemScorer
from pas.space.poles import (
    POLES,
    TYPES,
    group_sheet,
    parse_pole,
    pole_sheet,
    pole_vectors,
    profile_vector,
    quartile_sheet,
    type_poles,
    type_vector,
)


def _bank() -> ItemBank:
    rows = [(1, 1, "E", "E1", "+", "Love large parties."), (2, 2, "E", "E1", "-", "Avoid crowds."),
            (3, None, "E", "E2", "+", "Talk to a lot of people."), (4, 3, "N", "N1", "+", "Worry about things."),
            (5, None, "N", "N1", "-", "Am relaxed most of the time.")]
    return ItemBank(tuple(Item(i, s, d, f, f, k, t) for i, s, d, f, k, t in rows))


def test_keyed_scoring_by_hand():
    """Answers as worded: E = mean(5, 6-2, 3) = 4, E1 = mean(5, 4) = 4.5, E2 = 3; N = mean(2, 6-1) = 3.5."""
    domains, facets = keyed_means(_bank(), {1: 5, 2: 2, 3: 3, 4: 2, 5: 1})
    assert domains == {"E": 4.0, "N": 3.5}
    assert facets == {"E1": 4.5, "E2": 3.0, "N1": 3.5}
    domains, _ = keyed_means(_bank(), {1: 4.5, 2: 1.5})  # expected answers count the same way
    assert domains == {"E": 4.5}


def test_percentile_counts_ties_half():
    assert percentile(3.0, [1, 2, 3, 4]) == pytest.approx(62.5)
    assert percentile(0.5, [1, 2]) == 0.0 and percentile(9, [1, 2]) == 100.0


def test_item_sets():
    bank = _bank()
    assert inventory_ids(bank, "120") == (1, 2, 4) and inventory_ids(bank, "180") == (3, 5)
    assert inventory_ids(bank, "300") == (1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="items must be one of"):
        inventory_ids(bank, "60")


def test_poles_and_types_parse():
    assert parse_pole("e+") == ("E", 1) and parse_pole("N-") == ("N", -1)
    for bad in ("X+", "E", "E+-", "+E"):
        with pytest.raises(ValueError, match="trait pole"):
            parse_pole(bad)
    assert type_poles("infp") == ("E-", "O+", "A+", "C-")
    assert type_poles("ESTJ") == ("E+", "O-", "A-", "C+")
    with pytest.raises(ValueError, match="MBTI"):
        type_poles("IFNP")  # letters out of axis order
    assert len(set(TYPES)) == 16 and len(POLES) == 10


def test_pole_sheet_follows_keying():
    bank = _bank()
    assert pole_sheet(bank, "E+") == {1: 5.0, 2: 1.0, 4: 3.0}
    assert pole_sheet(bank, "E-") == {1: 1.0, 2: 5.0, 4: 3.0}
    people = [Subject("a", {1: 5, 2: 1, 4: 3}), Subject("b", {1: 4, 4: 1})]
    assert group_sheet(bank, people) == {1: 4.5, 2: 1.0, 4: 2.0}


def test_quartile_sheet_by_hand():
    """Eight people on the short form (items 1 E+, 2 E-, 4 N+); keyed E = 5, 4.5, 4, 3, 3, 2, 1.5, 1.
    Top quarter (a, b) minus bottom (g, h): item 1 5 - 1 = +4, item 2 1.5 - 4.5 = -3, item 4 2 - 4 = -2;
    the E items' mean |contrast| is 3.5, so each point of contrast is 2 / 3.5 of a sheet point."""
    bank = _bank()
    rows = {"a": (5, 1, 2), "b": (5, 2, 2), "c": (4, 2, 3), "d": (3, 3, 3), "e": (3, 3, 3), "f": (2, 4, 3),
            "g": (1, 4, 4), "h": (1, 5, 4)}
    people = [Subject(c, {1: r[0], 2: r[1], 4: r[2]}, bank=bank) for c, r in rows.items()]
    up = quartile_sheet(bank, people, "E+")
    assert up == pytest.approx({1: 5.0, 2: 3 - 6 / 3.5, 4: 3 - 4 / 3.5})  # 3 + 8/3.5 clipped to 5
    down = quartile_sheet(bank, people, "E-")
    assert down == pytest.approx({1: 1.0, 2: 3 + 6 / 3.5, 4: 3 + 4 / 3.5})
    missing = people + [Subject("x", {4: 5}, bank=bank)]  # answered no E item: not ranked on E
    assert quartile_sheet(bank, missing, "E+") == pytest.approx(up)
    with pytest.raises(ValueError, match="too few"):
        quartile_sheet(bank, people[:1], "E+")
    with pytest.raises(ValueError, match="answer its items alike"):
        quartile_sheet(bank, [Subject(c, {1: 3, 2: 3, 4: 3}, bank=bank) for c in "abcd"], "E+")
    with pytest.raises(ValueError, match="no O items"):
        quartile_sheet(bank, people, "O+")


def test_on_off_target_and_type_signs():
    shift = {"O": 0.2, "C": -0.4, "E": -1.0, "A": 0.0, "N": 0.2}
    assert on_off_target(shift, "E-") == (1.0, pytest.approx(0.2))
    assert type_signs(shift, "INFJ") == {"E": True, "O": True, "A": False, "C": False}


def _planted_scorer(model, tokenizer, papi, layer: int, head: int, seed: int = 0):
    """A scorer whose remembered answer states carry a planted E direction: head ``head`` of ``layer`` holds
    +u on +keyed E statements, -u on -keyed ones, noise elsewhere. Returns ``(scorer, u)``."""
    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    bank = papi.bank
    ids = bank.train_ids
    heads = torch.randn(len(ids), lay.n_layers, lay.n_heads, lay.head_dim, generator=g) * 0.3
    u = torch.randn(lay.head_dim, generator=g)
    u /= u.norm()
    by_id = bank.by_id
    for n, i in enumerate(ids):
        if by_id[i].domain == "E":
            heads[n, layer, head] += 3.0 * u * (1 if by_id[i].keyed == "+" else -1)
    scorer = ItemScorer(model, tokenizer, bank)
    states = AnswerStates(tuple(ids), torch.zeros(len(ids), lay.n_layers + 1, lay.hidden_size), heads)
    ANSWER_STATES.put(scorer, tuple(ids), states)
    return scorer, u


def test_planted_trait_direction_is_recovered(tiny_llama, tokenizer, papi):
    """The E+ pole's gate on the planted head points along the planted direction; E- is its mirror; the
    other poles' gates on that head do not."""
    layer, head = 2, 1
    scorer, u = _planted_scorer(tiny_llama, tokenizer, papi, layer, head)
    poles = pole_vectors(scorer, ["E+", "E-", "N+"])
    w = poles["E+"].gates.weights[layer, head]
    assert float(torch.nn.functional.cosine_similarity(w, u, dim=0)) > 0.8  # ridge on standardised outputs
    torch.testing.assert_close(poles["E-"].gates.weights, -poles["E+"].gates.weights, rtol=1e-4, atol=1e-6)
    wn = poles["N+"].gates.weights[layer, head]
    assert abs(float(torch.nn.functional.cosine_similarity(wn, u, dim=0))) < 0.5
    # the gate at the answer position is large and positive on +keyed E statements, negative on -keyed ones
    states = ANSWER_STATES.get(scorer, tuple(papi.bank.train_ids), lambda: None)
    by_id = papi.bank.by_id
    gates = poles["E+"].gates
    gate = (states.heads[:, layer] * gates.weights[layer]).sum(-1).sum(-1) + gates.bias[layer].sum()
    plus = [n for n, i in enumerate(states.item_ids) if by_id[i].domain == "E" and by_id[i].keyed == "+"]
    minus = [n for n, i in enumerate(states.item_ids) if by_id[i].domain == "E" and by_id[i].keyed == "-"]
    assert float(gate[plus].mean()) > 0 > float(gate[minus].mean())


def test_planted_direction_is_recovered_from_people(tiny_llama, tokenizer, papi):
    """Poles built from the real people's top and bottom quartiles find the same planted E head."""
    layer, head = 2, 1
    scorer, u = _planted_scorer(tiny_llama, tokenizer, papi, layer, head)
    poles = pole_vectors(scorer, ["E+"], source="people", people=papi.subjects)
    assert poles["E+"].provenance.config["source"] == "people"
    assert float(torch.nn.functional.cosine_similarity(poles["E+"].gates.weights[layer, head], u, dim=0)) > 0.7
    with pytest.raises(ValueError, match="needs the people"):
        pole_vectors(scorer, ["E+"], source="people")
    with pytest.raises(ValueError, match="source must be one of"):
        pole_vectors(scorer, ["E+"], source="persons", people=papi.subjects)


def test_type_is_the_sum_of_its_poles_and_person_plus_pole_adds(tiny_llama, tokenizer, papi):
    scorer, _ = _planted_scorer(tiny_llama, tokenizer, papi, 2, 1)
    poles = pole_vectors(scorer)
    t = type_vector(scorer, "INFP", poles)
    assert t.subject == "INFP" and t.kind == "gated"
    expect = sum((poles[p].gates.weights for p in ("E-", "O+", "A+", "C-")), torch.zeros_like(t.gates.weights))
    torch.testing.assert_close(t.gates.weights, expect)
    torch.testing.assert_close(t.offsets, poles["E-"].offsets)  # one shared push
    # a profile fitted on another sheet (a "person") + 0.5 * C+: defined, gates add
    person = profile_vector(scorer, {i: 1 + (i % 5) for i in papi.bank.train_ids}, "person")
    mixed = person + 0.5 * poles["C+"]
    torch.testing.assert_close(mixed.gates.weights, person.gates.weights + 0.5 * poles["C+"].gates.weights)
    with torch.no_grad():  # and it runs on the model
        scores = scorer.score(papi.bank.test_ids[:4], steering=mixed)
    assert np.isfinite(scores.probs).all()


def test_assess_on_tiny_model(tiny_llama, tokenizer, papi):
    """Scores come from the same scorer as pas eval; strength 0 = unsteered; a system prompt changes answers."""
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    ids = papi.bank.test_ids[:12]
    base = assess(scorer, ids, people=papi.subjects[:20])
    assert set(base.domains) <= set("OCEAN") and all(1 <= v <= 5 for v in base.domains.values())
    assert all(0 <= p <= 100 for p in base.percentiles.values())
    s = scorer.score(ids)
    assert [base.answers[i] for i in ids] == list(s.answers)
    vec = pole_vectors(_planted_scorer(tiny_llama, tokenizer, papi, 2, 1)[0], ["E+"])["E+"]
    zero = assess(scorer, ids, steering=vec * 0.0)
    assert zero.answers == base.answers and zero.expected == pytest.approx(base.expected)
    js = base.to_json()
    assert set(js["domains"]) == set(base.domains) and len(js["items"]) == 12


def test_keying_accuracy_finds_a_planted_keying(tiny_llama, tokenizer, papi):
    """States where one head carries the E statements' keying (on the short form and on the other 180 alike):
    the held-out keying of E is read perfectly at that layer; other domains (noise) sit near chance."""

    layer, head = 1, 1
    lay = layout(tiny_llama)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(lay.head_dim, generator=g)
    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    by_id = papi.bank.by_id
    for ids in (papi.bank.train_ids, papi.bank.test_ids):
        heads = torch.randn(len(ids), lay.n_layers, lay.n_heads, lay.head_dim, generator=g) * 0.3
        for n, i in enumerate(ids):
            if by_id[i].domain == "E":
                heads[n, layer, head] += 3.0 * u / u.norm() * (1 if by_id[i].keyed == "+" else -1)
        states = AnswerStates(tuple(ids), torch.zeros(len(ids), lay.n_layers + 1, lay.hidden_size), heads)
        ANSWER_STATES.put(scorer, tuple(ids), states)
    acc = keying_accuracy(scorer, [layer, layer + 1])
    assert acc[layer]["E"] >= 0.95
    assert np.mean([acc[layer][d] for d in "OCAN"]) < 0.8 and acc[layer + 1]["E"] < 0.8
    with pytest.raises(ValueError, match="features"):
        keying_accuracy(scorer, [layer], features="logits")
    with pytest.raises(ValueError, match="layers"):
        keying_accuracy(scorer, [lay.n_layers])
