"""Where a command's steering comes from: the flags of :func:`pas.cli.args.add_source_args` made into a vector."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pas.cli.args import UsageError
from pas.space.spec import SteeringSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pas.core.data import PapiData
    from pas.score.scorer import ItemScorer
    from pas.steer.vector import SteeringVector


def check_system_fits(scorer: ItemScorer, text: str, what: str) -> None:
    """A system prompt that goes into the questionnaire prompts (a persona, ``--system``) must leave room for the
    longest of them; counted before any scoring."""
    from pas.steer.chat import check_fits, count_tokens

    margin = max(count_tokens(scorer.tokenizer, t) for t in scorer.texts(sorted(scorer.bank.by_id)))
    check_fits(scorer.tokenizer, scorer.model, text, reserve=margin, what=what,
               reserve_for="the longest questionnaire prompt around it")


def vector_from_args(args: argparse.Namespace, spec: SteeringSpec, model: PreTrainedModel,
                     tok: PreTrainedTokenizerBase, scorer: ItemScorer | None = None,
                     data: PapiData | None = None) -> tuple[SteeringVector | None, str | None]:
    """``(vector, system prompt)`` the flags name; a built vector loads the data dir for its item bank."""
    from pas.space.spec import vector_from_spec

    if getattr(args, "store", None) is not None:
        return stored_vector(args, model, data), None
    if not spec.given():
        return None, getattr(args, "system", None)
    if spec.vector is None:
        from pas.core.data import load_papi
        from pas.score.scorer import ItemScorer

        data = data or load_papi(args.data_dir, encoding=args.encoding)
        scorer = scorer or ItemScorer(model, tok, data.bank)
        if spec.persona is not None:  # the persona goes into the questionnaire prompts as their system prompt
            check_system_fits(scorer, spec.persona, "--persona")
    group = f"group of {len(spec.cases)} ({Path(args.cases).name})" if spec.cases else None
    vector = vector_from_spec(spec, model, scorer, data.subjects if data else (),
                              allow_other_weights=args.allow_other_weights, group_name=group,
                              bank=data.bank if data else None, allow_other_items=args.allow_other_items)
    return vector, None


def stored_vector(args: argparse.Namespace, model: PreTrainedModel, data: PapiData | None) -> SteeringVector:
    """``--store STORE --person CASE``: that person's vector, checked against the model (and the item bank)."""
    from pas.population.store import PopulationStore

    store = PopulationStore(args.store)
    if args.person not in store:
        raise UsageError(f"--person {args.person}: not in the store {args.store} ({len(store)} people)")
    vector = store[args.person]
    vector = vector.for_weights_of(model) if args.allow_other_weights else vector
    vector.check_model(model)
    if data is not None:
        vector.check_bank(data.bank, allow_other=args.allow_other_items)
    return vector
