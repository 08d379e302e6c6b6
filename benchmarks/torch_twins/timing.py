"""`python -m benchmarks.torch_twins`: the torch twin of a step timed alone (its use: choosing
the memory format, checking torch.compile), on random batches, with the config
`benchmarks.step_throughput --model NAME` times (`--model resnet32/44/110`: resnet20's with
the depth swapped).

    python -m benchmarks.torch_twins --model mnist_cnn|resnet20 [--batch_size 128]
        [--steps 60] [--windows 6] [--compile] [--memory_format both|channels_last|contiguous]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch

from benchmarks.torch_twins.models import CIFAR_DEPTHS
from benchmarks.torch_twins.step import build_step, set_threads
from jaxdl.schema import Clock

BATCHES = 4  # distinct host batches, cycled
DATA_SEED = 0


def family_config(model: str, batch_size: int):
    """The validated config of step_throughput's `--model` family (the CIFAR depths on
    resnet20's), without augmentation (the twin mirrors none)."""
    from benchmarks import step_throughput

    family = "mnist_cnn" if model == "mnist_cnn" else "resnet20"
    args, overrides = step_throughput.parse_args(
        ["--model", family, "--batch_size", str(batch_size), "--batches", str(BATCHES),
         "--config.data.augmentation=none",
         *([f"--config.model.name={model}"] if family == "resnet20" else [])])
    return step_throughput.load_config(args, overrides)


def time_step(step, batches, *, steps: int, windows: int, warmup: int) -> dict:
    """Per-window seconds per step of `step` cycling over pre-converted `batches`."""
    index = 0

    def run(count):
        nonlocal index
        loss = None
        for _ in range(count):
            loss = step(*batches[index % len(batches)])
            index += 1
        return loss

    start = time.perf_counter()
    loss = run(warmup)
    warm = time.perf_counter() - start
    per_step = []
    for _ in range(windows):
        start = time.perf_counter()
        loss = run(max(1, steps // windows))
        per_step.append((time.perf_counter() - start) / max(1, steps // windows))
    return {"warmup_s": warm, "per_step": per_step,
            "loss": math.nan if loss is None else float(loss)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_twins",
                                     description="Time the torch twin of a step alone.")
    parser.add_argument("--model", choices=("mnist_cnn", *CIFAR_DEPTHS), default="mnist_cnn")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--memory_format", choices=("both", "contiguous", "channels_last"),
                        default="both")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    threads = set_threads()
    config = family_config(args.model, args.batch_size)
    input_shape = tuple(config.data.options.shape)
    rng = np.random.default_rng(DATA_SEED)
    host = [{"inputs": rng.random((args.batch_size, *input_shape), np.float32),
             "targets": rng.integers(0, config.model.num_classes,
                                     args.batch_size).astype(np.int32)}
            for _ in range(BATCHES)]
    # Durations count epochs of the BATCHES host batches, as step_throughput's synthetic
    # set; they move where the schedule is, not the work of a step.
    clock = Clock(steps_per_epoch=BATCHES, batch_size=args.batch_size)
    formats = (("contiguous", "channels_last") if args.memory_format == "both"
               else (args.memory_format,))
    variants = [(f, c) for c in ((False, True) if args.compile else (False,)) for f in formats]
    steps = {}
    for fmt, compiled in variants:
        steps[(fmt, compiled)] = build_step(config, clock.steps(config.train.duration),
                                            input_shape, memory_format=fmt,
                                            compile=compiled, to_updates=clock.steps)
    print(f"# torch {torch.__version__}, {threads} threads, {args.model} batch "
          f"{args.batch_size}; windows alternate between the variants")
    results = {key: [] for key in steps}
    warm = {}
    for key, step in steps.items():  # warm-up (and compilation) first
        batches = [step.batch(b) for b in host]
        warm[key] = (batches, time_step(step, batches, steps=0, windows=0,
                                        warmup=args.warmup)["warmup_s"])
    for window in range(args.windows):
        order = list(steps) if window % 2 == 0 else list(steps)[::-1]
        for key in order:
            r = time_step(steps[key], warm[key][0], steps=max(1, args.steps // args.windows),
                          windows=1, warmup=0)
            results[key] += r["per_step"]
    for (fmt, compiled), per_step in results.items():
        median = statistics.median(per_step)
        print(f"{'compile' if compiled else 'eager':7s} {fmt:13s} warmup "
              f"{warm[(fmt, compiled)][1]:6.1f}s  {median * 1e3:8.2f} ms/step  "
              f"{args.batch_size / median:8.0f} examples/s  windows "
              + " ".join(f"{args.batch_size / s:.0f}" for s in per_step))

