"""`python -m jaxdl.sweep`: hyperparameter search and cross-validation over ordinary runs.

    python -m jaxdl.sweep experiments.NAME --workdir=DIR [--grid KEY=v1,v2 ...]
        [--optuna KEY=log:LOW:HIGH ... --trials N --pruner median|hyperband]
        [--folds K] [--seeds N] [--workers N] [--storage URL] [--config.KEY=VALUE ...]
    python -m jaxdl.sweep report DIR
    python -m jaxdl.sweep lr_find experiments.NAME --workdir=DIR [--steps N]

The sweep's entry point: like jaxdl/app.py it reads flags and sets up the process, with
the app's own load_config and prepare_process, so it sits above the app (with the
experiments), while the rest of jaxdl.sweep sits below it. Bad input
ends with one line and exit status 2 before anything is written. Rerunning the same
command continues a killed sweep; `--workers N` starts N worker processes, each on its
share of the CPU cores (and of CUDA_VISIBLE_DEVICES when that lists several).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna

from jaxdl import app
from jaxdl.schema import ConfigError
from jaxdl.sweep import lr_find, results, space, study

WORKER_ENV = "JAXDL_SWEEP_WORKER"  # "i/N": this process is worker i of N
# Optuna's own default, so the flag says what an unset pruner would do.
_MEDIAN_STARTUP = inspect.signature(optuna.pruners.MedianPruner).parameters[
    "n_startup_trials"].default


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        app._fail(message)


def _experiment(name: str) -> str:
    return name.removeprefix("experiments.")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m jaxdl.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", help="experiments.NAME (or 'report DIR', 'lr_find NAME')")
    p.add_argument("--workdir", required=True, help="the sweep's directory")
    p.add_argument("--variant", help="the experiment's named config, as in app.py")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=v1,v2",
                   help="a grid axis (repeat for a product)")
    p.add_argument("--optuna", action="append", default=[], metavar="KEY=KIND:...",
                   help="an Optuna search dimension: log:LOW:HIGH, float:LOW:HIGH, "
                        "int:LOW:HIGH, choice:a,b; or a JSON file of them")
    p.add_argument("--trials", type=int, default=0, help="Optuna trials in all")
    p.add_argument("--pruner", choices=("none", "median", "hyperband"), default="none",
                   help="stop bad Optuna trials at an evaluation")
    p.add_argument("--pruner_startup_trials", type=int, default=_MEDIAN_STARTUP,
                   help="median pruner: finished trials before it prunes (Optuna's default)")
    p.add_argument("--folds", type=int, default=0, help="stratified K-fold CV per trial")
    p.add_argument("--seeds", type=int, default=1, help="runs per trial with seeds "
                   "seed, seed+1, ...")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--storage", help="a database URL for a study shared by several hosts "
                   "(default: Optuna's journal file in --workdir)")
    p.add_argument("--objective", help="SPLIT/METRIC to optimise (default: the "
                   "experiment's checkpoint.monitor); never a test split")
    p.add_argument("--mode", choices=("max", "min"), help="the objective's direction "
                   "(default: checkpoint.mode)")
    _cache_flag(p)
    return p


def _cache_flag(p: argparse.ArgumentParser) -> None:
    # The app's default: the trials of a sweep differ only in constants, the folds and
    # seeds of one trial not at all, so most of their compilations are cache hits.
    p.add_argument("--compilation_cache_dir", default=app._default_cache_dir(),
                   help="persistent XLA compilation cache ('' = off)")


def _lr_parser() -> argparse.ArgumentParser:
    # Defaults as fastai's lr_find (start_lr, end_lr) over a few hundred steps.
    p = _Parser(prog="python -m jaxdl.sweep lr_find", description=lr_find.__doc__)
    p.add_argument("experiment")
    p.add_argument("--workdir", required=True)
    p.add_argument("--variant")
    p.add_argument("--steps", type=int, default=200, help="steps of the exponential ramp")
    p.add_argument("--min_lr", type=float, default=1e-7)
    p.add_argument("--max_lr", type=float, default=10.0)
    _cache_flag(p)
    return p


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    overrides = [a for a in argv if a.startswith("--config.")]
    return [a for a in argv if not a.startswith("--config.")], overrides


def _share(worker: int, workers: int) -> None:
    """Gives worker `worker` its share of the CPU cores and of the listed GPUs."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= workers:
        os.sched_setaffinity(0, cores[worker::workers])
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    if len(gpus) >= workers:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[worker::workers])


