"""Measuring trait poles and types (measurement only, for ``benchmarks/traits.py`` and ``benchmarks/keying.py``).

The prompting baseline (a pole's or type's system prompt), the targets' measures (on-/off-target shift,
type signs), how well a model's answer position separates keying, and the pole and type runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pas.core.arch import layout
from pas.core.data import DOMAINS
from pas.fit.activations import answer_states
from pas.score.scorer import ItemScorer
from pas.space.poles import TYPES, parse_pole, type_poles, type_vector
from pas.steer.vector import SteeringVector

POLE_PROMPTS: dict[str, str] = {  # the prompting baseline BIG5-CHAT and Machine Mindset compare against
    "O+": "You are a very open person: curious, imaginative, and drawn to art, ideas and new experiences.",
    "O-": "You are a very conventional person: practical, down-to-earth, and uninterested in art, abstract ideas "
          "or novelty.",
    "C+": "You are a very conscientious person: organised, disciplined, careful and reliable.",
    "C-": "You are a very unconscientious person: disorganised, careless, impulsive and unreliable.",
    "E+": "You are a very extraverted person: outgoing, talkative, energetic and fond of company.",
    "E-": "You are a very introverted person: quiet, reserved, and happiest alone.",
    "A+": "You are a very agreeable person: kind, trusting, cooperative and considerate of others.",
    "A-": "You are a very disagreeable person: critical, suspicious, competitive and blunt with others.",
    "N+": "You are a very neurotic person: anxious, easily upset, moody and often stressed.",
    "N-": "You are a very emotionally stable person: calm, relaxed, and rarely upset or worried.",
}
_LETTER_WORDS = {"E": "extraverted", "I": "introverted", "S": "sensing", "N": "intuitive", "T": "thinking",
                 "F": "feeling", "J": "judging", "P": "perceiving"}


def type_prompt(mbti: str) -> str:
    """The prompting baseline for a type."""
    t = mbti.strip().upper()
    type_poles(t)
    return f"Your MBTI personality type is {t} ({', '.join(_LETTER_WORDS[c] for c in t)})."


def on_off_target(shift: Mapping[str, float], pole: str) -> tuple[float, float]:
    """``(on, off)``: the pole's own domain shift in its intended direction, and the mean |shift| of the
    other four domains."""
    domain, sign = parse_pole(pole)
    return sign * shift[domain], float(np.mean([abs(v) for d, v in shift.items() if d != domain]))


def type_signs(shift: Mapping[str, float], mbti: str) -> dict[str, bool]:
    """Per mapped domain of the type: did the assessed score move in the type's direction?"""
    return {parse_pole(p)[0]: parse_pole(p)[1] * shift[parse_pole(p)[0]] > 0 for p in type_poles(mbti)}


