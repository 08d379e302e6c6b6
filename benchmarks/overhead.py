"""Framework overhead: jaxdl's train step against a hand-written plain JAX step of the same
model, timed in alternating windows in one process.

    python -m benchmarks.overhead --experiment mnist_cnn [--steps 300] [--warmup 20]
        [--repeats 10] [--backend pmap|sharded] [--json FILE] [--config.KEY=VALUE ...]
    python -m benchmarks.overhead --model resnet20 [...]

Both sides are built from one validated config and share everything that is not the
framework: the same Flax module (`trainer.task.model`, with its BatchNorm axis), the same
optax optimizer object (`trainer.tx`, schedule included), the same initial parameters,
optimizer state and rng, the same device batches, the same devices and layout (`sharded`:
one `jax.jit` with the batch split over a `data` mesh axis; `pmap`: `jax.pmap` with a
`pmean` of the gradients), and donated state on both. The plain step is what a user would
write by hand: cross-entropy (`optax`), `value_and_grad`, `tx.update`, `apply_updates`,
returning the loss. What jaxdl adds is the overhead measured: the padding mask, metrics as
(sum, count), gradient/parameter/update norms, the finite check, the monitor slot, and its
Python call path (`_CompiledStep`, the out-of-memory guard). Before timing, the first two
losses of both sides (from the initial state, then after one update) must agree, so the
two are the same computation. On-device augmentation is set to `none` (the plain step
mirrors none) unless `--config.data.augmentation` is given, which is then refused.

Timing: after `--warmup` steps per side, `--steps` steps per side in `--repeats` windows,
alternating which side goes first, each window ending with `jax.block_until_ready`; both
sides run through the same loop with at most `--max_in_flight` steps queued (see
benchmarks/step_throughput/measure.py for why the queue is bounded). Overhead % = jaxdl's median
ms/step over the plain step's, minus 1; also given per adjacent window pair (median,
range). `dispatch ms` is the host time spent inside the step call (Python and JAX dispatch,
not the device work, which runs asynchronously). Host input and compilation are excluded.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time

from benchmarks import step_throughput

FIRST_LOSS_RTOL = 1e-4  # float32 sums in another order


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead", allow_abbrev=False,
        description="jaxdl's train step vs a hand-written jax step of the same model.")
    parser.add_argument("--experiment", default="mnist_cnn",
                        help="module in experiments/ whose get_config() is timed")
    parser.add_argument("--model", choices=tuple(step_throughput.MODEL_FAMILIES), default=None,
                        help="time this model with the benchmark's config on random data")
    parser.add_argument("--backend", choices=("pmap", "sharded"), default=None,
                        help="parallel backend of both sides (default: the experiment's)")
    parser.add_argument("--batch_size", type=int, default=0,
                        help="global batch size; 0 = keep config.data.batch_size")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed steps per side before timing (>= 2: the first two "
                             "losses are compared)")
    parser.add_argument("--repeats", type=int, default=10, help="timing windows per side")
    parser.add_argument("--batches", type=int, default=4,
                        help="distinct device batches pre-placed and cycled")
    parser.add_argument("--max_in_flight", type=int, default=None,
                        help="steps queued ahead of the device at most (0 = no bound; "
                             "default: the config's parallel.max_in_flight)")
    parser.add_argument("--json", default=None, help="append one JSON record (a line) here")
    args, rest = parser.parse_known_args(argv)
    if min(args.steps, args.repeats, args.batches) < 1 or args.warmup < 2:
        parser.error("--steps, --repeats and --batches must be >= 1, --warmup >= 2")
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.model:
        args.experiment = args.model
    args.compare = None  # what step_throughput.load_config asks of its own flags
    if not any(a.startswith("--config.data.augmentation=") for a in rest):
        rest.append("--config.data.augmentation=none")  # the plain step mirrors none
    return args, rest


def check_comparable(config) -> None:
    """The plain step mirrors single-loss classification with an optax chain that needs
    no extra arguments; anything else would time two different computations."""
    if config.task.name != "classification" or config.task.loss != "softmax_cross_entropy":
        raise ValueError("the overhead benchmark mirrors classification with "
                         f"softmax_cross_entropy, not {config.task.name}/{config.task.loss}")
    if config.schedule.name == "plateau":
        raise ValueError("schedule 'plateau' needs the monitored value jaxdl passes; the plain "
                         "step does not mirror it")
    if config.data.augmentation != "none":
        raise ValueError("the plain step mirrors no augmentation: set "
                         "--config.data.augmentation=none")
    if config.guard.skip_nonfinite:
        raise ValueError("the plain step mirrors no non-finite guard: set "
                         "--config.guard.skip_nonfinite=False")


def make_plain_step(model, tx, *, label_smoothing: float, axis_name: str | None):
    """`step(state, batch) -> (state, loss)`, written as a user would with plain JAX.

    `state` is a dict of params, model_state (BatchNorm statistics), opt_state, rng and
    step. Dropout draws as jaxdl draws it (the key folded with the step, each example's
    mask from its row in the global batch), so both sides draw the same masks and their
    losses agree."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    from jaxdl.models import layers

    def loss_fn(params, model_state, batch, rng, rows):
        variables = {"params": params, **model_state}
        with layers.per_example_rngs(rows):
            return _loss(variables, model_state, batch, rng)

    def _loss(variables, model_state, batch, rng):
        if model_state:
            logits, model_state = model.apply(variables, batch["inputs"], train=True,
                                              rngs={"dropout": rng}, mutable=list(model_state))
        else:
            logits = model.apply(variables, batch["inputs"], train=True, rngs={"dropout": rng})
        logits = logits.astype(jnp.float32)
        labels = optax.smooth_labels(jax.nn.one_hot(batch["targets"], logits.shape[-1]),
                                     label_smoothing)
        return optax.softmax_cross_entropy(logits, labels).mean(), model_state

    def step(state, batch):
        rng = jax.random.fold_in(state["rng"], state["step"])
        n = batch["inputs"].shape[0]
        rows = (lax.axis_index(axis_name) * n if axis_name is not None else 0) + jnp.arange(n)
        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["model_state"], batch, rng, rows)
        if axis_name is not None:
            grads, loss = lax.pmean((grads, loss), axis_name)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates),
                "model_state": model_state, "opt_state": opt_state, "rng": state["rng"],
                "step": state["step"] + 1}, loss

    return step


