"""Questionnaire prompts (stage 2): PAPI's item prompt through the model's chat template.

The assistant turn is pre-filled so that the very next token is the option letter;
the model's answer is read from next-token probabilities over A..E, never parsed
from generated text. Letter A = Very Accurate = answer 5 ... E = Very Inaccurate = 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pas.core.data import DOMAINS, ItemBank, keyed_score

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
OPTION_NAMES: tuple[str, ...] = (
    "Very Accurate",
    "Moderately Accurate",
    "Neither Accurate Nor Inaccurate",
    "Moderately Inaccurate",
    "Very Inaccurate",
)
# answer value (1..5) of each letter: A=5 .. E=1
LETTER_VALUES: tuple[int, ...] = (5, 4, 3, 2, 1)

def _options(reverse: bool) -> tuple[str, ...]:
    """Option names in the order they are lettered A..E."""
    return OPTION_NAMES[::-1] if reverse else OPTION_NAMES


STYLES = ("papi", "plain")  # PAPI's item wording, and a plain one (to check a vector's template stability)


def _item_template(reverse: bool = False, style: str = "papi") -> str:
    if style == "papi":
        head = ('Given a statement of you: "You {statement}"\n'
                "Please choose from the following options to identify how accurately this statement describes you.\n")
    elif style == "plain":
        head = 'How well does this describe you: "You {statement}"\n'
    else:
        raise ValueError(f"template style must be one of {STYLES}, not {style!r}")
    return (head + "Options:\n"
            + "".join(f"({letter}). {name}\n" for letter, name in zip(LETTERS, _options(reverse), strict=True))
            + "\nAnswer:")


ITEM_TEMPLATE = _item_template()

_PRONOUNS = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are", "i'm": "you're"}


def second_person(text: str) -> str:
    """IPIP items are first-person fragments ("Am the life of the party."); make them follow "You "."""
    words = re.split(r"(\W+)", text.strip())
    out = []
    for n, w in enumerate(words):
        low = w.lower()
        repl = _PRONOUNS.get(low)
        out.append(repl if repl is not None else (w[:1].lower() + w[1:] if n == 0 else w))
    return "".join(out)


def item_prompt(text: str, reverse: bool = False, style: str = "papi") -> str:
    """The user message for one item: PAPI's wording, or ``style="plain"`` (options reversed with ``reverse``)."""
    return _item_template(reverse, style).format(statement=second_person(text))


def value_letters(reverse: bool = False) -> tuple[str, ...]:
    """The letter of each answer value 5, 4, 3, 2, 1 (the order of :data:`LETTER_VALUES`)."""
    return LETTERS[::-1] if reverse else LETTERS


def answer_label(value: int, reverse: bool = False) -> str:
    """'(B). Moderately Accurate' for answer 4 ('(D). Moderately Accurate' with reversed options)."""
    k = LETTER_VALUES.index(value)
    return f"({value_letters(reverse)[k]}). {OPTION_NAMES[k]}"


def few_shot_system(bank: ItemBank, responses: Mapping[int, int], reverse: bool = False) -> str:
    """System prompt listing a person's known responses to the statements as worded (the paper's few-shot baseline).

    Answers are labelled with the letters of the questionnaire they precede (``reverse``: reversed options).
    """
    by_id = bank.by_id
    lines = [f'- "You {second_person(by_id[i].text)}": {answer_label(a, reverse)}'
             for i, a in sorted(responses.items())]
    return (
        "You are role-playing a specific person answering a personality questionnaire. "
        "This is how the person described themselves on other statements:\n"
        + "\n".join(lines)
        + "\nAnswer every new statement exactly the way this person would."
    )


DOMAIN_NAMES: dict[str, str] = {"O": "Openness to experience", "C": "Conscientiousness", "E": "Extraversion",
                                "A": "Agreeableness", "N": "Neuroticism"}
LEVELS: tuple[tuple[float, str], ...] = ((4.5, "very high"), (3.5, "high"), (2.5, "average"), (1.5, "low"))


def level_word(score: float) -> str:
    """A mean keyed score (1..5) in words: very high >= 4.5 > high >= 3.5 > average > 2.5 >= low > 1.5 >= very low."""
    for bound, word in LEVELS:
        if score >= bound if bound > 3 else score > bound:
            return word
    return "very low"


