import pytest

from pas.fit.activations import check_contrast, contrastive_texts
from pas.score.prompts import (
    LETTER_VALUES,
    PromptTemplate,
    few_shot_system,
    item_prompt,
    letter_token_ids,
    second_person,
)


@pytest.mark.parametrize("text, expected", [
    ("Worry about things.", "worry about things."),
    ("Am the life of the party.", "are the life of the party."),
    ("Believe that I am better than others.", "believe that you are better than others."),
    ("Leave a mess in my room.", "leave a mess in your room."),
    ("Do more than what's expected of me.", "do more than what's expected of you."),
    ("Dislike myself.", "dislike yourself."),
])
def test_second_person(text, expected):
    assert second_person(text) == expected


def test_item_prompt_is_papis():
    p = item_prompt("Worry about things.")
    assert p.startswith('Given a statement of you: "You worry about things."\nPlease choose from the following options')
    assert "(A). Very Accurate" in p and "(E). Very Inaccurate" in p and p.endswith("Answer:")


def test_render_prefills_assistant(tokenizer):
    text = PromptTemplate().render(tokenizer, "Worry about things.", system="Be you.")
    assert text.startswith("<|im_start|>system\nBe you.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n(")


def test_letters_are_single_tokens(tokenizer):
    ids = letter_token_ids(tokenizer)
    assert len(set(ids)) == 5
    assert LETTER_VALUES == (5, 4, 3, 2, 1)


def test_contrastive_prompts_differ_at_answer(tokenizer, papi):
    texts = contrastive_texts(tokenizer, papi.bank, papi.bank.train_ids, PromptTemplate())
    check_contrast(tokenizer, texts)  # raises if not
    with pytest.raises(ValueError, match="do not differ"):
        check_contrast(tokenizer, [texts[0], texts[0]])


def test_few_shot_lists_known_answers(papi):
    s = papi.subjects[0]
    known = s.responses_to(papi.bank.train_ids)
    sys = few_shot_system(papi.bank, known)
    assert sys.count("\n- ") == len(known)
    assert '"You worry about things.": ' in sys


def test_few_shot_shows_responses_not_keyed_scores(papi, data_dir):
    """A reverse-keyed statement is shown with what the person chose for it as worded (6 - stored)."""
    import json

    from pas.score.prompts import answer_label, second_person

    s = papi.subjects[0]
    raw = next(r for r in json.loads((data_dir / "subjects.json").read_text()) if str(r["case"]) == s.case)
    by_id = papi.bank.by_id
    item = next(i for i in papi.bank.train_ids if by_id[i].keyed == "-" and raw[f"i{i}"] not in (0, 3))
    text = few_shot_system(papi.bank, s.responses_to(papi.bank.train_ids))
    line = f'"You {second_person(by_id[item].text)}": '
    assert line + answer_label(6 - raw[f"i{item}"]) in text
    assert line + answer_label(raw[f"i{item}"]) not in text


@pytest.mark.parametrize("score,word", [(5, "very high"), (4.5, "very high"), (4.25, "high"), (3.5, "high"),
                                        (3.0, "average"), (2.75, "average"), (2.5, "low"), (1.75, "low"),
                                        (1.5, "very low"), (1.0, "very low")])
def test_level_word_is_symmetric_about_3(score, word):
    from pas.score.prompts import level_word

    assert level_word(score) == word
    mirror = {"very high": "very low", "high": "low", "average": "average", "low": "high", "very low": "very high"}
    assert level_word(6 - score) == mirror[word]


def test_template_description_by_hand(papi):
    """A synthetic answer sheet: one facet all at its keyed top, one reverse-keyed statement answered 1."""
    from pas.score.prompts import second_person, template_description

    by_id = papi.bank.by_id
    known = papi.bank.train_ids
    facet = by_id[known[0]].facet
    sheet = {i: 3 for i in known}
    for i in known:  # every statement of that facet at keyed 5: response 5 if +keyed, 1 if -keyed
        if by_id[i].facet == facet:
            sheet[i] = 5 if by_id[i].keyed == "+" else 1
    rev = next(i for i in known if by_id[i].keyed == "-" and by_id[i].facet != facet)
    sheet[rev] = 1  # a reverse-keyed statement the person rejects: keyed 5, shown as "very inaccurately"
    text = template_description(papi.bank, sheet)
    name = by_id[known[0]].facet_name.lower()
    assert f"{name} very high" in text
    accurate, inaccurate = text.split("These statements describe you very inaccurately: ")[0], text.split(
        "very inaccurately: ")[1]
    said = f"you {second_person(by_id[rev].text).rstrip('.')}"
    assert said in inaccurate and said not in accurate
    for i in known:
        if by_id[i].facet == facet and by_id[i].keyed == "+":
            assert f"you {second_person(by_id[i].text).rstrip('.')}" in accurate
    # every domain line is there; a neutral facet reads "average"
    assert text.count("\n- ") == 5 and "average" in text
