"""The command line of `python -m benchmarks.step_throughput`: flags, config, main."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import sys
import tempfile
from pathlib import Path

from benchmarks.step_throughput import compare, families, measure, report


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The benchmark's own flags, and the rest (`--config.KEY=VALUE` overrides)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_throughput", allow_abbrev=False,
        description="Time the experiment's compiled train step (input excluded).")
    parser.add_argument("--experiment", default="digits_cnn",
                        help="the experiment whose get_config() is timed: a name in "
                             "experiments/, a dotted module or a .py file")
    parser.add_argument("--model", choices=tuple(families.MODEL_FAMILIES), default=None,
                        help="synthetic mode: time this model family with its experiment's "
                             "config (families.py) on random data, instead of --experiment")
    parser.add_argument("--compare", choices=("torch",), default=None,
                        help="also time the PyTorch twin of the step, alternating windows "
                             "(benchmarks/torch_twins; needs the 'bench' extra)")
    parser.add_argument("--no_torch_compile", action="store_true",
                        help="with --compare torch: time torch eager only")
    parser.add_argument("--torch_memory_format", choices=("contiguous", "channels_last"),
                        default=None, help="with --compare torch: override the reference's "
                                           "measured choice")
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
                             "see measure.py: unbounded queues deadlock forced host devices")
    parser.add_argument("--warm_compile", action="store_true",
                        help="also time a warm compile: build the trainer twice with the "
                             "persistent compilation cache in a fresh temporary directory "
                             "(the first build fills it, the second reads it)")
    parser.add_argument("--conv_grad", choices=("jaxdl", "xla"), default="jaxdl",
                        help="the convolutions' weight gradient: as the models take it (on "
                             "CPU, reading the input from its own buffer; "
                             "jaxdl/models/layers.py) or as lax.conv_general_dilated alone "
                             "does (the A/B of that choice)")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="after timing, trace --profile_steps more steps with "
                             "jax.profiler into DIR and print the ops that took the most "
                             "time, named by the model code they came from "
                             "(jaxdl/training/op_profile.py)")
    parser.add_argument("--profile_steps", type=int, default=10,
                        help="with --profile: steps traced")
    parser.add_argument("--profile_ops", type=int, default=15,
                        help="with --profile: rows of the table (the ops with most time)")
    parser.add_argument("--json", default=None, help="append one JSON record (a line) here")
    parser.add_argument("--no_header", action="store_true",
                        help="print only the Markdown row, not the table header")
    args, rest = parser.parse_known_args(argv)
    for name in ("steps", "repeats", "batches", "profile_steps", "profile_ops"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if min(args.warmup, args.batch_size, args.max_in_flight or 0) < 0:
        parser.error("--warmup, --batch_size and --max_in_flight must be >= 0")
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.model:
        args.experiment = args.model
    if args.compare and args.model and args.model not in families.COMPARABLE:
        parser.error(f"--compare torch has references for --model {', '.join(families.COMPARABLE)} "
                     f"(and --experiment mnist_cnn), not {args.model!r}")
    if args.compare and args.profile:
        parser.error("--profile traces jaxdl's step alone; run it without --compare")
    if args.compare and args.warmup < 1:
        parser.error("--compare needs --warmup >= 1: the first step checks that both sides "
                     "start from the same loss")
    return args, rest


def load_config(args: argparse.Namespace, overrides: list[str]):
    """The experiment's (or --model family's) validated config, as `jaxdl.app.load_config`
    gives it, with `--config.*`, then `--backend` and `--batch_size` applied. A synthetic
    family gets as many rows as the distinct batches timed (the eval step is compiled, not
    run)."""
    from jaxdl import app
    from jaxdl import config as config_lib

    base = families.MODEL_FAMILIES[args.model]() if args.model else args.experiment
    own = ([f"--config.parallel.backend={args.backend}"] if args.backend else []) + \
        ([f"--config.data.batch_size={args.batch_size}"] if args.batch_size else [])
    config = app.load_config(base, [*overrides, *own])
    if config.data.name != families.SYNTHETIC_SOURCE:
        return config
    given = config.to_dict()
    batch = given["data"]["batch_size"]
    given["data"]["eval_batch_size"] = batch
    given["data"]["options"].update(examples=batch * args.batches, validation_examples=1)
    if args.compare:  # the torch twin does not mirror on-device augmentation
        given["data"]["augmentation"] = "none"
    return config_lib.validate(given)


def conv_grad_context(choice: str):
    """A context in which the models' convolutions trace with `choice`'s weight gradient:
    'jaxdl' is what they do anyway; 'xla' is lax's own
    (`jaxdl.models.layers.plain_convolutions`)."""
    if choice == "jaxdl":
        return contextlib.nullcontext()
    from jaxdl.models import layers
    return layers.plain_convolutions()


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import app
    from jaxdl import config as config_lib

    try:  # bad input (unknown experiment or key, wrong type or value): one line, status 2
        config = load_config(args, overrides)
        # The run's process set-up: the CPU split into config.parallel.host_devices (unless
        # XLA_FLAGS sets it), before the first JAX operation. With --warm_compile, JAX's
        # persistent cache in a fresh directory (the cold build fills it); else none, so
        # compile_seconds is a cold compile.
        cache = app.prepare_process(config, compilation_cache_dir=(
            tempfile.mkdtemp(prefix="jaxdl-bench-cache-") if args.warm_compile else None))
    except config_lib.ConfigError as e:
        report.fail(e)

    import jax

    from jaxdl.training import environment, loop, parallel

    try:
        devices = parallel.select_devices(config.parallel.num_devices)
        config_lib.check_devices(config, len(devices))
    except ValueError as e:  # ConfigError included
        report.fail(e)
    if args.compare:
        from jaxdl import data as data_lib

        if importlib.util.find_spec("torch") is None:
            report.fail(ImportError("--compare torch needs PyTorch, an optional extra: "
                                    "pip install -e '.[bench]'"))
        if data_lib.source_location(config.data.name) is None:
            print(f"skipped: --compare {args.compare} for {args.experiment} needs the "
                  f"{config.data.name} files, which are not on this machine (see README.md, "
                  "Data: lookup order; `python -m jaxdl.data list`)", file=sys.stderr)
            return {}
    compile_fields = {}
    with conv_grad_context(args.conv_grad):  # the steps are traced and compiled in build
        trainer = loop.build(config)
    if cache is not None:
        misses = cache.misses
        with conv_grad_context(args.conv_grad):
            warm = loop.build(config)  # same programs: read back from the cache
        compile_fields = {"compile_seconds_cold": trainer.compile_seconds,
                          "compile_seconds_warm": warm.compile_seconds,
                          "warm_cache_hits": cache.hits, "warm_cache_misses": cache.misses - misses}
        del warm
        print(f"# compile (train + eval step): cold {trainer.compile_seconds:.2f} s, warm "
              f"{compile_fields['compile_seconds_warm']:.2f} s from the persistent cache "
              f"({cache.hits} hits, {compile_fields['warm_cache_misses']} misses on the warm "
              "build)")
    max_in_flight = (config.parallel.max_in_flight if args.max_in_flight is None
                     else args.max_in_flight)
    if args.compare:
        record = compare.compare_torch(trainer, config, args, max_in_flight)
        record.update(compile_fields)
        record["config_overrides"] = overrides
        record["conv_grad"] = args.conv_grad
        print(f"# {record['mode']}; {record['repeats']} alternating windows of "
              f"{args.steps} timed steps per side after {args.warmup} warmup; "
              f"{record['precision']}; "
              f"{args.experiment}, global batch {record['batch_size']}; jax {jax.__version__}, "
              f"torch {record['torch']['version']}; load average "
              f"{record['loadavg_start'][0]:.2f} at start, {record['loadavg_end'][0]:.2f} "
              "at end")
        print(report.compare_markdown(record), flush=True)
        for note in record["notes"]:
            print(f"note: {note}")
        report.append_json(args.json, record)
        return record
    timing = measure.measure(trainer, steps=args.steps, warmup=args.warmup,
                             repeats=args.repeats, batches=args.batches,
                             max_in_flight=max_in_flight)
    if not math.isfinite(timing["last_train_loss"]):
        raise FloatingPointError(f"non-finite train loss {timing['last_train_loss']}")

    backend = trainer.backend
    batch_size = config.data.batch_size
    record = {
        "benchmark": "step_throughput",
        "mode": report.RANDOM_MODE if args.model else report.MODE,
        **report.run_fields(args, trainer, timing["window_steps"], max_in_flight),
        **timing,
        "examples_per_second": batch_size / (timing["ms_per_step_median"] / 1e3),
        **measure.efficiency(trainer, timing["ms_per_step_median"]),
        "precision": config.precision,
        "conv_grad": args.conv_grad,
        "config_overrides": overrides,
        "env": environment.describe(backend.devices, backend.kind),
        **compile_fields,
    }
    if not args.no_header:
        print(f"# {record['mode']}; compile excluded (reported); {record['repeats']} windows over "
              f"{args.steps} steps after {args.warmup} warmup, at most "
              f"{max_in_flight or 'unbounded'} steps in flight; jax {jax.__version__}")
        print(report.HEADER)
        print(report.SEPARATOR)
    print(report.markdown_row(record), flush=True)
    if args.profile:
        record["profile"] = profile_step(trainer, args, max_in_flight)
    report.append_json(args.json, record)
    return record


def profile_step(trainer, args, max_in_flight: int) -> dict:
    """Traces `args.profile_steps` steps into `args.profile`; prints and returns the ops that
    took the most time (`jaxdl.training.op_profile`)."""
    import jax

    from jaxdl.training import op_profile

    runner = measure.JaxdlSteps(trainer, batches=args.batches, max_in_flight=max_in_flight)
    runner.run(1)  # the first step after a new runner places fresh batches: not traced
    directory = Path(args.profile)
    before = set(directory.rglob(op_profile.TRACE_GLOB))
    with jax.profiler.trace(str(directory), create_perfetto_trace=True):
        runner.run(args.profile_steps)
    runner.finish()
    found = op_profile.report(op_profile.find_trace(directory, before), args.profile_steps,
                              trainer.train_step_hlo(), limit=args.profile_ops)
    print("\n" + op_profile.report_markdown(found, trainer.backend.num_devices,
                                            limit=args.profile_ops), flush=True)
    return found
