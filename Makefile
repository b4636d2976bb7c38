# The README's two commands, `make demo` and `make test`, each set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

# Idempotent: torch==2.13.0 goes in FIRST (a CPU build lies on disk here; an unpinned torch pulls GBs of CUDA wheels),
# then the project with its dev extras. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/clawtune demo --output ./demo-output

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/export_bench.py --mb 200

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
