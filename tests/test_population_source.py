"""People as input at any size (pas.population.source): chunked reading, the check before fitting, bad rows."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pas.population.source as source_module
from pas.cli.main import main
from pas.core.data import PapiDataError, parse_columns, parse_subjects
from pas.population.source import open_people


def _records(data_dir):
    return json.loads((data_dir / "subjects.json").read_text())


def _data_dir(data_dir, tmp_path, records=None, *, name="subjects.parquet", row_group=64):
    """A data dir of the real items with ``records`` (default: all real people) as parquet."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(data_dir / "items.csv", root / "items.csv")
    table = pa.Table.from_pylist(_records(data_dir) if records is None else records)
    pq.write_table(table, root / name, row_group_size=row_group)
    return root


def _full(subjects):
    """What a subject is: its case, responses and missing items (the description is not read here)."""
    return [(s.case, dict(s.responses), s.missing) for s in subjects]


def test_parquet_in_chunks_gives_the_json_loaders_subjects(papi, data_dir, tmp_path):
    root = _data_dir(data_dir, tmp_path)
    people = open_people(root, chunk=37)
    assert people.rows() == 200 and people.where.kind == "parquet"
    checked = people.check()
    assert (checked.rows, checked.people, checked.bad, len(checked)) == (200, 200, (), 200)
    assert _full(checked) == _full(papi.subjects)
    json_people = open_people(data_dir, chunk=50)
    assert json_people.rows() is None and _full(json_people.check()) == _full(papi.subjects)


def test_fast_path_and_full_check_agree(papi, data_dir):
    """Plain ints are checked a chunk at a time; the same values as floats go key by key: the same subjects."""
    records = _records(data_dir)[:40]
    as_floats = [{k: float(v) if k[:1] == "i" and k[1:].isdigit() else v for k, v in r.items()} for r in records]
    expected = _full(papi.subjects[:40])
    assert _full(parse_subjects(as_floats, papi.bank)) == expected
    columns = {k: [r[k] for r in as_floats] for k in as_floats[0]}
    parsed = parse_columns(columns, papi.bank)
    assert parsed.bad == [] and _full(parsed.subjects) == expected


def test_reading_holds_one_chunk(data_dir, tmp_path, monkeypatch):
    """The first person comes after one chunk is read; the file is read in row-count / chunk batches."""
    root = _data_dir(data_dir, tmp_path, row_group=50)
    read = []
    original = source_module.parse_columns
    monkeypatch.setattr(source_module, "parse_columns", lambda cols, *a, **k: read.append(len(cols["case"]))
                        or original(cols, *a, **k))
    checked = open_people(root, chunk=50).check()
    assert read == [50, 50, 50, 50]
    read.clear()
    people = iter(checked)
    first = next(people)
    assert read == [50] and first.case == str(_records(data_dir)[0]["case"])
    assert len(list(people)) == 199 and read == [50, 50, 50, 50]
    read.clear()
    assert len(list(checked.select(first=60))) == 60 and read == [50, 50]


@pytest.mark.parametrize("value, kind", [(7, "parquet"), ("x", "json"), (None, "json")])
def test_a_bad_answer_names_the_case_and_the_fix(papi, data_dir, tmp_path, value, kind):
    records = _records(data_dir)
    records[130]["i17"] = value
    if kind == "parquet":
        root = _data_dir(data_dir, tmp_path, records)
    else:
        root = tmp_path / "data"
        shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("original"))
        (root / "subjects.json").write_text(json.dumps(records))
    with pytest.raises(PapiDataError) as refused:  # the whole-input parser's error for this record ...
        parse_subjects(records, papi.bank, str(open_people(root).where.paths[0]))
    case = records[130]["case"]
    with pytest.raises(PapiDataError, match=rf"^bad row 130 \(case {case}\): .*subject {case}: item i17: .*; fix the "
                                            r"row, or pass --skip-bad") as e:
        open_people(root, chunk=64).check()
    assert str(refused.value) in str(e.value)  # ... is the chunked reader's, with the row and the fix
    checked = open_people(root, chunk=64).check(skip_bad=True)
    assert (checked.people, [(b.row, b.case) for b in checked.bad]) == (199, [(130, str(case))])
    assert str(case) not in {s.case for s in checked} and len(list(checked)) == 199


