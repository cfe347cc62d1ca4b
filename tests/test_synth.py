"""The synthetic stand-in: a Gaussian copula fitted to the real PAPI people looks like them, is seeded, and writes a
PAPI data dir that the loader reads and that says it is synthetic."""

import json

import numpy as np
import pytest
from scipy.special import ndtr
from scipy.stats import multivariate_normal

from pas.core.data import PapiDataError, load_items, load_papi, opposite_key_correlation, parse_subjects
from pas.population.synth import (
    BLOCK,
    GENERATOR,
    _matched_latent,
    fit_copula,
    opposite_key_corr,
    pairwise_corr,
    records,
    stored_matrix,
    synthesize,
)
from pas.population.synth_write import compare, write_synthetic


@pytest.fixture(scope="module")
def copula(papi):
    return fit_copula(papi)


@pytest.fixture(scope="module")
def real(papi):
    return stored_matrix(papi.subjects, papi.bank, papi.encoding)


@pytest.fixture(scope="module")
def sample(copula):
    """20,000 synthetic people: enough that their correlations' own noise (~0.007) is small."""
    return np.concatenate([c.stored for c in synthesize(copula, 20_000, seed=0)])


@pytest.fixture(scope="module")
def written(papi, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "out"
    return write_synthetic(papi, out, 1000, seed=7, chunk=300, check_people=5000)


def test_matches_source_correlations(papi, real, sample):
    r = compare(real, sample, papi.bank, papi.encoding)
    assert r.people_real == 200 and r.people_synthetic == 20_000
    assert r.mean_abs_dr <= 0.05
    assert r.opposite_key_real == pytest.approx(0.43, abs=0.01)
    assert abs(r.opposite_key_synthetic - r.opposite_key_real) <= 0.05 and r.ok
    assert r.max_abs_dmean < 0.05 and r.max_abs_dmissing < 0.01


def test_normal_scores_attenuate(papi, real):
    """The plain normal-scores copula correlates less than the real people: why 'matched' is the default."""
    plain = fit_copula(papi, dependence="normal-scores")
    r = compare(real, np.concatenate([c.stored for c in synthesize(plain, 10_000)]), papi.bank, papi.encoding)
    assert r.opposite_key_synthetic < r.opposite_key_real - 0.03


def test_matrix_checks_agree_with_the_loaders(papi, real, sample):
    """The matrix forms give the data layer's opposite-key correlation and numpy's pairwise Pearson."""
    assert opposite_key_corr(papi.bank, real) == pytest.approx(
        opposite_key_correlation(papi.bank, [s.keyed_scores() for s in papi.subjects]), abs=1e-12)
    ids = [it.id for it in papi.bank.items]
    few = sample[:500]
    as_dicts = [{i: int(v) for i, v in zip(ids, row, strict=True) if v} for row in few]
    assert opposite_key_corr(papi.bank, few) == pytest.approx(opposite_key_correlation(papi.bank, as_dicts), abs=1e-12)
    x = np.where(real == 0, np.nan, real.astype(float))
    a, b = np.nonzero((real == 0).any(0))[0][0], 5  # an item someone skipped, against another
    ok = ~np.isnan(x[:, a]) & ~np.isnan(x[:, b])
    assert pairwise_corr(x)[a, b] == pytest.approx(np.corrcoef(x[ok, a], x[ok, b])[0, 1], abs=1e-12)


def test_matched_latent_inverts_the_exact_cut():
    """The Hermite series' latent correlation gives back rho through the exact bivariate-normal formula."""
    th = np.array([[-2.0, -0.9, 0.3, 1.4], [-np.inf, -1.2, 0.0, 2.1]])  # item 2: nobody answers 1
    probs = np.diff(np.concatenate([np.zeros((2, 1)), ndtr(th), np.ones((2, 1))], 1))
    values = np.arange(1, 6)
    sd = np.sqrt(probs @ values**2 - (probs @ values) ** 2)
    for rho in (-0.6, 0.2, 0.75):
        cov = sum(multivariate_normal.cdf([-s, -t], cov=[[1, rho], [rho, 1]]) - ndtr(-s) * ndtr(-t)
                  for s in th[0] for t in th[1] if np.isfinite(t))
        r = cov / (sd[0] * sd[1])
        got = _matched_latent(np.array([[1.0, r], [r, 1.0]]), th, probs)
        assert got[0, 1] == pytest.approx(rho, abs=2e-3) and abs(r) < abs(rho)


def test_marginals_and_missing_rates(real, sample, copula):
    for j in range(real.shape[1]):
        seen_real, seen_syn = set(real[:, j][real[:, j] > 0]), set(sample[:, j][sample[:, j] > 0])
        assert seen_syn <= seen_real  # never a value the real people did not give
        rare = {v for v in seen_real if (real[:, j] == v).mean() >= 0.01}
        assert rare <= seen_syn
    np.testing.assert_allclose(copula.missing_rate, (real == 0).mean(0))
    assert np.abs((sample == 0).mean(0) - (real == 0).mean(0)).max() < 0.005
    assert ((sample > 0) & (sample <= 5)).sum() + (sample == 0).sum() == sample.size


def test_seeded_and_chunk_free(copula):
    def draw(n, seed, chunk):
        parts = list(synthesize(copula, n, seed, chunk))
        return np.concatenate([p.stored for p in parts]), sum((p.cases for p in parts), ()), parts

    one, cases, parts = draw(BLOCK + 500, 3, 10**6)
    assert len(parts) == 1 and cases[0] == "synthetic-000001" and cases[-1] == f"synthetic-{BLOCK + 500:06d}"
    chunked, chunked_cases, parts = draw(BLOCK + 500, 3, 777)
    assert [len(p.stored) for p in parts][:2] == [777, 777] and [p.start for p in parts][:2] == [0, 777]
    np.testing.assert_array_equal(one, chunked)
    assert chunked_cases == cases
    np.testing.assert_array_equal(draw(BLOCK + 500, 3, 1000)[0], one)  # same seed, same people
    np.testing.assert_array_equal(draw(100, 3, 7)[0], one[:100])  # fewer people: a prefix
    assert (draw(100, 4, 100)[0] != one[:100]).mean() > 0.3  # another seed, other people


def test_records_parse(copula, papi):
    part = next(synthesize(copula, 40, seed=1))
    recs = records(part, papi.bank)
    assert recs[0]["case"] == "synthetic-000001" and recs[0]["synthetic"] is True
    subjects = parse_subjects(recs, papi.bank, encoding=copula.encoding)  # the extra 'synthetic' field is tolerated
    np.testing.assert_array_equal(stored_matrix(subjects, papi.bank, copula.encoding), part.stored)


def test_writes_a_labelled_data_dir(written, papi, copula):
    out = written.out_dir
    assert sorted(written.files) == ["items.csv", "papi.json", "subjects.json", "subjects.parquet"]
    assert all(size > 0 for size in written.files.values()) and written.people == 1000 and written.synthetic
    meta = json.loads((out / "papi.json").read_text())
    assert meta["synthetic"] is True and meta["encoding"] == papi.encoding and meta["generator"] == GENERATOR
    assert meta["seed"] == 7 and meta["people"] == 1000 and meta["source"] == copula.source
    assert meta["check"]["ok"] and meta["check"]["people_synthetic"] == 5000
    assert written.resemblance.ok
    raw = json.loads((out / "subjects.json").read_text())
    assert len(raw) == 1000 and all(r["synthetic"] is True for r in raw) and raw[999]["case"] == "synthetic-001000"
    assert load_items(out).fingerprint() == papi.bank.fingerprint()

    data = load_papi(out)  # the encoding check runs on these 1000 people
    assert len(data.subjects) == 1000 and data.encoding == papi.encoding
    stored = stored_matrix(data.subjects, data.bank, data.encoding)
    assert opposite_key_corr(data.bank, stored) == pytest.approx(0.43, abs=0.05)
    expected = np.concatenate([c.stored for c in synthesize(copula, 1000, seed=7)])
    np.testing.assert_array_equal(stored, expected)


def test_parquet_matches_json(written, papi):
    import pyarrow.parquet as pq

    table = pq.read_table(written.out_dir / "subjects.parquet")
    assert table.column_names == ["case", "synthetic", *(f"i{it.id}" for it in papi.bank.items)]
    assert json.loads(table.schema.metadata[b"papi"])["synthetic"] is True
    rows = table.to_pylist()
    assert rows == json.loads((written.out_dir / "subjects.json").read_text())
    assert len(parse_subjects(rows, papi.bank, encoding=papi.encoding)) == 1000


def test_parquet_only_and_refusals(papi, tmp_path, written):
    out = tmp_path / "p"
    report = write_synthetic(papi, out, 5, formats=("parquet",), check_people=50)
    assert sorted(report.files) == ["items.csv", "papi.json", "subjects.parquet"]
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        write_synthetic(papi, out, 5, check_people=50)
    again = write_synthetic(papi, out, 6, formats="json", overwrite=True, check_people=50)
    assert sorted(p.name for p in out.iterdir()) == ["items.csv", "papi.json", "subjects.json"]
    assert again.people == 6
    (tmp_path / "mine.txt").write_text("not synthetic")
    with pytest.raises(FileExistsError, match="did not make"):
        write_synthetic(papi, tmp_path, 5, overwrite=True, check_people=50)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="people must be a whole number >= 1"):
            write_synthetic(papi, tmp_path / "new", bad)
    with pytest.raises(ValueError, match="formats"):
        write_synthetic(papi, tmp_path / "new", 5, formats=("csv",))
    with pytest.raises(PapiDataError, match="does not exist"):
        write_synthetic(tmp_path / "no-such-data", tmp_path / "new", 5)
    assert not (tmp_path / "new").exists()
    real_copy = tmp_path / "real"
    real_copy.mkdir()
    (real_copy / "papi.json").write_text('{"encoding": "keyed"}')
    with pytest.raises(FileExistsError, match="not synthetic"):
        write_synthetic(papi, real_copy, 5, overwrite=True)
