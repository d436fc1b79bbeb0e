# Upstream LightZero targets (issue #12), included from the Makefile.
#   make lightzero        builds .venv-lightzero from requirements-lightzero.txt (pinned, --no-deps)
#   make lightzero-check  acceptance on upstream's history (legacy / buggy / fixed / head trees)
# `make test` and `make compare` never need .venv-lightzero.
LZ_PYTHON ?= python3
LZ_VENV := .venv-lightzero
LZ_PY := $(LZ_VENV)/bin/python
LZ_STAMP := $(LZ_VENV)/.installed
LIGHTZERO_TREES ?= ../shared/lightzero

.PHONY: lightzero lightzero-check

$(LZ_STAMP): requirements-lightzero.txt
	rm -rf $(LZ_VENV)
	$(LZ_PYTHON) -m venv $(LZ_VENV)
	$(LZ_PY) -m pip install --quiet --no-deps torch==2.13.0 -r requirements-lightzero.txt
	touch $(LZ_STAMP)

lightzero: $(LZ_STAMP)

# The LightZero environment is built on demand; where it cannot be built, the check's own first
# line says so and it fails (make stops on the failed build with pip's message above it).
lightzero-check: $(STAMP)
	@$(MAKE) --no-print-directory lightzero || { echo "lightzero-check: FAILED: cannot build $(LZ_VENV) (see pip's output above)" >&2; exit 1; }
	KVMIGRATE_LIGHTZERO_PYTHON=$(abspath $(LZ_PY)) LIGHTZERO_TREES=$(abspath $(LIGHTZERO_TREES)) \
		$(PY) -m pytest -q -p no:cacheprovider tests/upstream_lightzero_check.py
	$(PY) -m harness.upstream.check --trees $(LIGHTZERO_TREES) --lightzero-python $(LZ_PY)
