#!/usr/bin/env bash
# Fills .whl/ with the wheels benchmarks/gpu_suite.sh installs on the GPU machine: what
# jaxdl's benchmark path imports that the GPU image (Python 3.12, jax, flax, optax, orbax,
# torch, absl, PyYAML already there) lacks. Run where pip reaches the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "ml_collections==$(grep -i '^ml_collections==' .ci/constraints.txt | cut -d= -f3)"
ls -la .whl
