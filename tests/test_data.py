import json
import shutil

import pytest

from pas.core.data import (
    PapiDataError,
    keyed_score,
    load_items,
    load_papi,
    load_subjects,
    opposite_key_correlation,
    parse_subjects,
    resolve_data_dir,
    select_subjects,
)


def _copy(data_dir, tmp_path):
    for name in ("items.csv", "subjects.json", "personality_descriptions.json"):
        shutil.copy(data_dir / name, tmp_path / name)
    return tmp_path


def _subjects_json(tmp_path):
    return json.loads((tmp_path / "subjects.json").read_text())


def _write(tmp_path, records):
    (tmp_path / "subjects.json").write_text(json.dumps(records))


def test_real_items_and_split(papi):
    bank = papi.bank
    assert len(bank.items) == 300
    assert len(bank.train_ids) == 120 and len(bank.test_ids) == 180
    assert set(bank.train_ids).isdisjoint(bank.test_ids)
    assert {it.domain for it in bank.items} == set("OCEAN")
    assert len({it.facet for it in bank.items}) == 30


def test_real_subjects(papi):
    assert len(papi.subjects) == 200
    s = papi.subjects[0]
    assert s.case == "172481" and s.description.startswith("You are")
    assert all(1 <= a <= 5 for a in s.responses.values())
    assert len(s.responses) + len(s.missing) == 300
    assert s.bank is papi.bank and len(s.known()) == 120 - len(s.missing & set(papi.bank.train_ids))


def test_responses_are_what_the_person_chose(papi, data_dir):
    """PAPI stores keyed scores: on reverse-keyed items the response is 6 - stored."""
    raw = json.loads((data_dir / "subjects.json").read_text())
    by_id = papi.bank.by_id
    n_reversed = 0
    for rec, s in zip(raw[:20], papi.subjects[:20], strict=True):
        for i, response in s.responses.items():
            stored = rec[f"i{i}"]
            assert response == (6 - stored if by_id[i].keyed == "-" else stored)
            n_reversed += by_id[i].keyed == "-"
        assert s.keyed_scores() == {i: v for i, v in ((int(k[1:]), v) for k, v in rec.items()
                                                      if k[:1] == "i" and k[1:].isdigit()) if v}
    assert n_reversed > 0
    assert keyed_score(by_id[2], 4) == 4 and [keyed_score(it, 5) for it in papi.bank.items if it.keyed == "-"][0] == 1


def test_real_data_are_keyed(papi, data_dir):
    stored = [s.keyed_scores() for s in papi.subjects]
    assert opposite_key_correlation(papi.bank, stored) == pytest.approx(0.43, abs=0.01)
    responses = [dict(s.responses) for s in papi.subjects]
    assert opposite_key_correlation(papi.bank, responses) < -0.3
    with pytest.raises(PapiDataError, match=r"declared encoding 'responses', but the data look like keyed: .*"
                                            r"\+0\.43 .*papi\.json.*\"encoding\": \"keyed\""):
        load_papi(data_dir, encoding="responses")


def _responses_copy(data_dir, tmp_path, papi):
    """The real data rewritten as responses (what each person chose), as another data set might store them."""
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    by_case = {s.case: s for s in papi.subjects}
    for rec in recs:
        s = by_case[str(rec["case"])]
        for i in papi.bank.by_id:
            rec[f"i{i}"] = s.responses.get(i, 0)
    _write(root, recs)
    return root


def test_responses_encoded_copy(papi, data_dir, tmp_path):
    root = _responses_copy(data_dir, tmp_path, papi)
    with pytest.raises(PapiDataError, match=r"declared encoding 'keyed', but the data look like responses: "
                                            r"opposite-keyed items of a facet correlate -0\.\d\d"):
        load_papi(root)  # no declaration: PAPI's layout defaults to keyed
    (root / "papi.json").write_text(json.dumps({"encoding": "responses"}))
    again = load_papi(root)
    assert again.encoding == "responses"
    assert [dict(s.responses) for s in again.subjects] == [dict(s.responses) for s in papi.subjects]
    assert load_papi(root, encoding="responses").subjects[3].responses == papi.subjects[3].responses


