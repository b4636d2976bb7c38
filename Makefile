# The README's two commands, `make demo` and `make test`, each set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lock demo test test-fast lint bench clean

install: $(STAMP)

# Idempotent: torch==2.13.0 goes in FIRST (a CPU build lies on disk here; an unpinned torch pulls GBs of CUDA wheels),
# then the project with every extra, each package at the version requirements.lock pins. Re-runs only when
# pyproject.toml, the lock or this file changes.
$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	# The BFCL benchmark's data and AST checker, without the package's pins (numpy 1.26, faiss, a dozen SDKs).
	$(PY) -m pip install -q --no-deps bfcl-eval==2026.3.23
	touch $(STAMP)

# Re-resolve the exact versions after a change to pyproject.toml's ranges (pip-tools: uv would swap the CPU torch
# for GBs of CUDA packages). torch stays out of the lock (`make install` puts it in first), and so does clawtune itself.
lock: install
	$(VENV)/bin/pip-compile -q --all-extras --strip-extras --unsafe-package torch --unsafe-package clawtune --no-emit-index-url \
		--no-emit-find-links -c requirements-torch.txt --output-file requirements.lock pyproject.toml

demo: install
	$(VENV)/bin/clawtune demo --output ./demo-output

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# The inner loop: everything but the real-OpenClaw integration tests and the tests marked slow (those that train or
# generate with the tiny model, the README walkthrough, the demo, the gateway fuzzing, the A/B and canary tests that
# wait out compressed durations). `make test` runs them all, as CI does. E.g. `make test-fast PYTEST_ARGS=--durations=20`.
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not integration and not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install
	$(PY) bench/export_bench.py --mb 200

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
