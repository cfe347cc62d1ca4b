"""Exported control vectors, measured: where llama.cpp should add a pas offset, and whether llama.cpp itself agrees.

    python benchmarks/export_llamacpp.py [--person CASE] [--items N] [--mappings M ...] [--threads N] [--json PATH]

The vectors: constant PAS vectors (a gated vector has no control-vector form) of the trait poles E+ and N+ (the
pole as a person who answers its sheet on the short form, :func:`pas.space.poles.pole_sheet`) and of one
person's 120 known answers, each fitted twice: for the answer position only (``last``, pas's default) and for
every position (``all``, as llama.cpp applies a control vector; a coarser strength search,
:data:`CONFIGS`). Each is exported at scale 1, and a ``last``
vector also at the scale :func:`pas.export.calibrate.choose_export_scale` picks on 40 short-form
statements (``pas export --calibrate``). On the 180 test items:

- ``pas``: pas's own steering (head offsets after attention, at the vector's positions);
- ``torch-<mapping>, <scale>``: the exported control vector applied the way llama.cpp applies it (added to a
  block's output at every position; :func:`pas.steer.hooks.add_block_outputs`), in torch, for each layer
  mapping (:data:`pas.export.llamacpp.MAPPINGS`): this chooses the mapping;
- ``llama.cpp-<mapping>, <scale>``: the exported file in llama.cpp itself, on the embedded GGUF (the file pas
  loads), when llama-cpp-python is installed (:mod:`pas.export.runtime`).

Reported, per vector: each variant's answer agreement with ``pas`` and with its own runtime's unsteered
answers; the shift of the mean answer per domain from the unsteered answers of the same runtime, and the
correlation of those five shifts (and of the items' expected-answer shifts) with pas's. Unsteered, transformers vs
llama.cpp: the quantisation reference. Every score uses the same prompts and letters (pas's own).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pas.core.data import DOMAINS, Subject, load_papi
from pas.core.models import embedded_gguf_path, load_model
from pas.eval.report import machine_info
from pas.export.calibrate import choose_export_scale
from pas.export.llamacpp import MAPPINGS, to_control_vector, write_control_vector
from pas.export.runtime import LlamaCppScorer, runtime_missing
from pas.fit.align import fit_subject
from pas.fit.config import PASConfig
from pas.score.scorer import ItemScorer, OptionDistribution, score_texts
from pas.space.poles import pole_sheet
from pas.steer.hooks import add_block_outputs
from pas.steer.vector import SteeringVector

from common import add_data_model_args, run_and_finish

POLES = ("E+", "N+")
# every-position fits score every prompt position per trial: a coarser strength search (7 trials, not 14)
CONFIGS = {"last": PASConfig(learn=False),
           "all": PASConfig(learn=False, positions="all", alpha_grid=(0.0, 0.5, 2.0, 8.0, 32.0), refine_steps=2)}


def _compare(steered: OptionDistribution, base: OptionDistribution, reference: OptionDistribution,
             reference_base: OptionDistribution, domains: np.ndarray) -> dict:
    """Agreement of ``steered`` with ``reference`` (pas) and with its own ``base``; per-domain mean-answer shifts
    from its own base, and their correlation with the reference's shifts."""
    def shifts(s: OptionDistribution, b: OptionDistribution) -> np.ndarray:
        return np.array([(s.answers[domains == d] - b.answers[domains == d]).mean() for d in DOMAINS])

    mine, theirs = shifts(steered, base), shifts(reference, reference_base)
    item_mine, item_theirs = steered.expected - base.expected, reference.expected - reference_base.expected
    return {"agreement_with_pas": round(float((steered.answers == reference.answers).mean()), 4),
            "agreement_with_unsteered": round(float((steered.answers == base.answers).mean()), 4),
            "domain_shifts": dict(zip(DOMAINS, np.round(mine, 3).tolist(), strict=True)),
            "domain_shift_correlation": _corr(mine, theirs), "item_shift_correlation": _corr(item_mine, item_theirs)}


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    return None if a.std() == 0 or b.std() == 0 else round(float(np.corrcoef(a, b)[0, 1]), 3)


def _fit_vectors(data, model, scorer, person: Subject, poles: list[str]) -> dict[str, SteeringVector]:
    """Constant PAS vectors of the poles' answer sheets and of ``person``: fitted for the answer position only
    (``last``, pas's default) and for every position (``all``, as llama.cpp applies a control vector)."""
    subjects = {pole: Subject(pole, {i: int(v) for i, v in pole_sheet(data.bank, pole).items()}, bank=data.bank)
                for pole in poles}
    subjects[f"person {person.case}"] = person
    return {f"{name} ({positions})": fit_subject(model, subject, CONFIGS[positions], scorer=scorer, progress=False)[0]
            for name, subject in subjects.items() for positions in CONFIGS}


