"""The one run loop: methods x subjects -> run records, optionally kept on disk and resumed.

``pas eval`` and ``benchmarks/pas_vs_dpo.py`` both run through :func:`run_methods`. A record
(:class:`pas.eval.record.RunRecord`) per (method, subject) holds scores, per-item answers, fit and
evaluation seconds, peak memory, method facts and its fingerprint (:mod:`pas.eval.fingerprint`:
the subject's answers, the item bank, the population where the method learns from it, a given
vector, the method's own settings). With ``out`` each record is written to
``OUT/per_subject/<method>/<case>.json`` as soon as it exists, so an interrupted run resumes where
it stopped. ``OUT/settings.json`` keeps the settings every record shares (model, dtype, threads,
prompt, data dir, encoding, version): a run with others is refused. On resume, a record whose
fingerprint differs from what it would be now is recomputed, and that is said on stderr.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pas.core.data import PapiData, Subject
from pas.eval.fingerprint import DataDigests, changes, differences, fingerprint
from pas.eval.methods import METHODS, MethodContext
from pas.eval.record import Reversed, RunRecord
from pas.eval.report import dumps
from pas.eval.transfer import transfer_results, transfer_settings
from pas.score.metric import UnscorableSubject, subject_errors

SETTINGS_FILE = "settings.json"
RECORDS_DIR = "per_subject"
# settings.json of records made before each record kept its own dependencies: these were per-method, not shared
PER_METHOD_SETTINGS = ("reverse_options", "transfer", "pas_config", "gated_config", "dpo_settings")


class SettingsMismatchError(ValueError):
    """Records in an output folder were made under other settings."""


class RecordFileError(ValueError):
    """A file of an output folder cannot be read; the message names it and the fix."""


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

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run_subject(method: str, ctx: MethodContext, subject: Subject,
                fingerprint: dict[str, Any] | None = None) -> RunRecord:
    """One method on one subject -> a record (carrying ``fingerprint``). A subject the method cannot score
    gives a record with ``error`` set. The record is as it reads back from JSON."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    with PeakRSS() as mem:
        t = time.perf_counter()
        try:
            pred = METHODS[method](ctx, subject)
            s = subject_errors(ctx.bank, subject, pred)
            rev = None if pred.reversed is None else subject_errors(ctx.bank, subject, pred.reversed)
        except UnscorableSubject as e:
            return RunRecord(subject.case, error=str(e), fingerprint=fingerprint)
        seconds = time.perf_counter() - t
    reversed_ = None
    if rev is not None and pred.reversed is not None:
        reversed_ = Reversed(rev.composite, rev.domains, rev.expected_composite,
                             pred.reversed.info.get("letter_mass"), [it["answer"] for it in rev.items])
    transfer = {} if ctx.transfer is None else transfer_results(ctx.transfer, ctx.bank, subject, pred)
    record = RunRecord(subject.case, s.composite, s.domains, s.expected_composite, s.expected_domains,
                       s.papi_published, s.n_items, pred.fit_seconds, seconds - pred.fit_seconds, mem.peak / 2**20,
                       pred.info, s.items, reversed_, transfer, fingerprint=fingerprint)
    return RunRecord.from_json(json.loads(dumps(record.to_json())))  # as a resumed run would read it


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordFileError(f"{path} is not readable {what} ({e}); remove that file to recompute it") from None


def read_record(path: Path) -> RunRecord:
    """A record file, or :class:`RecordFileError` naming it and the fix."""
    data = _read_json(path, "JSON")
    try:
        return RunRecord.from_json(data)
    except (KeyError, TypeError, ValueError) as e:
        raise RecordFileError(f"{path} is not a run record (missing or malformed: {e}); remove that file to "
                              "recompute it") from None


