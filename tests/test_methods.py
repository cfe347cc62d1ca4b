import dataclasses

import numpy as np
import pytest

from pas.eval.methods import METHODS, MethodContext, always_3, population_median, ridge
from pas.eval.run import run_methods
from pas.score.metric import subject_errors


@pytest.fixture(scope="module")
def ctx(papi):
    return MethodContext(papi.bank, papi.subjects)


def test_always_3(ctx, papi):
    p = always_3(ctx, papi.subjects[0])
    assert p.ids == papi.bank.test_ids and set(p.answers) == {3}


def test_yardsticks_ignore_the_subjects_own_answers(ctx, papi):
    s = papi.subjects[0]
    flipped = dataclasses.replace(s, responses={i: (6 - a if i in papi.bank.test_ids else a)
                                                for i, a in s.responses.items()})
    others = [x for x in papi.subjects if x.case != s.case]
    ctx2 = MethodContext(papi.bank, [flipped, *others])
    for method in (population_median, ridge):
        assert np.array_equal(method(ctx, s).expected, method(ctx2, flipped).expected)


def test_ridge_beats_always_3(ctx, papi):
    subjects = papi.subjects[:4]
    recs = run_methods(ctx, subjects, ["ridge", "always-3"], progress=False)
    r, a = (np.mean([x.composite for x in recs[m]]) for m in ("ridge", "always-3"))
    assert r < a


def test_yardsticks_score_the_same_in_either_encoding(ctx, papi):
    """MAE of a population yardstick does not depend on whether it learned responses or keyed scores."""
    import dataclasses

    from pas.core.data import keyed_score

    by_id = papi.bank.by_id
    keyed = [dataclasses.replace(s, responses=s.keyed_scores()) for s in papi.subjects]
    ctx_k = MethodContext(papi.bank, keyed)
    for method in (population_median, ridge):
        for s, sk in zip(papi.subjects[:3], keyed[:3], strict=True):
            p, pk = method(ctx, s), method(ctx_k, sk)
            flipped = np.array([keyed_score(by_id[i], a) for i, a in zip(pk.ids, pk.answers, strict=True)])
            assert np.array_equal(p.answers, flipped)
            assert subject_errors(papi.bank, s, p).composite == pytest.approx(
                subject_errors(papi.bank, sk, pk).composite)


def test_llm_method_needs_model(ctx, papi):
    with pytest.raises(ValueError, match="needs a model"):
        METHODS["base"](ctx, papi.subjects[0])


def test_unknown_method(ctx, papi):
    with pytest.raises(ValueError, match="unknown method"):
        run_methods(ctx, papi.subjects[:1], ["nope"], progress=False)


def test_tiny_model_methods_run(tiny_llama, tokenizer, papi):
    from pas.score.scorer import ItemScorer

    ctx = MethodContext(papi.bank, papi.subjects, ItemScorer(tiny_llama, tokenizer, papi.bank))
    s = papi.subjects[0]
    for name in ("base", "description", "template-description", "template-description-vector"):
        pred = METHODS[name](ctx, s)
        score = subject_errors(papi.bank, s, pred)
        assert 0 <= score.composite <= 20
    assert pred.info["prompt_tokens_saved"] > 0 and pred.fit_seconds > 0


def test_reversed_options_score_values_not_letters(tiny_llama, tokenizer, papi):
    """With reversed options the letter for answer 5 is E; the reported answers stay answer values."""
    import numpy as np

    from pas.score.prompts import PromptTemplate, few_shot_system
    from pas.score.scorer import ItemScorer

    scorer = ItemScorer(tiny_llama, tokenizer, papi.bank)
    rev = scorer.reversed()
    assert rev.template.reverse_options and rev.letter_ids == scorer.letter_ids[::-1]
    text = rev.texts(papi.bank.test_ids[:1])[0]
    assert "(A). Very Inaccurate" in text and "(E). Very Accurate" in text
    assert "(A). Very Accurate" in scorer.texts(papi.bank.test_ids[:1])[0]
    s = papi.subjects[0]
    known = {i: 5 for i in papi.bank.train_ids[:1]}
    assert "(E). Very Accurate" in few_shot_system(papi.bank, known, reverse=True)
    assert PromptTemplate().fingerprint() != PromptTemplate(reverse_options=True).fingerprint()
    ctx = MethodContext(papi.bank, papi.subjects, scorer, reverse_options=True)
    pred = METHODS["base"](ctx, s)
    assert pred.reversed is not None and set(np.unique(pred.reversed.answers)) <= {1, 2, 3, 4, 5}
    # the reversed probabilities are over answer values: the same letter distribution read backwards
    one = rev.score(papi.bank.test_ids[:3])
    np.testing.assert_allclose(one.probs.sum(1), 1.0, rtol=1e-6)