def test_encoding_declaration_errors(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    (root / "papi.json").write_text("{oops")
    with pytest.raises(PapiDataError, match="papi.json: cannot read the data declaration"):
        load_papi(root)
    (root / "papi.json").write_text(json.dumps({"encoding": "raw"}))
    with pytest.raises(PapiDataError, match="encoding 'raw'"):
        load_papi(root)


def test_few_subjects_are_not_checked(papi):
    """Under 30 people the correlation is too noisy to judge; the declaration is taken as it is."""
    recs = [{"case": s.case, **{f"i{i}": s.responses.get(i, 0) for i in papi.bank.by_id}} for s in papi.subjects[:29]]
    subjects = parse_subjects(recs, papi.bank, encoding="keyed")
    assert len(subjects) == 29


def test_missing_answers_are_missing(papi):
    missing = sum(len(s.missing) for s in papi.subjects)
    assert missing == 29  # the zeros in subjects.json
    s = next(s for s in papi.subjects if s.missing)
    item = next(iter(s.missing))
    assert item not in s.responses and item not in s.responses_to([item]) and item not in s.keyed_scores()


def test_xls_item_key_matches_csv(data_dir, tmp_path):
    shutil.copy(data_dir / "original" / "IPIP-NEO-ItemKey.xls", tmp_path / "IPIP-NEO-ItemKey.xls")
    from_xls, from_csv = load_items(tmp_path), load_items(data_dir)
    assert [(i.id, i.ipip120, i.domain, i.facet, i.keyed) for i in from_xls.items] == [
        (i.id, i.ipip120, i.domain, i.facet, i.keyed) for i in from_csv.items
    ]


def test_parquet_subjects_via_datasets(data_dir, tmp_path):
    import datasets

    root = tmp_path
    shutil.copy(data_dir / "items.csv", root / "items.csv")
    records = json.loads((data_dir / "subjects.json").read_text())[:5]
    datasets.Dataset.from_list(records).to_parquet(str(root / "train.parquet"))
    subjects = load_subjects(root)
    assert [s.case for s in subjects] == [str(r["case"]) for r in records]
    assert subjects[0].keyed_scores() == {int(k[1:]): v for k, v in records[0].items()
                                          if k[:1] == "i" and k[1:].isdigit() and v}


def test_data_dir_resolution(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPI_DATA_DIR", str(data_dir))
    assert resolve_data_dir() == data_dir
    assert resolve_data_dir(tmp_path) == tmp_path
    with pytest.raises(PapiDataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PapiDataError, match="is a file, not a directory"):
        resolve_data_dir(tmp_path / "file")
    monkeypatch.setenv("PAPI_DATA_DIR", str(tmp_path / "file"))
    with pytest.raises(PapiDataError, match=r"from \$PAPI_DATA_DIR\) is a file, not a directory"):
        resolve_data_dir()


def test_empty_data_dir_variable_is_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPI_DATA_DIR", "")
    monkeypatch.chdir(tmp_path)  # no ./papi here, no ../shared/papi
    with pytest.raises(PapiDataError, match="no PAPI data directory"):
        resolve_data_dir()


@pytest.mark.parametrize("value, match", [(6, "outside 0..5"), (-1, "outside 0..5"), (3.5, "not a whole number"),
                                          ("2.5", "not a whole number"), (float("nan"), "not a whole number"),
                                          ("x", "not an integer"), (None, "not an integer"), (True, "not an integer")])
def test_bad_answer_named(data_dir, tmp_path, value, match):
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    recs[3]["i17"] = value
    _write(root, recs)
    with pytest.raises(PapiDataError, match=rf"subject {recs[3]['case']}: item i17: .*{match}"):
        load_subjects(root)


def test_numeric_strings_are_numbers(data_dir, tmp_path):
    """A string "4" is read as 4 (CSV-born JSON often quotes numbers); documented in papi_data/README.md."""
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    original = recs[3]["i17"]
    recs[3]["i17"] = str(original)
    _write(root, recs)
    assert load_subjects(root)[3].keyed_scores([17]) == {17: original}


def test_select_subjects(papi):
    assert [s.case for s in select_subjects(papi.subjects, first=2)] == [s.case for s in papi.subjects[:2]]
    assert len(select_subjects(papi.subjects, first=100000)) == 200
    for bad in (0, -1):
        with pytest.raises(PapiDataError, match=">= 1"):
            select_subjects(papi.subjects, first=bad)
    with pytest.raises(PapiDataError, match="not both"):
        select_subjects(papi.subjects, [papi.subjects[0].case], first=1)


def test_unknown_item(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    recs[0]["i301"] = 3
    _write(root, recs)
    with pytest.raises(PapiDataError, match="unknown item 'i301'"):
        load_subjects(root)


def test_duplicate_subject(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    _write(root, recs + [recs[1]])
    with pytest.raises(PapiDataError, match=f"duplicate subject id '{recs[1]['case']}'"):
        load_subjects(root)


def test_subject_without_known_answers(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    bank = load_items(root)
    for i in bank.train_ids:
        recs[2][f"i{i}"] = 0
    _write(root, recs)
    with pytest.raises(PapiDataError, match=f"subject {recs[2]['case']}: no known"):
        load_subjects(root)


def test_missing_item_column(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    del recs[4]["i250"]
    _write(root, recs)
    with pytest.raises(PapiDataError, match="no column for items \\[250\\]"):
        load_subjects(root)


def test_unreadable_subjects_file(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    (root / "subjects.json").write_text("[{not json")
    with pytest.raises(PapiDataError, match="subjects.json: cannot read"):
        load_subjects(root)


def test_items_missing_columns(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    lines = (root / "items.csv").read_text().splitlines()
    (root / "items.csv").write_text("\n".join(line.rsplit(",", 1)[0] if "," in line else line for line in lines))
    with pytest.raises(PapiDataError, match="missing columns"):
        load_items(root)


def test_items_bad_domain(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    text = (root / "items.csv").read_text().replace("\n2,2,E,", "\n2,2,X,", 1)
    (root / "items.csv").write_text(text)
    with pytest.raises(PapiDataError, match="item 2 has domain 'X'"):
        load_items(root)


def test_parse_records_directly(papi):
    recs = [{"case": "a", **{f"i{i}": 4 for i in range(1, 301)}}]
    (s,) = parse_subjects(recs, papi.bank)
    assert s.case == "a" and len(s.responses) == 300 and not s.missing
    with pytest.raises(PapiDataError, match="no 'case'"):
        parse_subjects([{"i1": 3}], papi.bank)


def test_load_papi_descriptions(papi, data_dir):
    assert load_papi(data_dir).subjects[5].description == papi.subjects[5].description


def test_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("PAPI_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PapiDataError, match="no PAPI data directory"):
        resolve_data_dir()
    (tmp_path / "papi").mkdir()
    assert resolve_data_dir().resolve() == (tmp_path / "papi").resolve()


def test_data_is_split_and_every_name_still_imports_from_data():
    """``pas.core.data`` was split into items, subjects and encoding; its public names still import from it."""
    from pas.core import data, encoding, items, subjects

    assert data.Subject is subjects.Subject and data.ItemBank is items.ItemBank
    assert data.check_encoding is encoding.check_encoding and data.parse_subjects is subjects.parse_subjects
    for name in ("DOMAINS", "N_OPTIONS", "DEFAULT_DATA_DIRS", "DATA_DIR_ENV", "ENCODINGS", "DEFAULT_ENCODING",
                 "DECLARATION_FILE", "MIN_SUBJECTS_FOR_CHECK", "CLEAR_CORRELATION", "PapiDataError", "Item",
                 "ItemBank", "Subject", "PapiData", "keyed_score", "resolve_data_dir", "declared_encoding",
                 "load_items", "load_subjects", "parse_subjects", "opposite_key_correlation", "check_encoding",
                 "load_descriptions", "select_subjects", "load_papi"):
        assert hasattr(data, name) and name in data.__all__, name


def test_encoding_error_names_the_flag_and_the_python_argument(data_dir):
    """The CLI user is told ``--encoding keyed``, the Python user ``encoding="keyed"``."""
    with pytest.raises(PapiDataError, match=r'--encoding keyed on the command line \(encoding="keyed"'):
        load_papi(data_dir, encoding="responses")


def _records(papi, n=3):
    return [{"case": s.case, **{f"i{i}": s.keyed_scores().get(i, 0) for i in papi.bank.by_id}}
            for s in papi.subjects[:n]]


def test_zero_padded_item_key_is_refused(papi):
    """``i007`` used to silently override ``i7``; now the record, the key and the fix are named."""
    recs = _records(papi)
    recs[1]["i007"] = 1
    with pytest.raises(PapiDataError, match=rf"record 1 \(case {recs[1]['case']}\): key 'i007' looks like an item "
                                            r"key .*also has 'i7'.*rename it 'i7'"):
        parse_subjects(recs, papi.bank)
    recs = _records(papi)
    recs[2]["i007"] = recs[2].pop("i7")  # only the padded key: still refused (rename it)
    with pytest.raises(PapiDataError, match=r"record 2 .*'i007'.*rename it 'i7'"):
        parse_subjects(recs, papi.bank)


@pytest.mark.parametrize("key", ["I7", "item7", "i 7", "i_7", "Item 12", "i0301"])
def test_keys_that_look_like_item_keys_are_refused(papi, key):
    recs = _records(papi)
    recs[0][key] = 3
    with pytest.raises(PapiDataError, match=rf"record 0 \(case {recs[0]['case']}\): key '{key}' looks like an item"):
        parse_subjects(recs, papi.bank)


def test_other_fields_are_not_item_keys(papi):
    recs = _records(papi)
    recs[0].update({"id": 4, "items": "x", "i7_time": 12, "sex": 1, "country": "UK"})
    assert len(parse_subjects(recs, papi.bank)) == 3


@pytest.mark.parametrize("case", [None, "", "  ", True, float("nan"), [1], {"id": 1}])
def test_case_that_is_no_id_is_refused(papi, case):
    """``"case": null`` used to become a person named "None"."""
    recs = _records(papi)
    recs[2]["case"] = case
    with pytest.raises(PapiDataError, match=r"record 2 has 'case' .* not a subject id; give every record a unique"):
        parse_subjects(recs, papi.bank)


def test_case_null_in_a_data_file(data_dir, tmp_path):
    root = _copy(data_dir, tmp_path)
    recs = _subjects_json(root)
    recs[5]["case"] = None
    _write(root, recs)
    with pytest.raises(PapiDataError, match=r"subjects\.json: record 5 has 'case' None"):
        load_subjects(root)
