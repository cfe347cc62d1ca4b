"""Align the embedded model to one real person, save the vector, load it back and chat with it.

    python examples/align_and_chat.py --data-dir ../shared/papi --subject 156978
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from pas import SteeringVector, align_to_subject, load_model, load_papi
from pas.steer.chat import generate
from pas.steer.fluency import chat_strength
from pas.core.data import select_subjects
from pas.score.scorer import ItemScorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    parser.add_argument("--subject", default="156978", help="subject id (case)")
    parser.add_argument("--out", help="where to save the vector (default: a temporary file)")
    parser.add_argument("--strength", type=float, default=None,
                        help="vector multiplier for free chat (default: the largest that keeps chat fluent)")
    parser.add_argument("--prompt", default="How do you feel about large parties?", help="chat prompt")
    args = parser.parse_args()

    data = load_papi(args.data_dir)
    (subject,) = select_subjects(data.subjects, [args.subject])
    model, tok = load_model()
    scorer = ItemScorer(model, tok, data.bank)

    vector = align_to_subject(model, subject, tokenizer=tok, bank=data.bank, scorer=scorer, progress=True)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / f"{subject.case}.safetensors"
    vector.save(out)  # refuses to replace an existing file
    loaded = SteeringVector.load(out)
    print(f"saved and reloaded {loaded} from {out}")

    base = scorer.score(data.bank.test_ids).answers
    steered = scorer.score(data.bank.test_ids, steering=loaded).answers
    print(f"answer counts (1..5) on the 180 held-out items, base: {np.bincount(base, minlength=6)[1:].tolist()}, "
          f"steered: {np.bincount(steered, minlength=6)[1:].tolist()}")
    print("base   :", generate(model, tok, args.prompt, None, max_new_tokens=60))
    strength = args.strength if args.strength is not None else chat_strength(model, tok, loaded)[0]
    print(f"steered (strength {strength:g}):", generate(model, tok, args.prompt, loaded * strength, max_new_tokens=60))


if __name__ == "__main__":
    main()
