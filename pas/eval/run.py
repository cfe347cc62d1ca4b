"""The one run loop: methods x subjects -> records, optionally kept on disk and resumed.

``pas eval`` and ``benchmarks/pas_vs_dpo.py`` both run through :func:`run_methods`.
A record is a plain dict per (method, subject): scores, per-item answers, fit and
evaluation seconds, peak memory and method facts. With ``out`` each record is written
to ``OUT/per_subject/<method>/<case>.json`` as soon as it exists, so an interrupted run
resumes where it stopped; the settings the records were made under are kept in
``OUT/settings.json`` and a run with other settings is refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pas.core.data import Subject
from pas.score.metric import UnscorableSubject, score_subject
from pas.eval.methods import METHODS, MethodContext
from pas.eval.report import dumps

SETTINGS_FILE = "settings.json"


class SettingsMismatchError(ValueError):
    """Records in an output folder were made under other settings."""


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> PeakRSS:
        import psutil

        self._proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run_subject(method: str, ctx: MethodContext, subject: Subject) -> dict:
    """One method on one subject -> a record. A subject the method cannot score gives ``{case, error}``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    with PeakRSS() as mem:
        t = time.perf_counter()
        try:
            pred = METHODS[method](ctx, subject)
            s = score_subject(ctx.bank, subject, pred)
            rev = None if pred.reversed is None else score_subject(ctx.bank, subject, pred.reversed)
        except UnscorableSubject as e:
            return {"case": subject.case, "error": str(e)}
        seconds = time.perf_counter() - t
    record = {"case": subject.case, "composite": s.composite, "domains": s.domains,
              "expected_composite": s.expected_composite, "expected_domains": s.expected_domains,
              "papi_published": s.papi_published, "n_items": s.n_items,
              "fit_seconds": pred.fit_seconds, "eval_seconds": seconds - pred.fit_seconds,
              "peak_rss_mb": mem.peak / 2**20, "info": pred.info, "items": s.items}
    if rev is not None:
        record["reversed"] = {"composite": rev.composite, "domains": rev.domains,
                              "expected_composite": rev.expected_composite,
                              "letter_mass": pred.reversed.info.get("letter_mass"),
                              "answers": [it["answer"] for it in rev.items]}
    return record


def check_settings(out: Path, settings: Mapping) -> None:
    """Record ``settings`` in ``out``, or refuse if records there were made under others."""
    path = out / SETTINGS_FILE
    wanted = json.loads(dumps(settings))
    if path.exists():
        had = json.loads(path.read_text())
        diff = {k: (had.get(k), wanted.get(k)) for k in sorted(set(had) | set(wanted)) if had.get(k) != wanted.get(k)}
        if diff:
            shown = "; ".join(f"{k}: there {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise SettingsMismatchError(f"{out} holds records made with other settings ({shown}); "
                                        f"use another --out (or remove that folder) so results are not mixed")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(settings, indent=1))


def run_settings(model: str | None, dtype: str, prefill: str, ctx: MethodContext, data) -> dict:
    """What records must share to be compared or resumed together: model, dtype, threads, prompt, configs, data."""
    import dataclasses

    import torch

    from pas import __version__
    from pas.core.models import DEFAULT_MODEL

    return {"model": model or DEFAULT_MODEL, "dtype": dtype, "threads": torch.get_num_threads(), "prefill": prefill,
            "reverse_options": ctx.reverse_options,
            "pas_config": dataclasses.asdict(ctx.pas_config) if ctx.pas_config else None,
            "gated_config": dataclasses.asdict(ctx.gated_config) if ctx.gated_config else None,
            "dpo_settings": dataclasses.asdict(ctx.dpo_settings) if ctx.dpo_settings else None,
            "data_dir": str(Path(data.root).resolve()), "encoding": data.encoding, "pas_version": __version__}


def _record_path(out: Path, method: str, case: str) -> Path:
    return out / "per_subject" / method / f"{case}.json"


def run_methods(ctx: MethodContext, subjects: Sequence[Subject], methods: Sequence[str], *,
                out: Path | None = None, settings: Mapping | None = None, progress: bool = True,
                on_method_done=None) -> dict[str, list[dict]]:
    """Run (or, with ``out``, resume) every method on every subject; per-method lists of records.

    ``on_method_done(method, records)`` is called as each method finishes, so a caller can
    show results before later methods run.
    """
    from tqdm.auto import tqdm

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if out is not None:
        check_settings(Path(out), settings or {})
    records: dict[str, list[dict]] = {}
    for method in methods:
        recs = []
        for subject in tqdm(subjects, desc=method, disable=not progress, leave=False):
            path = None if out is None else _record_path(Path(out), method, subject.case)
            if path is not None and path.exists():
                recs.append(json.loads(path.read_text()))
                continue
            rec = run_subject(method, ctx, subject)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(dumps(rec))
                tmp.replace(path)
            recs.append(rec)
        records[method] = recs
        if on_method_done is not None:
            on_method_done(method, recs)
    return records
