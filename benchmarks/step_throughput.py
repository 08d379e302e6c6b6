"""Training-step throughput of an experiment, timed on the very step its runs compile.

    python -m benchmarks.step_throughput --experiment digits_cnn --backend sharded \
        [--batch_size N] [--steps K] [--warmup W] [--repeats R] [--json FILE] \
        [--config.KEY=VALUE ...]

The trainer comes from `jaxdl.training.loop.build`, the function `train_and_evaluate`
uses, so the timed executable is the experiment's compiled `train_step` (same model,
optimizer, backend, donation and shardings); nothing here re-implements the step.

What is timed (synthetic-from-real-data mode): `--batches` distinct real training batches
are placed on the devices *before* timing and cycled, so host batching and host-to-device
transfer are excluded. After `--warmup` steps, `--steps` steps are timed in `--repeats`
windows; each window ends with `jax.block_until_ready` on the returned state and metrics,
so it measures device work plus per-step dispatch. The step time is reported as the
median and p10/p90 over windows, examples/s as the global batch over the median.
Compilation is excluded from the timing and reported separately
(`Trainer.compile_seconds`: train + eval step, no persistent compilation cache).

At most `--max_in_flight` (default: the config's `parallel.max_in_flight`) steps are dispatched ahead of the device. Without
a bound, JAX 0.10.2's CPU client with 2 forced host devices deadlocks in the step's
all-reduce once some 30 or more steps are queued ("Termination timeout for `all reduce
RendezvousKey...` of 40 seconds exceeded", then abort), with either backend; a plain
jitted all-reduce reproduces it, so it is not jaxdl's step. With pre-placed batches the
queue fills at once; the training loop puts each batch from the host, so its queue
stays shorter (it did not hang in the runs tried). On 1 device the bound of 8 cost
nothing measurable (within the run-to-run noise of a few percent).

Devices: as in `python -m experiments.NAME`, the CPU host split comes from XLA_FLAGS if it
sets --xla_force_host_platform_device_count, otherwise from config.parallel.host_devices.
It must be decided before JAX starts its backend, so one process measures one split;
`benchmarks.suite` runs the matrix in subprocesses.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODE = "synthetic-from-real-data: batches pre-placed on device, host input excluded"
HEADER = ("| experiment | backend | devices | batch (per device) | compile s | "
          "ms/step median [p10, p90] | examples/s |")
SEPARATOR = "|---|---|---|---|---:|---:|---:|"
HOST_DEVICE_FLAG = "xla_force_host_platform_device_count"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The benchmark's own flags, and the rest (`--config.KEY=VALUE` overrides)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_throughput", allow_abbrev=False,
        description="Time the experiment's compiled train step (input excluded).")
    parser.add_argument("--experiment", default="digits_cnn",
                        help="module in experiments/ whose get_config() is timed")
    parser.add_argument("--backend", choices=("pmap", "sharded"), default=None,
                        help="parallel backend (default: the experiment's)")
    parser.add_argument("--batch_size", type=int, default=0,
                        help="global batch size; 0 = keep config.data.batch_size")
    parser.add_argument("--steps", type=int, default=1500, help="timed steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timing windows the timed steps are split into")
    parser.add_argument("--batches", type=int, default=4,
                        help="distinct device batches pre-placed and cycled")
    parser.add_argument("--max_in_flight", type=int, default=None,
                        help="steps dispatched ahead of the device at most (0 = no bound; "
                             "default: the config's parallel.max_in_flight, as in training); "
                             "see the module doc: unbounded queues deadlock forced host devices")
    parser.add_argument("--json", default=None, help="append one JSON record (a line) here")
    parser.add_argument("--no_header", action="store_true",
                        help="print only the Markdown row, not the table header")
    args, rest = parser.parse_known_args(argv)
    for name in ("steps", "repeats", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if min(args.warmup, args.batch_size, args.max_in_flight or 0) < 0:
        parser.error("--warmup, --batch_size and --max_in_flight must be >= 0")
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    return args, rest


def load_config(args: argparse.Namespace, overrides: list[str]):
    """The experiment's validated config with `--config.*`, `--backend`, `--batch_size`."""
    from absl import flags
    from ml_collections import config_flags

    from jaxdl import config as config_lib

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    module = importlib.import_module(f"experiments.{args.experiment}")
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", module.get_config(), "experiment config",
                                    flag_values=flag_values, lock_config=True)
    flag_values(["step_throughput", *overrides])
    given = flag_values.config.to_dict()
    if args.backend:
        given["parallel"]["backend"] = args.backend
    if args.batch_size:
        given["data"]["batch_size"] = args.batch_size
    return config_lib.validate(given)


def set_host_devices(config) -> None:
    """Like `jaxdl.app`: XLA_FLAGS wins; otherwise config.parallel.host_devices, if set."""
    current = os.environ.get("XLA_FLAGS", "")
    if config.parallel.host_devices and f"--{HOST_DEVICE_FLAG}=" not in current:
        os.environ["XLA_FLAGS"] = (
            f"{current} --{HOST_DEVICE_FLAG}={config.parallel.host_devices}").strip()


