# `make run` (the default experiment), `make test` (the suite's fast tier, every test not marked
# slow) and `make test-slow` (the slow tier: long end-to-end runs); CI runs both tiers.
# Both create or reuse .venv and install jaxdl with the versions pinned in .ci/constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/digits_cnn/$(shell date +%Y%m%d-%H%M%S)

.PHONY: run test test-slow install-extras clean

$(STAMP): setup.cfg pyproject.toml .ci/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jaxdl needs Python >= 3.11; found " + sys.version.split()[0] + " (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c .ci/constraints.txt -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m experiments.digits_cnn --workdir=$(RUN_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "not slow" --durations=15

# The optional extras, so their tests run instead of skipping (CI runs it; `make test` does
# not need it): `torch` (CPU torch, safetensors) and torchvision, for the tests that compare
# with PyTorch (weight import proofs, the benchmark twins); `mlflow` (logging.mlflow). torchvision goes in without its dependencies: its wheel
# pins torch exactly, and a resolver may then fetch the multi-gigabyte CUDA torch beside or
# instead of the CPU one. On PyPI (outside this project's registry, which serves the CPU
# wheel as torch==2.13.0), pass TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH_INDEX ?=
install-extras: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c .ci/constraints.txt $(TORCH_INDEX) -e ".[torch,mlflow]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c .ci/constraints.txt --no-deps torchvision

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m slow --durations=15

clean:
	rm -rf $(VENV) runs