def _exports(vector: SteeringVector, scorer: ItemScorer, mapping: str) -> dict[str, tuple[float, str]]:
    """The scales each vector is exported at: 1, and for an answer-position vector also the scale
    :func:`choose_export_scale` picks on the short-form statements."""
    out = {"scale 1": (1.0, "as fitted")}
    if vector.positions == "last":
        choice = choose_export_scale(vector, scorer, mapping=mapping)
        out["calibrated"] = (choice.scale, choice.describe())
    return out


def run(args: argparse.Namespace) -> dict:
    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    scorer = ItemScorer(model, tok, data.bank)
    ids = list(data.bank.test_ids)[: args.items]
    domains = np.array([data.bank.by_id[i].domain for i in ids])
    texts = scorer.texts(ids)
    t0 = time.perf_counter()
    person = data.subjects[0] if args.person is None else next(s for s in data.subjects if s.case == args.person)
    vectors = _fit_vectors(data, model, scorer, person, args.poles)
    result: dict = {"machine": machine_info(), "items": len(ids), "gguf": str(embedded_gguf_path()),
                    "vectors_seconds": round(time.perf_counter() - t0, 1)}
    base = scorer.score(ids)
    cpp = None
    missing = runtime_missing()
    if missing is None:
        cpp = LlamaCppScorer(embedded_gguf_path(), threads=args.threads)
        prompts = [tok.encode(t, add_special_tokens=False) for t in texts]
        cpp_base = cpp.score(prompts, scorer.letter_ids)
        result["unsteered_transformers_vs_llama.cpp"] = round(float((cpp_base.answers == base.answers).mean()), 4)
    else:
        result["llama.cpp"] = f"skipped: {missing}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, vector in vectors.items():
        if not bool(vector.offsets.any()):  # the strength search chose 0: nothing to export
            result[name] = {"skipped": "the fitted strength is 0 (the vector steers nothing)"}
            continue
        own = scorer.score(ids, steering=vector)
        row: dict = {"pas_agreement_with_unsteered": round(float((own.answers == base.answers).mean()), 4)}
        for mapping in args.mappings:
            for label, (scale, why) in _exports(vector, scorer, mapping).items():
                cv = to_control_vector(vector, model, mapping=mapping, scale=scale)
                key = f"{mapping}, {label}"
                with add_block_outputs(model, cv.residual(len(vector.offsets))):
                    emulated = score_texts(model, tok, texts, letter_ids=scorer.letter_ids)
                row[f"torch-{key}"] = {**_compare(emulated, base, own, base, domains), "scale": scale, "why": why}
                if cpp is not None:
                    stem = f"{name.split()[0]}-{vector.positions}-{mapping}-{label.split()[0]}"
                    path = write_control_vector(cv, out / f"{stem}.gguf", overwrite=True)
                    cpp.set_control_vector(cv)
                    steered = cpp.score(prompts, scorer.letter_ids)
                    cpp.set_control_vector(None)
                    row[f"llama.cpp-{key}"] = {**_compare(steered, cpp_base, own, base, domains), "scale": scale,
                                               "agreement_with_torch_emulation": round(
                                                   float((steered.answers == emulated.answers).mean()), 4),
                                               "file": str(path)}
        result[name] = row
        print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if args.json:  # kept as it grows: a long run that stops keeps what it measured
            Path(args.json).write_text(json.dumps(result, indent=1))
    if cpp is not None:
        cpp.close()
    for positions in ("last", "all"):
        label = "calibrated" if positions == "last" else "scale 1"
        means = {m: float(np.mean([result[n][f"torch-{m}, {label}"]["agreement_with_pas"]
                                   for n, v in vectors.items() if v.positions == positions and "skipped" not in
                                   result[n]] or [np.nan]))
                 for m in args.mappings}
        result[f"mapping_mean_agreement_with_pas ({positions}, {label})"] = {m: round(v, 4) for m, v in means.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_model_args(parser)
    parser.add_argument("--person", help="the person whose constant PAS vector is exported (default: the first)")
    parser.add_argument("--items", type=int, default=180, help="the first N test items (default all 180)")
    parser.add_argument("--poles", nargs="+", default=list(POLES), help="trait poles to export (default E+ N+)")
    parser.add_argument("--mappings", nargs="+", default=list(MAPPINGS), choices=list(MAPPINGS),
                        help="layer mappings to export with (default: all)")
    parser.add_argument("--out", default="results/export-llamacpp", help="folder for the exported .gguf files")
    run_and_finish(parser, run)


if __name__ == "__main__":
    main()
