"""The MNIST CNN (mnist_cnn) quantized to int8 after training: Qwix's static-range
post-training quantization (per-output-channel int8 kernels; int8 activations with static
scales calibrated on 1,000 training images), against the fp32 run and its weights cast to
bf16.

Commands (the first trains mnist_cnn's config; any finished mnist_cnn run will do):
    python -m experiments.mnist_int8 --workdir=runs/mnist_cnn
    python -m experiments.mnist_int8 --report --run=runs/mnist_cnn

`--report` is `python -m jaxdl.compress report` at this experiment's settings: latency at
batch 1,000 (20 timed calls; the table in RUN/analysis/compress/), then at batch 1 (200
calls; RUN/analysis/compress_batch1/).

Measured 2026-12-07, 20:35 UTC, on the 2-core AMD EPYC CPU dev VM with AVX-512 (no GPU, jax
0.10.2, qwix 0.1.8, one CPU device, nothing else of ours running), on mnist_cnn's finished
10-epoch run of that evening (test accuracy 0.9931; its best checkpoint on validation, step
3,432), all 10,000 test images:

    variant  parameters  non-zero  bytes      vs fp32  test accuracy  test loss  latency (ms)
                                                                                 batch 1000  batch 1
    fp32     824,458     824,458   3,297,832  1.000    0.9929         0.02210    52.7        0.28
    bf16     824,458     824,458   1,648,916  0.500    0.9929         0.02208    52.8        0.28
    int8     824,458     807,592     827,008  0.251    0.9931         0.02201    198.9       0.36

int8 keeps the accuracy (0.9931 against 0.9929, two test images more right; its test loss
is a little lower too) at a quarter of the bytes (int8 kernels plus a float32 scale per
output channel, float32 biases and 4 activation scales); 16,866 weights (2.0 %) round to 0.
It is not faster on this CPU: XLA's CPU backend runs the int8 convolutions 3.8 times slower
than float32 at batch 1,000 (the int8 gain is memory, and speed on hardware with int8
units). bf16 here stores the weights only (the model still computes in float32, so each
call converts them back). Latencies are medians of 20 (batch 1,000) and 200 (batch 1)
calls after a warm-up. Wall time of `--report` (both tables: quantization, three
evaluations of 10,000 images and the timings, twice): 23 s. (Earlier the same day, on
another VM and mnist_cnn runs trained there: fp32 0.9926 / int8 0.9923, and before the
per-tap weight gradient of that afternoon fp32 0.9928 / int8 0.9930.)
"""

import argparse
import sys
from pathlib import Path

import ml_collections

from experiments import mnist_cnn

CALIBRATION_EXAMPLES = 1000  # training images that set the int8 activation scales
# (examples per timed batch, timed calls, the report's folder under RUN/analysis/: None =
# the command's default, compress/, which the first report creates with RUN/analysis/)
LATENCY = ((1000, 20, None), (1, 200, "compress_batch1"))


def get_config() -> ml_collections.ConfigDict:
    """The fp32 model that is quantized: mnist_cnn's, unchanged."""
    return mnist_cnn.get_config()


def report(argv) -> int:
    """The compression report of the run `--run` at each LATENCY setting."""
    from jaxdl import runs
    from jaxdl.compress import __main__ as compress_cli

    parser = argparse.ArgumentParser(prog="python -m experiments.mnist_int8 --report")
    parser.add_argument("--run", required=True, help="a finished mnist_cnn run")
    args = parser.parse_args([a for a in argv if a != "--report"])
    for batch, repeats, folder in LATENCY:
        output = [f"--output={Path(args.run) / runs.ANALYSIS_DIRNAME / folder}"] \
            if folder else []
        code = compress_cli.main([
            "report", f"--run={args.run}", f"--batch={batch}", f"--repeats={repeats}",
            f"--calibration_examples={CALIBRATION_EXAMPLES}", *output])
        if code:
            return code
    return 0


if __name__ == "__main__":
    if "--report" in sys.argv[1:]:
        sys.exit(report(sys.argv[1:]))
    from jaxdl import app

    app.run(get_config)
