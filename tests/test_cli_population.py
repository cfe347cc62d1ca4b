"""``pas synth`` on the command line: writes a labelled synthetic data dir that loads, refuses to overwrite."""

import json

from pas.cli.main import main
from pas.core.data import load_papi


def test_synth_writes_a_labelled_data_dir_that_loads(data_dir, tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["synth", "--data-dir", str(data_dir), "--people", "40", "--out", str(out), "--format", "json"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("SYNTHETIC population: 40 people") and "target <= 0.05" in printed
    assert json.loads((out / "papi.json").read_text())["synthetic"] is True
    data = load_papi(out)
    assert len(data.subjects) == 40 and all(s.case.startswith("synthetic-") for s in data.subjects)
    assert main(["synth", "--data-dir", str(data_dir), "--people", "5", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "--data-dir", str(data_dir), "--people", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--people must be >= 1" in capsys.readouterr().err