def _die_with_parent() -> None:
    """A worker ends when the sweep process does, even by SIGKILL (Linux prctl)."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def sweep(argv: list[str]) -> None:
    args_list, overrides = _split_overrides(argv)
    args = _parser().parse_args(args_list)
    experiment = _experiment(args.experiment)
    directory = Path(args.workdir).expanduser().absolute()
    try:
        base = app.load_config(experiment, overrides, variant=args.variant)
        spec = space.make_spec(experiment, args.variant, overrides, args.grid, args.optuna,
                               args.folds, args.seeds, args.objective, args.mode,
                               base.checkpoint.monitor, base.checkpoint.mode, args.pruner)
        if not spec.optuna and args.trials:
            raise ConfigError("--trials counts Optuna trials; give the space with --optuna "
                              "(a grid runs every point)")
        if spec.optuna and args.trials < 1:
            raise ConfigError("--optuna needs --trials N (N >= 1)")
        if args.workers < 1:
            raise ConfigError(f"--workers={args.workers}: needs at least 1")
        exists = study.check_directory(directory, spec)
        storage = study.open_storage(directory, args.storage) if args.storage else None
        configure = functools.partial(app.load_config, experiment, variant=args.variant)
        runner = study.Sweep(directory=directory, spec=spec, configure=configure,
                             storage=storage, budget=args.trials,
                             pruner_startup_trials=args.pruner_startup_trials)
        runner.check()
    except ConfigError as e:
        app._fail(str(e))
    if not exists:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / study.SPEC_FILENAME).write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    if runner.storage is None:
        runner.storage = study.open_storage(directory, None)
    print(f"sweep {study.study_name(spec)} in {directory}"
          f"{f' (study in {args.storage})' if args.storage else ''}", file=sys.stderr)

    def write_results():
        results.write(directory, *results.load(directory))

    runner.on_trial_end = write_results
    if args.workers > 1 and WORKER_ENV not in os.environ:
        children = [subprocess.Popen([sys.executable, "-m", "jaxdl.sweep", *argv],
                                     env={**os.environ, WORKER_ENV: f"{i}/{args.workers}"},
                                     preexec_fn=_die_with_parent)
                    for i in range(args.workers)]
        codes = [child.wait() for child in children]
        write_results()
        if any(codes):
            sys.exit(next(c for c in codes if c))
    else:
        if WORKER_ENV in os.environ:
            worker, workers = (int(x) for x in os.environ[WORKER_ENV].split("/"))
            _share(worker, workers)
            runner.worker = worker
        try:
            app.prepare_process(base, compilation_cache_dir=args.compilation_cache_dir)
        except ConfigError as e:
            app._fail(str(e))
        stop = app._StopOnSignal()  # a first SIGTERM checkpoints the trial's run, then stops
        runner.should_stop = stop.requested
        from jaxdl.training import loop
        try:
            runner.work()
        except loop.RunInterrupted as e:
            print(f"{e}; rerun the same command to resume the sweep", file=sys.stderr)
            sys.exit(128 + stop.signal)
        except ConfigError as e:  # e.g. a trial's checkpoint another config wrote
            app._fail(str(e))
        write_results()
    if WORKER_ENV not in os.environ:  # the sweep's process prints the table, not each worker
        print(results.table(*results.load(directory)))


def report(argv: list[str]) -> None:
    if len(argv) != 1:
        app._fail("usage: python -m jaxdl.sweep report DIR")
    directory = Path(argv[0])
    if not (directory / study.SPEC_FILENAME).is_file():
        app._fail(f"{directory} holds no sweep ({study.SPEC_FILENAME})")
    spec, records = results.load(directory)
    results.write(directory, spec, records)
    print(results.table(spec, records))


def find_lr(argv: list[str]) -> None:
    args_list, overrides = _split_overrides(argv)
    args = _lr_parser().parse_args(args_list)
    experiment = _experiment(args.experiment)
    directory = Path(args.workdir).expanduser().absolute()
    try:
        if args.steps < 3 or not 0 < args.min_lr < args.max_lr:
            raise ConfigError("lr_find needs --steps >= 3 and 0 < --min_lr < --max_lr")
        if directory.exists() and any(p.name != lr_find.RUN_DIRNAME for p in directory.iterdir()
                                      if p.name not in (lr_find.PLOT_FILENAME,
                                                        lr_find.RESULT_FILENAME)):
            raise ConfigError(f"--workdir={directory} holds files other than a range test's")
        config = app.load_config(experiment, [*overrides, *lr_find.overrides(
            args.steps, args.min_lr, args.max_lr)], variant=args.variant)
        app.prepare_process(config, compilation_cache_dir=args.compilation_cache_dir)
    except ConfigError as e:
        app._fail(str(e))
    from jaxdl.training import loop
    try:
        loop.train_and_evaluate(config, directory / lr_find.RUN_DIRNAME)
    except loop.NonFiniteError as e:  # the ramp went past divergence: the curve up to it
        print(f"the loss diverged ({str(e).splitlines()[0]}); using the steps before it",
              file=sys.stderr)
    try:
        found = lr_find.report(directory, experiment)
    except ValueError as e:
        app._fail(str(e))
    print(f"suggested learning rate {found['steepest']:.3g} (steepest descent of the "
          f"smoothed loss); minimum/10: {found['minimum_over_10']:.3g}; plot "
          f"{directory / lr_find.PLOT_FILENAME}")


def main(argv: list[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study load
    if argv and argv[0] == "report":
        report(argv[1:])
    elif argv and argv[0] == "lr_find":
        find_lr(argv[1:])
    else:
        sweep(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
