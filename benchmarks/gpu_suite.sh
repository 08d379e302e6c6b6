#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py) on a machine with an NVIDIA GPU and no network.
# The machine's own Python must hold jax with CUDA, flax, optax, orbax and torch; what it
# lacks travels as wheels in .whl/ beside the checkout (benchmarks/gpu_wheels.sh fills it
# on a machine with the package registry) and is installed here into a private folder, so
# nothing of the machine's own environment changes.
#   bash benchmarks/gpu_suite.sh [--out DIR] [--budget_s 480] [--rows ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jaxdl-site .whl/*.whl
  export PYTHONPATH=/tmp/jaxdl-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())'
exec "$PYTHON" -m benchmarks.gpu_suite --out "${OUT:-gpu_suite_out}" "$@"