class StepRunner:
    """Runs `call(state, batch) -> (state, out)` over pre-placed batches, the same loop for
    both sides: at most `max_in_flight` steps queued (waiting on `out` of the step that
    many back), the state kept (it is donated), the host time inside `call` summed."""

    def __init__(self, call, state, batches, *, max_in_flight: int):
        self.call, self.state, self.batches = call, state, batches
        self.max_in_flight = max_in_flight
        self.index, self.out, self.early_outputs = 0, None, []
        self.dispatch_seconds = 0.0

    def run(self, count: int) -> None:
        import collections

        import jax

        pending = collections.deque()
        for _ in range(count):
            start = time.perf_counter()
            self.state, self.out = self.call(self.state,
                                             self.batches[self.index % len(self.batches)])
            self.dispatch_seconds += time.perf_counter() - start
            if self.index < 2:
                self.early_outputs.append(self.out)  # outputs are not donated
            self.index += 1
            if self.max_in_flight:
                pending.append(self.out)
                if len(pending) > self.max_in_flight:
                    jax.block_until_ready(pending.popleft())
        jax.block_until_ready((self.state, self.out))


def _place_plain_state(host_state, devices, kind: str):
    """The initial state as plain device arrays: replicated for jit, stacked for pmap."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devices), ("data",))
    if kind == "pmap":
        n = len(devices)
        sharding = NamedSharding(mesh, PartitionSpec("data"))
        return jax.tree.map(lambda x: jax.device_put(
            np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), sharding), host_state)
    return jax.device_put(host_state, NamedSharding(mesh, PartitionSpec()))


def build_plain(trainer):
    """The compiled plain step, its initial state (the trainer's, copied) and a function
    reading the loss from its output."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    backend, config = trainer.backend, trainer.config
    host = backend.get_state(trainer.state)  # before jaxdl's first step donates it
    state = _place_plain_state({"params": host.params, "model_state": dict(host.model_state),
                                "opt_state": host.opt_state, "rng": host.rng,
                                "step": host.step}, backend.devices, backend.kind)
    step = make_plain_step(trainer.task.model, trainer.tx,
                           label_smoothing=config.task.label_smoothing,
                           axis_name=backend.axis_name)
    if backend.kind == "pmap":
        call = jax.pmap(step, axis_name=backend.axis_name, devices=backend.devices,
                        donate_argnums=0)
        return call, state, lambda loss: float(np.asarray(loss)[0])
    mesh = Mesh(np.array(backend.devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    call = jax.jit(step, in_shardings=(replicated, NamedSharding(mesh, PartitionSpec("data"))),
                   out_shardings=replicated, donate_argnums=0)
    return call, state, lambda loss: float(loss)


def time_sides(sides: dict, *, steps: int, warmup: int, repeats: int) -> dict:
    """Warmup, then `repeats` windows per side, alternating which side goes first; returns
    each side's seconds per step per window and dispatch seconds per call per window."""
    for runner in sides.values():
        runner.run(warmup)
    seconds = {name: [] for name in sides}
    dispatch = {name: [] for name in sides}
    names = list(sides)
    for window, size in enumerate(step_throughput.split(steps, repeats)):
        for name in (names if window % 2 == 0 else names[::-1]):
            runner = sides[name]
            runner.dispatch_seconds = 0.0
            start = time.perf_counter()
            runner.run(size)
            seconds[name].append((time.perf_counter() - start) / size)
            dispatch[name].append(runner.dispatch_seconds / size)
    return {"seconds": seconds, "dispatch": dispatch}


def check_same_computation(sides: dict) -> None:
    """Raises unless both sides had the same loss from the initial state and after one
    update: then model, loss, gradients and optimizer step agree."""
    for key in ("first_loss", "second_loss"):
        ours, theirs = sides["jaxdl"][key], sides["plain"][key]
        if not math.isclose(ours, theirs, rel_tol=FIRST_LOSS_RTOL, abs_tol=1e-6):
            raise RuntimeError(f"{key}: jaxdl {ours:.6f} vs plain {theirs:.6f} from the same "
                               "state and batches: the plain step is not the same computation")


def summarize(record: dict, timing: dict, batch_size: int) -> dict:
    """Per-side statistics and the overhead of jaxdl over the plain step."""
    import numpy as np

    for name, secs in timing["seconds"].items():
        side = record["sides"][name]
        side.update(step_throughput.window_stats(secs))
        side["examples_per_second"] = batch_size / (side["ms_per_step_median"] / 1e3)
        side["dispatch_ms_median"] = float(np.median(timing["dispatch"][name]) * 1e3)
    jaxdl, plain = record["sides"]["jaxdl"], record["sides"]["plain"]
    per_window = [100 * (j / p - 1) for j, p in zip(timing["seconds"]["jaxdl"],
                                                   timing["seconds"]["plain"])]
    record["overhead_percent"] = 100 * (jaxdl["ms_per_step_median"]
                                        / plain["ms_per_step_median"] - 1)
    record["overhead_percent_per_window"] = per_window
    record["overhead_percent_per_window_median"] = float(np.median(per_window))
    return record


def markdown(record: dict) -> str:
    lines = [("| side | ms/step median [p10, p90] | examples/s | dispatch ms/call | "
              "first loss | loss after 1 update |"), "|---|---:|---:|---:|---:|---:|"]
    for name, s in record["sides"].items():
        lines.append(f"| {name} | {s['ms_per_step_median']:.3f} [{s['ms_per_step_p10']:.3f}, "
                     f"{s['ms_per_step_p90']:.3f}] | {s['examples_per_second']:.0f} | "
                     f"{s['dispatch_ms_median']:.3f} | {s['first_loss']:.6f} | "
                     f"{s['second_loss']:.6f} |")
    pw = record["overhead_percent_per_window"]
    lines.append(f"\noverhead of jaxdl over the plain step: {record['overhead_percent']:+.1f}% "
                 f"(per window: median {record['overhead_percent_per_window_median']:+.1f}%, "
                 f"range {min(pw):+.1f}% to {max(pw):+.1f}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import app

    try:  # bad input: one line, status 2
        config = step_throughput.load_config(args, overrides)
        check_comparable(config)
        app.prepare_process(config)  # the run's host-device split, before JAX starts
    except ValueError as e:  # ConfigError included
        step_throughput.fail(e)

    import jax

    from jaxdl.training import environment, loop

    trainer = loop.build(config)
    backend = trainer.backend
    max_in_flight = (config.parallel.max_in_flight if args.max_in_flight is None
                     else args.max_in_flight)
    batches = [backend.put_batch(trainer.train_batch(i)) for i in range(args.batches)]
    plain_call, plain_state, plain_loss = build_plain(trainer)

    def jaxdl_loss(metrics) -> float:
        sums = backend.get_metrics(metrics)["sums"]
        return float(sums["loss"]) / float(sums["count"])

    sides = {"jaxdl": StepRunner(trainer.train_step, trainer.state, batches,
                                 max_in_flight=max_in_flight),
             "plain": StepRunner(plain_call, plain_state, batches, max_in_flight=max_in_flight)}
    load_start = os.getloadavg()
    timing = time_sides(sides, steps=args.steps, warmup=args.warmup, repeats=args.repeats)
    trainer.state = sides["jaxdl"].state  # the old buffers were donated
    read = {"jaxdl": jaxdl_loss, "plain": plain_loss}
    record = {
        "benchmark": "overhead",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "experiment": args.experiment,
        "backend": backend.kind,
        "platform": backend.devices[0].platform,
        "num_devices": backend.num_devices,
        "batch_size": config.data.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "max_in_flight": max_in_flight,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "sides": {name: {"first_loss": read[name](runner.early_outputs[0]),
                         "second_loss": read[name](runner.early_outputs[1]),
                         "last_loss": read[name](runner.out)}
                  for name, runner in sides.items()},
        "config_overrides": overrides,
        "env": environment.describe(backend.devices, backend.kind),
        "jax": jax.__version__,
    }
    check_same_computation(record["sides"])
    summarize(record, timing, config.data.batch_size)
    print(f"# {args.experiment}, {backend.kind} on {backend.num_devices} x "
          f"{record['platform']}, global batch {record['batch_size']}; {args.repeats} "
          f"alternating windows of {args.steps} steps per side after {args.warmup} warmup; "
          f"load average {load_start[0]:.2f} at start, {record['loadavg_end'][0]:.2f} at end")
    print(markdown(record), flush=True)
    step_throughput.append_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