def _split(total: int, parts: int) -> list[int]:
    parts = min(parts, total)
    return [total // parts + (i < total % parts) for i in range(parts)]


def measure(trainer, *, steps: int, warmup: int, repeats: int, batches: int,
            max_in_flight: int) -> dict:
    """Times `trainer.train_step`; returns the per-window step times and the last loss.

    At most `max_in_flight` steps (0 = no bound) are dispatched ahead of the device: before
    dispatching more, the metrics of the step that many steps back are waited for. Metrics
    are not donated, so waiting on them is safe while the state is donated.
    """
    import jax
    import numpy as np

    backend, train_step = trainer.backend, trainer.train_step
    device_batches = [backend.put_batch(trainer.train_batch(i)) for i in range(batches)]
    jax.block_until_ready(device_batches)
    state, metrics = trainer.state, None  # the state is donated: keep the returned one
    pending: collections.deque = collections.deque()
    step_index = 0

    def run(count: int):
        nonlocal state, metrics, step_index
        for _ in range(count):
            state, metrics = train_step(state, device_batches[step_index % batches])
            step_index += 1
            if max_in_flight:
                pending.append(metrics)
                if len(pending) > max_in_flight:
                    jax.block_until_ready(pending.popleft())
        jax.block_until_ready((state, metrics))
        pending.clear()

    run(warmup)
    window_seconds = []
    sizes = _split(steps, repeats)
    for size in sizes:
        start = time.perf_counter()
        run(size)
        window_seconds.append((time.perf_counter() - start) / size)

    sums = backend.get_metrics(metrics)["sums"]
    loss = float(sums["loss"]) / float(sums["count"])
    trainer.state = state  # the old buffers were donated
    per_step = np.asarray(window_seconds)
    return {
        "window_steps": sizes,
        "window_ms_per_step": [round(s * 1e3, 4) for s in window_seconds],
        "ms_per_step_median": float(np.median(per_step) * 1e3),
        "ms_per_step_p10": float(np.percentile(per_step, 10) * 1e3),
        "ms_per_step_p90": float(np.percentile(per_step, 90) * 1e3),
        "last_train_loss": loss,
    }


def markdown_row(record: dict) -> str:
    devices = f"{record['num_devices']} x {record['platform']} ({record['device_kind']})"
    return (f"| {record['experiment']} | {record['backend']} | {devices} | "
            f"{record['batch_size']} ({record['per_device_batch']}) | "
            f"{record['compile_seconds']:.2f} | {record['ms_per_step_median']:.3f} "
            f"[{record['ms_per_step_p10']:.3f}, {record['ms_per_step_p90']:.3f}] | "
            f"{record['examples_per_second']:.0f} |")


def _fail(error: BaseException) -> None:
    text = str(error).strip()
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import config as config_lib

    try:  # bad input (unknown experiment or key, wrong type or value): one line, status 2
        config = load_config(args, overrides)
    except (KeyError, AttributeError):  # what config_flags raises for an unknown key
        _fail(ValueError(f"unknown config key in {' '.join(overrides)}"))
    except Exception as e:  # noqa: BLE001 - flags, ConfigError, ImportError, ...
        _fail(e)
    set_host_devices(config)  # before the first JAX operation starts the backend

    import jax

    from jaxdl.training import environment, loop, parallel

    try:
        devices = parallel.select_devices(config.parallel.num_devices)
        config_lib.check_devices(config, len(devices))
    except ValueError as e:  # ConfigError included
        _fail(e)
    trainer = loop.build(config)
    timing = measure(trainer, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                     batches=args.batches,
                     max_in_flight=(config.parallel.max_in_flight if args.max_in_flight is None
                                    else args.max_in_flight))
    if not math.isfinite(timing["last_train_loss"]):
        raise FloatingPointError(f"non-finite train loss {timing['last_train_loss']}")

    backend = trainer.backend
    batch_size = config.data.batch_size
    record = {
        "benchmark": "step_throughput",
        "mode": MODE,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "experiment": args.experiment,
        "backend": backend.kind,
        "platform": backend.devices[0].platform,
        "device_kind": backend.devices[0].device_kind,
        "num_devices": backend.num_devices,
        "batch_size": batch_size,
        "per_device_batch": batch_size // backend.num_devices,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": len(timing["window_steps"]),
        "distinct_batches": args.batches,
        "max_in_flight": args.max_in_flight,
        "compile_seconds": trainer.compile_seconds,
        **timing,
        "examples_per_second": batch_size / (timing["ms_per_step_median"] / 1e3),
        "config_overrides": overrides,
        "env": environment.describe(backend.devices, backend.kind),
    }
    if not args.no_header:
        print(f"# {MODE}; compile excluded (reported); {record['repeats']} windows over "
              f"{args.steps} steps after {args.warmup} warmup, at most "
              f"{args.max_in_flight or 'unbounded'} steps in flight; jax {jax.__version__}")
        print(HEADER)
        print(SEPARATOR)
    print(markdown_row(record), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main()