def template_description(bank: ItemBank, responses: Mapping[int, int]) -> str:
    """A person described by a fixed template from their ``responses`` (items as worded), no LLM.

    One line per Big-Five domain with its level and its facets' levels (mean keyed score of the
    person's answers: a reverse-keyed statement counts 6 - response), then the statements the person
    called "Very Accurate" and "Very Inaccurate", as worded. The prose descriptions shipped with PAPI
    were written by an LLM and contradict their person on reverse-keyed statements; this one cannot.
    """
    by_id = bank.by_id
    keyed = {i: keyed_score(by_id[i], a) for i, a in responses.items()}
    lines = []
    for d in DOMAINS:
        ids = [i for i in sorted(keyed) if by_id[i].domain == d]
        if not ids:
            continue
        facets: dict[tuple[str, str], list[int]] = {}
        for i in ids:
            facets.setdefault((by_id[i].facet, by_id[i].facet_name), []).append(keyed[i])
        parts = ", ".join(f"{name.lower()} {level_word(sum(v) / len(v))}" for (_, name), v in sorted(facets.items()))
        mean = sum(keyed[i] for i in ids) / len(ids)
        lines.append(f"- {DOMAIN_NAMES[d]}: {level_word(mean)} ({mean:.1f} of 5); {parts}.")
    extremes = []
    for value, label in ((5, "very accurately"), (1, "very inaccurately")):
        said = [f"you {second_person(by_id[i].text).rstrip('.')}" for i, a in sorted(responses.items()) if a == value]
        if said:
            extremes.append(f"These statements describe you {label}: " + "; ".join(said) + ".")
    return ("Your personality on the Big Five domains and their facets:\n" + "\n".join(lines)
            + ("\n" + "\n".join(extremes) if extremes else ""))


def description_system(description: str) -> str:
    """System prompt from a prose personality description (PAPI's personality prompt)."""
    return description.strip() + "\n\nAnswer every statement about you the way the person described above would."


@dataclass(frozen=True)
class PromptTemplate:
    """How an item becomes model input. ``prefill`` starts the assistant turn; the next token is the letter."""

    prefill: str = "("
    reverse_options: bool = False
    style: str = "papi"  # item wording: PAPI's, or "plain"
    # a user turn before every item (e.g. "Actually, you are very shy."), to test consistency
    pressure: str | None = None

    def render(self, tokenizer: PreTrainedTokenizerBase, text: str, system: str | None = None,
               answer: str | None = None) -> str:
        """The full model input for item ``text``; with ``answer`` the letter is appended (contrastive prompts)."""
        messages = (([{"role": "system", "content": system}] if system else [])
                    + ([{"role": "user", "content": self.pressure}] if self.pressure else [])
                    + [{"role": "user", "content": item_prompt(text, self.reverse_options, self.style)}])
        if getattr(tokenizer, "chat_template", None):
            # tokenize=False gives the text; transformers types the result as every shape the call can return
            head = cast(str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        else:  # base models without a chat template: plain text
            head = "".join(m["content"] + "\n\n" for m in messages)
        return head + self.prefill + (answer or "")

    def render_items(self, tokenizer: PreTrainedTokenizerBase, bank: ItemBank, ids: Sequence[int],
                     system: str | None = None) -> list[str]:
        by_id = bank.by_id
        return [self.render(tokenizer, by_id[i].text, system) for i in ids]

    def fingerprint(self) -> str:
        extra = f"|pressure={self.pressure!r}" if self.pressure else ""
        return f"{_item_template(self.reverse_options, self.style)!r}|prefill={self.prefill!r}{extra}"

    def letter_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids of the letters for answer values 5, 4, 3, 2, 1 under this template's option order."""
        ids = letter_token_ids(tokenizer)
        return ids[::-1] if self.reverse_options else ids

    def reversed(self) -> PromptTemplate:
        """This template with the options listed the other way round."""
        import dataclasses

        return dataclasses.replace(self, reverse_options=not self.reverse_options)


def letter_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token id of each option letter as it follows the prefill; each must be one token."""
    ids = []
    for letter in LETTERS:
        toks = tokenizer.encode(letter, add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(f"option letter {letter!r} is {len(toks)} tokens for this tokenizer; pas needs one")
        ids.append(toks[0])
    return ids
