# `make run` (the default experiment), `make test` (the suite's fast tier, every test not marked
# slow) and `make test-slow` (the slow tier: long end-to-end runs); CI runs both tiers.
# Both create or reuse .venv and install jaxdl with the versions pinned in .ci/constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/digits_cnn/$(shell date +%Y%m%d-%H%M%S)

.PHONY: run test test-slow clean

$(STAMP): setup.cfg pyproject.toml .ci/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jaxdl needs Python >= 3.11; found " + sys.version.split()[0] + " (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c .ci/constraints.txt -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m experiments.digits_cnn --workdir=$(RUN_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "not slow" --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m slow --durations=15

clean:
	rm -rf $(VENV) runs