def test_duplicate_case_across_chunks_and_a_missing_case(data_dir, tmp_path):
    records = _records(data_dir)
    records[150]["case"] = records[10]["case"]  # a later chunk repeats an earlier case id
    records[20]["case"] = None
    root = _data_dir(data_dir, tmp_path, records)
    with pytest.raises(PapiDataError, match=r"^bad row 20: .*record 20 has 'case' None"):
        open_people(root, chunk=64).check()
    checked = open_people(root, chunk=64).check(skip_bad=True)
    assert [(b.row, b.case) for b in checked.bad] == [(20, None), (150, str(records[10]["case"]))]
    assert "duplicate subject id" in checked.bad[1].reason
    report = checked.write_bad_rows(tmp_path / "bad.jsonl")
    assert [json.loads(line) for line in report.read_text().splitlines()] == [
        {"row": 20, "case": None, "reason": checked.bad[0].reason},
        {"row": 150, "case": str(records[10]["case"]), "reason": checked.bad[1].reason}]
    assert checked.people == 198 == len(list(checked))


def test_an_unknown_item_key_is_a_bad_row(data_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("original"))
    records = _records(data_dir)
    records[30]["i301"] = 3
    (root / "subjects.json").write_text(json.dumps(records))
    checked = open_people(root, chunk=64).check(skip_bad=True)
    assert [(b.row, b.case) for b in checked.bad] == [(30, str(records[30]["case"]))]
    assert "unknown item 'i301'" in checked.bad[0].reason


def test_hub_id_path_streams_with_datasets(papi, data_dir, tmp_path, monkeypatch):
    """``hf:<id>`` goes to datasets.load_dataset(..., streaming=True); a local folder of parquet shards takes the
    same path without network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hub = tmp_path / "hub"
    hub.mkdir()
    table = pa.Table.from_pylist(_records(data_dir))
    pq.write_table(table.slice(0, 120), hub / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(120), hub / "train-00001-of-00002.parquet")
    people = open_people(data_dir, f"hf:{hub}", chunk=64)
    assert people.where.kind == "hub" and people.rows() is None
    assert _full(people.check()) == _full(papi.subjects)
    folder = open_people(data_dir, hub, chunk=64)  # the same shards as a folder: read with pyarrow
    assert folder.where.kind == "parquet" and folder.rows() == 200 and _full(folder.check()) == _full(papi.subjects)


def test_selection_and_the_encoding_check(papi, data_dir, tmp_path):
    checked = open_people(data_dir).check()
    cases = [papi.subjects[7].case, papi.subjects[2].case]
    assert [s.case for s in checked.select(cases)] == cases
    with pytest.raises(PapiDataError, match="unknown subject ids"):
        checked.select(["nobody"])
    with pytest.raises(PapiDataError, match=">= 1"):
        checked.select(first=0)
    with pytest.raises(PapiDataError, match="declared encoding 'responses'"):
        open_people(data_dir, encoding="responses").check()
    with pytest.raises(PapiDataError, match="does not exist"):
        open_people(data_dir, tmp_path / "nothing.parquet")


def test_align_population_checks_before_fitting_then_skips_and_reports(data_dir, tiny_llama, tokenizer, tmp_path,
                                                                       monkeypatch, capsys):
    """A bad row stops ``pas align-population`` before the model is loaded or the store made; with ``--skip-bad``
    the row is skipped, listed in ``bad_rows.jsonl`` in the store and counted; the synthetic label reaches the
    store."""
    import pas.core.models
    from pas.population.store import PopulationStore

    records = _records(data_dir)[:12]
    records[1]["i17"] = 7
    root = _data_dir(data_dir, tmp_path, records)
    (root / "papi.json").write_text(json.dumps({"encoding": "keyed", "synthetic": True}))
    loaded = []
    monkeypatch.setattr(pas.core.models, "load_model", lambda *a, **k: loaded.append(1) or (tiny_llama, tokenizer))
    out = tmp_path / "store"
    run = ["align-population", "--data-dir", str(root), "--out", str(out), "--first", "1"]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert f"bad row 1 (case {records[1]['case']})" in err and "answer 7 is outside 0..5" in err and "--skip-bad" in err
    assert not loaded and not out.exists()
    assert main([*run, "--bad-rows", str(tmp_path / "bad.jsonl")]) == 2
    assert "--bad-rows goes with --skip-bad" in capsys.readouterr().err
    assert main([*run, "--skip-bad"]) == 0
    printed = capsys.readouterr()
    assert "SYNTHETIC people" in printed.out and "1 bad rows of 12 skipped" in printed.out
    assert "12 rows, 11 people, 1 bad rows" in printed.err and "1/1 people" in printed.err
    (bad,) = [json.loads(line) for line in (out / "bad_rows.jsonl").read_text().splitlines()]
    assert bad["row"] == 1 and bad["case"] == str(records[1]["case"]) and "answer 7" in bad["reason"]
    store = PopulationStore(out)
    assert list(store.cases()) == [str(records[0]["case"])] and store.provenance.synthetic is True
