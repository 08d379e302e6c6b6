"""`python -m benchmarks.speedrun`: the MNIST speedrun (experiments/mnist_speedrun.py) run
to the end for each seed by jaxdl and by its PyTorch twin, in one process on one machine,
seed after seed (jaxdl, then torch), so both meet the same background load.

Both train the same model (benchmarks/torch_twins: same layers, BatchNorm, initialiser
(LeCun normal, each side its own draw), optimizer, one-cycle schedule, label smoothing,
fp32) on the same batches in the same order
(`jaxdl.data.pipeline.epoch_orders` of the run's seed), with the training split in memory
as one array (jaxdl: on the device; torch: one tensor, batches gathered by index). The time
is the training loop's, first step to last: jaxdl's `train_seconds` (compile excluded: the
steps are compiled before the loop; the loop's logging every 100 steps included), torch's
wall time of its loop. Test accuracy: jaxdl's final test evaluation; torch's model in eval
mode (running BatchNorm statistics) on the same test split.

    python -m benchmarks.speedrun --seeds 5 --workdir runs/speedrun [--json FILE]
        [--config.KEY=VALUE ...]   (the experiment's config, as on its command line)

Needs the MNIST files ($JAXDL_DATA_DIR) and torch (`make install-extras`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


EXPERIMENT = "mnist_speedrun"
TARGET = 0.99


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speedrun",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--workdir", required=True, help="jaxdl's runs go to WORKDIR/seed_S")
    parser.add_argument("--no_torch", action="store_true", help="time jaxdl only")
    parser.add_argument("--json", default=None, help="append one JSON record (a line) here")
    return parser


def torch_run(config, splits, seed: int, total_steps: int) -> dict:
    """The twin trained for `total_steps` on jaxdl's batches of `seed`; its loop's seconds
    and its test accuracy."""
    import torch

    from benchmarks import torch_twins as twins
    from jaxdl.data import pipeline

    twins.set_threads()
    train, test = splits["train"], splits["test"]
    batch = config.data.batch_size
    step = twins.build_step(config, total_steps, train.inputs.shape[1:], seed=seed)
    x, y = twins.to_torch_batch({"inputs": train.inputs, "targets": train.targets},
                                step.memory_format)
    orders = pipeline.epoch_orders(train, batch, seed)
    done, start = 0, time.perf_counter()
    while done < total_steps:
        order, positions = next(orders)
        for position in positions[:total_steps - done]:
            rows = torch.from_numpy(order[position * batch:(position + 1) * batch])
            step(x[rows], y[rows])
            done += 1
    seconds = time.perf_counter() - start
    model = step.model.eval()
    correct = 0.0
    with torch.no_grad():
        for batch in pipeline.eval_batches(test, config.data.eval_batch_size):
            tx, ty = twins.to_torch_batch(batch, step.memory_format)
            hits = (model(tx).argmax(-1) == ty).numpy()
            correct += float((hits * batch["mask"]).sum())  # padding rows weigh 0
    return {"seconds": seconds, "test_accuracy": correct / len(test), "steps": done}


def jaxdl_run(config, seed: int, workdir: Path) -> dict:
    from jaxdl import api

    config = config.copy_and_resolve_references()
    config.seed = seed
    summary = api.train(config, workdir=workdir / f"seed_{seed}", overwrite=True)
    return {"seconds": summary["train_seconds"], "steps": summary["steps"],
            "test_accuracy": summary["final"]["test"]["accuracy"],
            "validation_accuracy": summary["final"]["validation"]["accuracy"]}


def _stats(rows: list[dict]) -> str:
    seconds = [r["seconds"] for r in rows]
    spread = statistics.stdev(seconds) if len(seconds) > 1 else 0.0
    accuracy = [r["test_accuracy"] for r in rows]
    reached = sum(a >= TARGET for a in accuracy)
    return (f"{statistics.mean(seconds):.1f} ± {spread:.1f} s | "
            f"{statistics.mean(accuracy):.4f} (min {min(accuracy):.4f}) | {reached}/{len(rows)}")


def main(argv: list[str] | None = None) -> dict:
    parser = _parser()
    args, overrides = parser.parse_known_args(argv)
    bad = [a for a in overrides if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    from jaxdl import app
    from jaxdl.config import ConfigError
    from jaxdl.training import build

    try:
        config = app.load_config(EXPERIMENT, overrides)
        app.prepare_process(config)
        _, splits = build.load_splits(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    workdir = Path(args.workdir)
    record = {"benchmark": "speedrun", "experiment": EXPERIMENT, "target": TARGET,
              "config_overrides": overrides,
              "jaxdl": [], "torch": [], "loadavg_start": os.getloadavg()}
    for seed in range(args.seeds):
        mine = jaxdl_run(config, seed, workdir)
        record["jaxdl"].append({"seed": seed, **mine})
        line = f"seed {seed}: jaxdl {mine['seconds']:.1f} s, test {mine['test_accuracy']:.4f}"
        if not args.no_torch:
            theirs = torch_run(config, splits, seed, mine["steps"])
            record["torch"].append({"seed": seed, **theirs})
            line += f"; torch {theirs['seconds']:.1f} s, test {theirs['test_accuracy']:.4f}"
        print(line, flush=True)
    record["loadavg_end"] = os.getloadavg()
    print(f"\n| side | loop time, mean ± sd over {args.seeds} seeds | test accuracy, mean "
          f"(min) | seeds >= {TARGET} |\n|---|---:|---:|---:|")
    print(f"| jaxdl | {_stats(record['jaxdl'])} |")
    if record["torch"]:
        print(f"| torch eager | {_stats(record['torch'])} |")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main()