def test_readout_uses_known_items_only_and_beats_nothing_for_free(tiny_llama, tokenizer, papi):
    import dataclasses

    from pas.score.scorer import ItemScorer

    ctx = MethodContext(papi.bank, papi.subjects, ItemScorer(tiny_llama, tokenizer, papi.bank))
    s = papi.subjects[2]
    a = METHODS["readout"](ctx, s)
    scrambled = dataclasses.replace(s, responses={i: (1 if i in papi.bank.test_ids else r)
                                                  for i, r in s.responses.items()})
    b = METHODS["readout"](ctx, scrambled)
    assert (a.answers == b.answers).all() and a.info["layer"] == b.info["layer"]
    assert 0 <= subject_errors(papi.bank, s, a).composite <= 20


def test_fit_readout_finds_a_planted_signal(papi):
    """A feature set that carries the answers is chosen over noise, and predicts held-out items."""
    import numpy as np

    from pas.fit.readout import fit_readout

    rng = np.random.default_rng(0)
    s = papi.subjects[0]
    known = s.responses_to(papi.bank.train_ids)
    ids = sorted(known)
    y = np.array([known[i] for i in ids], dtype=float)
    signal = np.c_[y + rng.normal(0, 0.3, len(y)), rng.normal(size=(len(y), 20))]
    noise = rng.normal(size=(len(y), 21))
    fit = fit_readout({"noise": noise, "signal": signal}, y, papi.bank, s, ids, ridge_lambdas=(0.1, 1.0, 10.0))
    assert fit.key == "signal" and fit.cv.composite < 2.0
    assert np.abs(fit.predict(signal) - y).mean() < 0.5


def test_one_registry_holds_every_fact():
    """Each method is one record; the facts once in parallel tables are read from it (no name parsing)."""
    from pas.eval.methods import Method

    llm = {n for n, m in METHODS.items() if m.is_llm}
    assert {n for n, m in METHODS.items() if not m.is_llm} == {"always-3", "population-median", "ridge", "readout"}
    assert {n for n, m in METHODS.items() if m.needs_model} == llm | {"readout"}
    assert {n: m.vector_kind for n, m in METHODS.items() if m.takes_vector} == {
        "pas": "pas", "pas-learned": "pas-learned", "pas+few-shot": "pas", "pas-gated": "pas-gated"}
    assert {n for n, m in METHODS.items() if m.uses_population} == {"population-median", "ridge", "pas-population",
                                                                     "pas-population-full"}
    assert all(m.name == n and m.doc and isinstance(m, Method) for n, m in METHODS.items())
    with pytest.raises(ValueError, match="needs a model"):
        Method("odd", always_3, "d", is_llm=True)


def test_a_method_depends_only_on_its_own_settings(papi):
    """What goes in a record's fingerprint besides the data: a PAS variant's config as it fits with it."""
    from pas.fit.config import GatedConfig, PASConfig

    s = papi.subjects[0]
    ctx = MethodContext(papi.bank, papi.subjects, pas_config=PASConfig(k=12), gated_config=GatedConfig())
    assert METHODS["always-3"].settings(ctx, s) == {} and METHODS["ridge"].settings(ctx, s) == {}
    learned, few = METHODS["pas-learned"].settings(ctx, s)["pas_config"], METHODS["pas+few-shot"].settings(ctx, s)
    assert learned["k"] == 12 and learned["learn"] and not learned["few_shot"]
    assert few["pas_config"]["few_shot"] and not few["pas_config"]["learn"]
    assert set(METHODS["pas-gated"].settings(ctx, s)) == {"gated_config"}
    ctx.vectors[s.case] = object()  # a given vector: nothing is fitted, so no fitting config
    assert METHODS["pas"].settings(ctx, s) == {}
    assert set(METHODS["description"].settings(ctx, s)) == {"description"}
