"""Exported control vectors, measured: where llama.cpp should add a pas offset, and whether llama.cpp itself agrees.

    python benchmarks/export_llamacpp.py [--person CASE] [--items N] [--threads N] [--json PATH]

For each vector, the test items' answers under (the vectors: constant PAS vectors, since a gated vector has
no control-vector form: the trait poles E+ and N+ as constant PAS fits of the pole's answer sheet on the short
form, :func:`pas.space.poles.pole_sheet`, and one person's constant PAS vector fitted on their 120 known answers):

- ``pas``: pas's own steering (head offsets after attention, at the vector's positions);
- ``torch-output`` / ``torch-input``: the exported control vector applied the way llama.cpp applies it (added to
  a block's output at every position; :func:`pas.steer.hooks.add_block_outputs`), in torch, for both layer
  mappings (:data:`pas.export.llamacpp.MAPPINGS`): this chooses the mapping;
- ``llama.cpp-output`` / ``llama.cpp-input``: the exported file in llama.cpp itself, on the embedded GGUF (the
  file pas loads), when llama-cpp-python is installed (:mod:`pas.export.runtime`).

Reported, per vector: each variant's answer agreement with ``pas`` and with its own runtime's unsteered
answers; the shift of the mean answer per domain from the unsteered answers of the same runtime, and the
correlation of those five shifts (and of the items' expected-answer shifts) with pas's. Unsteered, transformers vs
llama.cpp: the quantisation reference. Every score uses the same prompts and letters (pas's own).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pas.core.data import DOMAINS, Subject, load_papi
from pas.core.models import embedded_gguf_path, load_model
from pas.eval.report import machine_info
from pas.export.llamacpp import MAPPINGS, to_control_vector, write_control_vector
from pas.export.runtime import LlamaCppScorer, runtime_missing
from pas.fit.align import fit_subject
from pas.fit.config import PASConfig
from pas.score.scorer import ItemScorer, OptionDistribution, score_texts
from pas.space.poles import pole_sheet
from pas.steer.hooks import add_block_outputs

from common import add_run_args, apply_threads, finish

POLES = ("E+", "N+")


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


def run(args: argparse.Namespace) -> dict:
    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    scorer = ItemScorer(model, tok, data.bank)
    ids = list(data.bank.test_ids)[: args.items]
    domains = np.array([data.bank.by_id[i].domain for i in ids])
    texts = scorer.texts(ids)
    t0 = time.perf_counter()
    person = data.subjects[0] if args.person is None else next(s for s in data.subjects if s.case == args.person)
    constant = PASConfig(learn=False)
    vectors = {}
    for pole in POLES:  # the pole as a person who answers its sheet, fitted by constant PAS
        sheet = {i: int(v) for i, v in pole_sheet(data.bank, pole).items()}
        vectors[pole] = fit_subject(model, Subject(pole, sheet, bank=data.bank), constant, scorer=scorer,
                                    progress=False)[0]
    vectors[f"person {person.case} (pas)"] = fit_subject(model, person, constant, scorer=scorer, progress=False)[0]
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
        own = scorer.score(ids, steering=vector)
        row: dict = {"pas_agreement_with_unsteered": round(float((own.answers == base.answers).mean()), 4)}
        for mapping in MAPPINGS:
            cv = to_control_vector(vector, model, mapping=mapping)
            with add_block_outputs(model, cv.residual(len(vector.offsets))):
                emulated = score_texts(model, tok, texts, letter_ids=scorer.letter_ids)
            row[f"torch-{mapping}"] = _compare(emulated, base, own, base, domains)
            if cpp is not None:
                path = write_control_vector(cv, out / f"{name.split()[0]}-{mapping}.gguf", overwrite=True)
                cpp.set_control_vector(cv)
                steered = cpp.score(prompts, scorer.letter_ids)
                cpp.set_control_vector(None)
                row[f"llama.cpp-{mapping}"] = _compare(steered, cpp_base, own, base, domains)
                row[f"llama.cpp-{mapping}"]["agreement_with_torch_emulation"] = round(
                    float((steered.answers == emulated.answers).mean()), 4)
                row[f"llama.cpp-{mapping}"]["file"] = str(path)
        result[name] = row
        print(f"{name}: done", file=sys.stderr, flush=True)
    means = {m: float(np.mean([result[n][f"torch-{m}"]["agreement_with_pas"] for n in vectors])) for m in MAPPINGS}
    if cpp is not None:
        cpp.close()
    result["mapping_mean_agreement_with_pas"] = {m: round(v, 4) for m, v in means.items()}
    result["better_mapping"] = max(means, key=means.__getitem__)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, ./papi, ../shared/papi)")
    parser.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--person", help="the person whose constant PAS vector is exported (default: the first)")
    parser.add_argument("--items", type=int, default=180, help="the first N test items (default all 180)")
    parser.add_argument("--out", default="results/export-llamacpp", help="folder for the exported .gguf files")
    add_run_args(parser)
    args = parser.parse_args()
    apply_threads(args)
    finish(args, run(args))


if __name__ == "__main__":
    main()
