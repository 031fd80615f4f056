# Two commands from a fresh clone: `make demo` (the main job) and `make test` (the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint format bench reproduce clean

$(PY): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	@touch $(PY)

install: $(PY)

demo: $(PY)
	$(VENV)/bin/dcrl demo

test: $(PY)
	$(PY) -m pytest

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(PY)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(PY)
	$(PY) bench/core_memory.py

reproduce: $(PY)
	$(PY) bench/reproduce.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