def check_out(out: Path) -> None:
    """An output folder, or a clear error where something else is in the way."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the records")
    records = out / RECORDS_DIR
    if records.exists() and not records.is_dir():
        raise ValueError(f"{records} is a file; remove it (records are kept in that folder)")


def check_settings(out: Path, settings: Mapping) -> None:
    """Record ``settings`` in ``out``, or refuse if records there were made under others (only the fields that
    differ are named)."""
    check_out(out)
    path = out / SETTINGS_FILE
    wanted = json.loads(dumps(settings))
    if path.exists():
        had = _read_json(path, "JSON (the settings of the records there)")
        if not isinstance(had, dict):
            raise RecordFileError(f"{path} is not a settings object; remove that file to recompute it")
        keys = sorted(set(wanted) | (set(had) - set(PER_METHOD_SETTINGS)))
        diff = differences(had, wanted, keys)
        if diff:
            raise SettingsMismatchError(f"{out} holds records made with other settings ({'; '.join(diff)}); "
                                        f"use another --out (or remove that folder) so results are not mixed")
        if set(had) == set(wanted):
            return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(settings, indent=1))


def run_settings(model: str | None, dtype: str, prefill: str, ctx: MethodContext, data: PapiData) -> dict:
    """What every record of a run shares: model, dtype, threads, prompt, data dir, encoding, version.

    A method's own settings (its fitting config, reversed options) are in its records' fingerprints.
    """
    import torch

    from pas.core.models import DEFAULT_MODEL
    from pas.core.version import __version__

    return {"model": model or DEFAULT_MODEL, "dtype": dtype, "threads": torch.get_num_threads(), "prefill": prefill,
            "data_dir": str(Path(data.root).resolve()), "encoding": data.encoding, "pas_version": __version__}


def context_settings(ctx: MethodContext) -> dict:
    """The methods' own settings in ``ctx`` (reversed options, PAS, gated and DPO configs), for reports."""
    import dataclasses

    def plain(config: object) -> object:
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) and not isinstance(config, type) else None

    return {"reverse_options": ctx.reverse_options, "transfer": transfer_settings(ctx.transfer),
            "pas_config": plain(ctx.pas_config),
            "gated_config": plain(ctx.gated_config), "dpo_settings": plain(ctx.dpo_settings)}


def record_path(out: Path, method: str, case: str) -> Path:
    return out / RECORDS_DIR / method / f"{case}.json"


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def run_methods(ctx: MethodContext, subjects: Sequence[Subject], methods: Sequence[str], *,
                out: Path | None = None, settings: Mapping | None = None, progress: bool = True,
                on_method_done: Callable[[str, list[RunRecord]], None] | None = None) -> dict[str, list[RunRecord]]:
    """Run (or, with ``out``, resume) every method on every subject; per-method lists of records.

    A kept record is reused only when its fingerprint is what it would be now; otherwise it is
    recomputed, with a note on stderr naming the method, the subject and why. ``on_method_done(method,
    records)`` is called as each method finishes, so a caller can show results before later methods run.
    """
    from tqdm.auto import tqdm

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if out is not None:
        out = Path(out)
        check_settings(out, settings or {})
    digests = DataDigests(ctx.bank, ctx.population)
    records: dict[str, list[RunRecord]] = {}
    for method in methods:
        recs = []
        for subject in tqdm(subjects, desc=method, disable=not progress, leave=False):
            fp = fingerprint(METHODS[method], ctx, subject, digests, settings)
            path = None if out is None else record_path(out, method, subject.case)
            if path is not None and path.exists():
                old = read_record(path)
                why = changes(old.fingerprint, fp) if old.case == subject.case else [f"it is subject {old.case}'s"]
                if not why:
                    recs.append(old)
                    continue
                _note(f"recomputing {method} for subject {subject.case} ({path}): {'; '.join(why)}")
            rec = run_subject(method, ctx, subject, fp)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(dumps(rec.to_json()))
                tmp.replace(path)
            recs.append(rec)
        records[method] = recs
        if on_method_done is not None:
            on_method_done(method, recs)
    return records
