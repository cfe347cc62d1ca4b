"""Who a request names: a person of the population store, a trait pole, an MBTI type, or nobody (unsteered).

The OpenAI ``model`` field carries the name (``pas:CASE``, ``pas:trait:E+``, ``pas:type:INFP``, ``base``); an
extra body field ``person`` may carry it instead, with or without the ``pas:`` prefix. Parsing is pure (no
model, no store): :class:`pas.serve.people.People` says whether the named person exists here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pas.space.poles import pole_name, type_poles

PREFIX = "pas:"
BASE = "base"
GENERIC = "pas"  # a ``model`` that leaves the choice of person to the ``person`` field
KINDS = ("case", "trait", "type", "base")


class UnknownPerson(ValueError):
    """A name that names no one here (a malformed name, a case not in the store, a pole without an item bank);
    the message says what names look like. The API answers 404, as OpenAI does for an unknown model."""


@dataclass(frozen=True)
class PersonName:
    """A parsed name. ``kind``: case, trait, type or base; ``key``: the case id, the pole (``E+``), the type
    (``INFP``), or ``""`` for base."""

    kind: str
    key: str = ""

    @property
    def id(self) -> str:
        """The canonical model id: ``pas:CASE``, ``pas:trait:E+``, ``pas:type:INFP`` or ``base``."""
        if self.kind == "base":
            return BASE
        return PREFIX + (self.key if self.kind == "case" else f"{self.kind}:{self.key}")

    @property
    def steered(self) -> bool:
        return self.kind != "base"


HINT = "name a person as pas:CASE (a person of the store), pas:trait:E+ (a trait pole), pas:type:INFP or base"


def parse_name(text: str, *, prefixed: bool = True) -> PersonName:
    """The person ``text`` names; :class:`UnknownPerson` if it names none. A ``model`` field must say ``pas:``
    (or ``base``); a ``person`` field (``prefixed=False``) may leave it out."""
    name = text.strip()
    if name == BASE:
        return PersonName("base")
    if prefixed and not name.startswith(PREFIX):
        raise UnknownPerson(f"model {text!r} is not served here: {HINT}")
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if body == BASE:
        return PersonName("base")
    kind, _, rest = body.partition(":")
    try:
        if kind == "trait" and rest:
            return PersonName("trait", pole_name(rest))
        if kind == "type" and rest:
            type_poles(rest)  # a clear error for anything that is not a type
            return PersonName("type", rest.strip().upper())
    except ValueError as e:
        raise UnknownPerson(f"{text!r}: {e}") from None
    if not body or kind in ("trait", "type"):
        raise UnknownPerson(f"{text!r} names no one: {HINT}")
    return PersonName("case", body)


def request_name(model: str, person: str | None) -> PersonName:
    """The person of a request: ``person`` when given (then ``model`` must be ``pas`` or name the same person),
    else ``model``. A ``model`` that names another person than ``person`` is refused."""
    if person is None:
        if model.strip() == GENERIC:
            raise UnknownPerson(f"model {GENERIC!r} needs the person in the body's 'person' field; or {HINT}")
        return parse_name(model)
    chosen = parse_name(person, prefixed=False)
    if model.strip() == GENERIC or parse_name(model) == chosen:
        return chosen
    raise UnknownPerson(f"model {model!r} and person {person!r} name different people: give one of them, or set "
                     f"model to {GENERIC!r}")
