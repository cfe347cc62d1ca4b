"""The typed run record (written and read by the same class) and the honest intervals of the summaries."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pas.eval.record import Reversed, RunRecord
from pas.eval.report import (
    COMPOSITE_RANGE,
    MIN_N_FOR_INTERVAL,
    bootstrap_ci,
    compact_table,
    dumps,
    markdown_table,
    summarize,
)

OLD_KEYS = {"case", "composite", "domains", "expected_composite", "expected_domains", "papi_published", "n_items",
            "fit_seconds", "eval_seconds", "peak_rss_mb", "info", "items"}


def _record(case: str, composite: float, **kw) -> RunRecord:
    domains = {d: composite / 5 for d in "OCEAN"}
    item = {"item": 1, "domain": "O", "keyed": "+", "response": 3, "answer": 3, "expected": 3.0}
    return RunRecord(case, composite, domains, composite, dict(domains), composite, 1, 1.0, 2.0, 10.0,
                     {"letter_mass": 0.9}, [item], **kw)


def test_record_round_trips_with_the_keys_records_always_had():
    rec = _record("a", 2.5, reversed=Reversed(2.7, {"O": 0.5}, 2.6, 0.8, [3]), fingerprint={"subject": "x"})
    text = dumps(rec.to_json())
    assert RunRecord.from_json(json.loads(text)) == rec
    assert set(json.loads(text)) == OLD_KEYS | {"reversed", "fingerprint"}
    skipped = RunRecord("b", error="subject b: no answers")
    assert skipped.skipped and skipped.to_json() == {"case": "b", "error": "subject b: no answers"}
    assert RunRecord.from_json(skipped.to_json()) == skipped


def test_an_old_record_reads_back():
    """A record written before this class (no fingerprint; NaN written as null) is read, not refused."""
    old = {k: v for k, v in _record("a", 2.0).to_json().items()}
    old["expected_composite"] = None
    rec = RunRecord.from_json(old)
    assert rec.fingerprint is None and math.isnan(rec.expected_composite) and rec.composite == 2.0
    with pytest.raises(KeyError):
        RunRecord.from_json({"case": "a"})


def test_bootstrap_interval_is_seeded_clipped_and_absent_for_few_people():
    values = np.linspace(0.0, 1.0, 12) ** 4  # near the floor
    m, lo, hi = bootstrap_ci(values, bounds=COMPOSITE_RANGE)
    assert (m, lo, hi) == bootstrap_ci(values, bounds=COMPOSITE_RANGE)  # deterministic
    assert COMPOSITE_RANGE[0] <= lo < m < hi <= COMPOSITE_RANGE[1]
    assert bootstrap_ci(values, bounds=(0.2, 20.0))[1] == 0.2  # clipped to the range
    few = bootstrap_ci([0.1, 5.0, 9.0])
    assert few[0] == pytest.approx(14.1 / 3) and math.isnan(few[1]) and math.isnan(few[2])
    # by hand: resample means' 2.5th and 97.5th percentiles
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), size=(2000, len(values)))].mean(1)
    assert lo == pytest.approx(np.quantile(means, 0.025)) and hi == pytest.approx(np.quantile(means, 0.975))


def test_summaries_show_intervals_from_ten_people_on():
    three = {"always-3": [_record(c, 3.0 + i / 10) for i, c in enumerate("abc")],
             "m": [_record(c, 1.0 + i) for i, c in enumerate("abc")]}
    s = summarize(three, references=("always-3",))["m"]
    assert all(math.isnan(x) for x in s["composite_ci"]), "a t-interval on 3 people reaches below 0"
    assert all(math.isnan(x) for x in s["vs_always-3"]["ci"]) and not math.isnan(s["vs_always-3"]["wilcoxon_p"])
    cases = [f"p{i}" for i in range(MIN_N_FOR_INTERVAL)]
    ten = {"always-3": [_record(c, 3.0) for c in cases], "m": [_record(c, 0.1 * i) for i, c in enumerate(cases)]}
    s = summarize(ten, references=("always-3",))["m"]
    lo, hi = s["composite_ci"]
    assert 0 <= lo < s["composite"] < hi <= 20
    dlo, dhi = s["vs_always-3"]["ci"]
    assert dlo < s["vs_always-3"]["mean"] < dhi < 0
    assert f"{s['composite']:.2f} ({lo:.2f}–{hi:.2f})" in compact_table(summarize(ten))
    assert f"({dlo:+.2f}…{dhi:+.2f}, p=" in markdown_table(summarize(ten, references=("always-3",)), ("always-3",))


def test_compact_table_reads_for_a_newcomer():
    recs = {"always-3": [_record(c, 3.0) for c in "ab"], "m": [_record(c, 2.5) for c in "ab"],
            "x": [RunRecord("a", error="subject a: nothing"), RunRecord("b", error="subject b: nothing")]}
    table = compact_table(summarize(recs))
    lines = table.splitlines()
    assert lines[0] == "| method | composite | Δ vs always-3 | fit s/person |"
    assert lines[2] == "| always-3 | 3.00 | — | 1.0 |" and lines[3] == "| m | 2.50 | -0.50 | 1.0 |"
    assert lines[4] == "| x | — | — | — |"
    assert "lower is better; Δ < 0 means better than always-3" in table and "x: subject a skipped" in table
