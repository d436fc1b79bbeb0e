# kvmigrate — the daily commands. Each target bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRACES := $(wildcard scenarios/traces/*.kvtrace)
PHASE ?= 2

.PHONY: venv test lint compare capture mutate gate bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

lint: $(STAMP)
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

SCENARIOS := cartpole_small acrobot_multi cartpole_zero_init cartpole_pool_pressure cartpole_twin_envs mutation_pressure

compare: $(STAMP)
	$(PY) -m harness compare scenarios/traces

capture: $(STAMP)
	mkdir -p scenarios/traces
	for s in $(SCENARIOS); do \
		$(PY) -m harness capture scenarios/$$s.toml -o scenarios/traces/$$s.kvtrace || exit 1; \
	done

gate: $(STAMP)
	$(PY) -m harness gate --phase $(PHASE)

mutate: $(STAMP)
	$(PY) -m harness mutate scenarios/traces

bench: $(STAMP)
	$(PY) benchmarks/bench.py
include lightzero.mk