def keying_accuracy(scorer: ItemScorer, layers: Sequence[int] | None = None, *,
                    features: str = "heads") -> dict[int, dict[str, float]]:
    """Can this model's answer position tell a domain's +keyed statements from its -keyed ones?

    Per layer (0-based; default every third from a quarter of the depth, and the last) and domain: the
    accuracy, on the domain's statements among the other 180 items, of a logistic regression (standardised
    features, C = 0.1) fitted on its short-form statements' keying (no one's answers). ``features``: ``"heads"`` (the
    layer's head outputs, what a pole's gates read) or ``"residual"`` (the layer's output). About 0.5
    means a pole of that domain has nothing to gate on at that layer.
    """
    from sklearn.linear_model import LogisticRegression

    if features not in ("heads", "residual"):
        raise ValueError(f"features must be 'heads' or 'residual', not {features!r}")
    bank = scorer.bank
    lay = layout(scorer.model)
    n = lay.n_layers
    layers = sorted({*range(n // 4, n, 3), n - 1}) if layers is None else list(layers)
    if any(not 0 <= layer < n for layer in layers):
        raise ValueError(f"layers must be in 0..{n - 1}; got {layers}")
    train, test = answer_states(scorer, bank.train_ids), answer_states(scorer, bank.test_ids)

    def rows(states, layer: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
        by_id = bank.by_id
        pick = [k for k, i in enumerate(states.item_ids) if by_id[i].domain == domain]
        x = states.heads[pick, layer].flatten(1) if features == "heads" else states.residual[pick, layer + 1]
        return x.numpy().astype(np.float64), np.array([by_id[states.item_ids[k]].keyed == "+" for k in pick])

    out: dict[int, dict[str, float]] = {}
    for layer in layers:
        out[layer] = {}
        for d in DOMAINS:
            (xa, ya), (xb, yb) = rows(train, layer, d), rows(test, layer, d)
            if len(set(ya)) < 2 or not len(yb):
                raise ValueError(f"the short form needs +keyed and -keyed {d} statements, and the rest some {d}")
            mean, scale = xa.mean(0), xa.std(0) + 1e-6
            clf = LogisticRegression(C=0.1, max_iter=5000).fit((xa - mean) / scale, ya)
            out[layer][d] = float(clf.score((xb - mean) / scale, yb))
    return out


def measure_poles(scorer: ItemScorer, poles: Mapping[str, SteeringVector], ids: Sequence[int],
                  strengths: Sequence[float], *, prompts: bool = True, fluency: bool = True,
                  progress: bool = False) -> dict:
    """The controllability picture on items ``ids``: per pole, the assessed domain shifts from the unsteered
    model at each strength, the perplexity ratio on neutral chat replies there, the largest strength ``pas
    chat`` would use (ratio <= 1.3) with its shifts, and the prompting baseline's shifts."""
    from tqdm.auto import tqdm

    from pas.score.assess import assess
    from pas.steer.fluency import chat_strength, perplexity_ratio

    model, tok = scorer.model, scorer.tokenizer
    base = assess(scorer, ids)
    out: dict = {"base": base.domains, "base_expected": base.domains_expected, "poles": {}}
    for name, vec in tqdm(poles.items(), desc="poles", disable=not progress):
        row: dict = {"strengths": {}}
        seen = {s: assess(scorer, ids, steering=vec * s) for s in strengths}
        for s, a in seen.items():
            row["strengths"][s] = {"shift": a.shift(base), "shift_expected": a.shift(base, expected=True),
                                   "perplexity": perplexity_ratio(model, tok, vec * s) if fluency else None}
        if fluency:
            s_chat, ratios = chat_strength(model, tok, vec)
            a = seen[s_chat] if s_chat in seen else assess(scorer, ids, steering=vec * s_chat)
            row["chat"] = {"strength": s_chat, "ratios": ratios, "shift": a.shift(base)}
        if prompts:
            row["prompted"] = assess(scorer, ids, system=POLE_PROMPTS[name]).shift(base)
        out["poles"][name] = row
    return out


def measure_types(scorer: ItemScorer, poles: Mapping[str, SteeringVector], ids: Sequence[int],
                  strength: float = 1.0, *, prompts: bool = False, progress: bool = False) -> dict:
    """Per MBTI type: the assessed domain shifts of its vector (sum of its poles) at ``strength``, whether
    each mapped domain moved the intended way, and optionally the prompting baseline's."""
    from tqdm.auto import tqdm

    from pas.score.assess import assess

    base = assess(scorer, ids)
    out: dict = {"strength": strength, "types": {}}
    for mbti in tqdm(TYPES, desc="types", disable=not progress):
        shift = assess(scorer, ids, steering=type_vector(scorer, mbti, poles) * strength).shift(base)
        row = {"shift": shift, "signs": type_signs(shift, mbti)}
        if prompts:
            p = assess(scorer, ids, system=type_prompt(mbti)).shift(base)
            row.update(prompted=p, prompted_signs=type_signs(p, mbti))
        out["types"][mbti] = row
    return out
