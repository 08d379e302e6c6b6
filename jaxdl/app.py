"""The experiment entry point: `python -m experiments.NAME --workdir=DIR --config.KEY=VALUE`.

This is the only module that reads flags or changes the process: XLA flags (host device
split, determinism) before JAX starts, the persistent compilation cache, jax.distributed
(through cluster.py), and exit codes. Bad input (unknown key, wrong type, impossible
value, missing --workdir) ends with one line on stderr and exit status 2, before anything
is written; a multi-host run that loses a process ends the others with one line and exit
status 3.

Tools that are not an experiment run (benchmarks, sweeps, analysis) reuse its set-up
instead of copying it: `load_config(experiment, overrides)` gives the validated config an
experiment runs with, `prepare_process(config, ...)` sets up the process as a run does.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections
from absl import app as absl_app
from absl import flags

EXIT_BAD_INPUT = 2
EXIT_PROCESS_LOST = 3  # a multi-process run lost one of its processes


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _refusal(message: str) -> Exception:
    from jaxdl.schema import ConfigError
    return ConfigError(message)


# A bare `--fast_dev_run`, as Lightning's `fast_dev_run=True`: one train step.
FAST_DEV_RUN_STEPS = 1


def _bare_fast_dev_run(argv: list[str]) -> list[str]:
    """`argv` with a bare `--fast_dev_run` (no `=N` and no number after it) spelled
    `--fast_dev_run=FAST_DEV_RUN_STEPS`: absl's integer flags need a value."""
    out = list(argv)
    for i, arg in enumerate(out):
        following = out[i + 1] if i + 1 < len(out) else ""
        if arg == "--fast_dev_run" and not following.lstrip("-").isdigit():
            out[i] = f"--fast_dev_run={FAST_DEV_RUN_STEPS}"
    return out


def _variant_of(get_config: Callable[..., ml_collections.ConfigDict], argv: list[str]
                ) -> Callable[[], ml_collections.ConfigDict]:
    """`get_config` bound to `--variant=NAME` when given: an experiment whose
    `get_config(variant)` pins several set-ups (a CPU-sized and a GPU-sized one). Read
    before the config flag is defined, as its defaults come from the variant."""
    variant = None
    for i, arg in enumerate(argv[1:], start=1):
        if arg.startswith("--variant="):
            variant = arg.partition("=")[2]
        elif arg == "--variant" and i + 1 < len(argv):
            variant = argv[i + 1]
    if variant is None:
        return get_config
    if not inspect.signature(get_config).parameters:
        _fail(f"--variant={variant}: this experiment has one config; its get_config() takes "
              "no variant")
    try:
        get_config(variant)
    except ValueError as e:
        _fail(f"--variant={variant}: {e}")
    return functools.partial(get_config, variant)


def _override_error(error: Exception, defaults: ml_collections.ConfigDict,
                    argv: Sequence[str]) -> str:
    """One line naming the --config.* override in `argv` that cannot apply, with the valid
    keys (for the optimizer or schedule: the fields of the one named)."""
    from jaxdl import config as config_lib
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config."):].split("=")[0].split(".")
        if len(path) == 2 and path[0] in ("optimizer", "schedule") and path[0] in defaults:
            problem = config_lib.not_read(path[0], defaults[path[0]].get("name"), path[1])
            if problem is not None:
                return problem
        section, parents = defaults, []
        for key in path:
            if not isinstance(section, ml_collections.ConfigDict) or key not in section:
                where = ".".join(["config", *parents])
                valid = ", ".join(sorted(section)) if isinstance(section, ml_collections.ConfigDict) else ""
                return f"--config.{'.'.join(path)}: unknown key; valid keys of {where}: {valid}"
            section, parents = section[key], parents + [key]
    return str(error).strip().splitlines()[0] if str(error) else type(error).__name__


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxdl", "xla")


def _set_xla_flag(name: str, value) -> None:
    """Adds --name=value to XLA_FLAGS unless the user set that flag already."""
    current = os.environ.get("XLA_FLAGS", "")
    if f"--{name}=" not in current:
        os.environ["XLA_FLAGS"] = f"{current} --{name}={value}".strip()


def _make_deterministic(seed: int) -> None:
    """Asks XLA and tf.data for run-to-run determinism and seeds the global RNGs user code
    may draw from (jaxdl's own randomness is already a pure function of the seed)."""
    from jaxdl.training import environment
    # GPU only (CPU XLA is deterministic already); XLA parses it on every build. It fails
    # ops without a deterministic kernel, e.g. max-pool's gradient (google/flax#4233).
    _set_xla_flag("xla_gpu_deterministic_ops", "true")
    if not environment.deterministic_xla():
        from jaxdl.schema import ConfigError
        raise ConfigError("--deterministic conflicts with XLA_FLAGS "
                          "--xla_gpu_deterministic_ops="
                          f"{environment.xla_flag('xla_gpu_deterministic_ops')}")
    os.environ["TF_DETERMINISTIC_OPS"] = "1"  # TensorFlow ops behind tf.data / TFDS
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)  # the legacy RNG takes only 32-bit seeds


class _CacheCounter(logging.Filter):
    """Counts JAX's persistent-cache hit and miss records, then lets through only those the
    user would have seen anyway: they are DEBUG records, and absl's root handler would
    print every DEBUG line of the compiler logger."""

    def __init__(self, shown_level: int):
        super().__init__()
        self.shown_level, self.hits, self.misses = shown_level, 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Persistent compilation cache hit"):
            self.hits += 1
        elif message.startswith("PERSISTENT COMPILATION CACHE MISS"):
            self.misses += 1
        return record.levelno >= self.shown_level


def enable_compilation_cache(jax, directory: str) -> _CacheCounter:
    """Points JAX's persistent cache at `directory`, for every compiled step; returns the
    counter of its hits and misses."""
    jax.config.update("jax_compilation_cache_dir", directory)
    # JAX caches only programs that took >= 1 s to compile; ours take well under that on
    # CPU. An explicit JAX_* environment setting still wins.
    for name, value in (("jax_persistent_cache_min_compile_time_secs", 0.0),
                        ("jax_persistent_cache_min_entry_size_bytes", -1)):  # -1: no minimum
        if name.upper() not in os.environ:
            jax.config.update(name, value)
    compiler_logger = logging.getLogger("jax._src.compiler")  # logs the hits and misses
    counter = _CacheCounter(compiler_logger.getEffectiveLevel())
    compiler_logger.addFilter(counter)
    compiler_logger.setLevel(logging.DEBUG)
    return counter


def import_modules(names: Sequence[str]) -> None:
    """Imports each module of `names` (a user's models, tasks or sources, which register
    themselves by name on import); the current directory is searched first, as `python -m`
    does. ConfigError (one line) for one that is not there."""
    from jaxdl import config as config_lib

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name and not name.startswith(f"{e.name}."):
                raise
            raise config_lib.ConfigError(f"--import {name}: no module {e.name!r} on the path "
                                         "(run from the folder that holds it)") from None


def load_config(experiment: str | ml_collections.ConfigDict,
                overrides: Sequence[str] = (), *, variant: str | None = None
                ) -> ml_collections.ConfigDict:
    """The validated config `python -m experiments.NAME` would run with these overrides.

    `experiment` names an experiment module (`config.experiment_module`: 'NAME', a dotted
    module or a .py file), or is a config a tool built itself; its
    `get_config(variant)` is called with `variant` when given. `overrides` are
    `--config.KEY=VALUE` arguments, applied as on the command line. Raises ConfigError
    (one line) for an unknown experiment, key or value.
    """
    from absl import flags as absl_flags
    from ml_collections import config_flags

    from jaxdl import config as config_lib

    if isinstance(experiment, str):
        module = config_lib.experiment_module(experiment)
        if variant is None:
            base = module.get_config()
        else:
            try:
                base = module.get_config(variant)
            except (TypeError, ValueError) as e:  # no variants, or not this one
                raise config_lib.ConfigError(f"experiment {experiment!r}, variant "
                                             f"{variant!r}: {e}") from None
    else:
        base = experiment
    bad = [arg for arg in overrides if not arg.startswith("--config.")]
    if bad:
        raise config_lib.ConfigError(f"{bad[0]}: overrides are --config.KEY=VALUE")
    argv = ["load_config", *overrides]  # not sys.argv: a tool has flags of its own
    flag_values = absl_flags.FlagValues()
    defaults = config_lib.with_defaults(base, overrides)
    try:  # config_flags applies the overrides while defining and parsing the flag
        config_flags.DEFINE_config_dict("config", defaults, "experiment config",
                                        flag_values=flag_values, lock_config=True,
                                        sys_argv=argv)
        flag_values(argv)
    except (AttributeError, KeyError, TypeError, ValueError, absl_flags.Error) as e:
        raise config_lib.ConfigError(_override_error(e, defaults, overrides)) from None
    return config_lib.validate(flag_values.config)


def prepare_process(config: ml_collections.ConfigDict, *, deterministic: bool = False,
                    compilation_cache_dir: str | None = None) -> _CacheCounter | None:
    """Sets up this process for `config` as a run does, before JAX starts its backend:
    the CPU split into `config.parallel.host_devices` devices (XLA_FLAGS, unless it sets
    the count already), determinism when asked (raises ConfigError on a conflicting
    XLA_FLAGS), and JAX's persistent compilation cache in `compilation_cache_dir` (None or
    '' = off). Returns the cache's hit/miss counter, or None when it is off."""
    if config.parallel.host_devices:
        # Read when the CPU backend starts, so it must be set before the first JAX op.
        _set_xla_flag("xla_force_host_platform_device_count", config.parallel.host_devices)
    if deterministic:
        _make_deterministic(config.seed)  # also before the first JAX op
    if not compilation_cache_dir:
        return None
    import jax
    return enable_compilation_cache(jax, compilation_cache_dir)


def _protected(path: Path) -> str | None:
    """Why --overwrite may never empty `path`, or None: the filesystem root, the current
    directory, the home directory (or a folder holding either), a git work tree."""
    path = path.resolve()
    for name, guarded in (("the current directory", Path.cwd()),
                          ("the home directory", Path.home())):
        guarded = guarded.resolve()
        if path == guarded or path in guarded.parents:
            return name if path == guarded else f"a folder holding {name} ({guarded})"
    if path.parent == path:
        return "the filesystem root"
    if (path / ".git").exists():
        return "a git work tree"
    return None


def _overwrite_hint(run_dir) -> str:
    """Suggests --overwrite only where it would work: a run's files and nothing else."""
    return "" if _protected(run_dir.path) or run_dir.foreign_entries() else " or pass --overwrite"


def _overwrite(workdir: str, run_dir) -> None:
    """Empties a workdir of a run's files; refuses, touching nothing, any folder that holds
    anything else or does not look like a run."""
    if not run_dir.looks_like_run():
        raise _refusal(f"--workdir={workdir} holds no jaxdl run (no config.json or "
                       "metrics.jsonl), so --overwrite leaves it alone; choose a new --workdir")
    foreign = run_dir.foreign_entries()
    if foreign:
        raise _refusal(f"--workdir={workdir} holds files no jaxdl run writes ("
                       f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}), so "
                       "--overwrite leaves it alone; move them or choose a new --workdir")
    run_dir.clear()


def _latest_checkpoint(path: Path) -> int:
    from jaxdl import runs
    directory = path / runs.CHECKPOINTS_DIRNAME
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] \
        if directory.is_dir() else []
    return max(steps, default=0)


def _check_extension(workdir: str, path: Path, saved: dict, config) -> bool | None:
    """When the run in `path` differs from `config` only by its train.duration: True if
    that makes it longer (it is then extended from its latest checkpoint, optimizer state
    included), False if it is the same length written another way. None when more than the
    duration changed. Refuses (one line) an extension that would change the run's past or
    that cannot continue."""
    from jaxdl import config as config_lib, runs
    from jaxdl.training import optim
    current = config.to_dict()
    same_length = {**saved["config"], "train": {**saved["config"].get("train", {}),
                                                "duration": current["train"]["duration"]}}
    if config_lib.differences(same_length, current):
        return None
    derived = saved.get("derived", {})
    if "steps_per_epoch" not in derived or "total_steps" not in derived:
        return None
    # The data config is unchanged, so the epoch length the run measured still holds.
    clock = config_lib.Clock(steps_per_epoch=derived["steps_per_epoch"],
                             batch_size=config.data.batch_size)
    new_total, old_total = clock.steps(config.train.duration), derived["total_steps"]
    where = f"--workdir={workdir}"
    if new_total < max(old_total, _latest_checkpoint(path)):
        raise _refusal(f"{where} holds a run of {old_total} steps; config.train.duration="
                       f"{config.train.duration!r} ({new_total} steps) would shorten it, and a "
                       "run can only be extended; choose a new --workdir"
                       f"{_overwrite_hint(runs.RunDir(path))}")
    if new_total == old_total:
        return False
    name = config.schedule.name
    if name in optim.SCHEDULES_SHAPED_BY_TOTAL:
        others = [s for s in optim.SCHEDULES if s not in optim.SCHEDULES_SHAPED_BY_TOTAL]
        raise _refusal(f"{where} cannot be extended to {new_total} steps: config.schedule.name="
                       f"{name!r} is shaped by the run's length, so a longer run would change the "
                       f"learning rates of its first {old_total} steps; only a run whose schedule "
                       f"ignores its length ({', '.join(others)}) can be extended; choose a new "
                       "--workdir")
    summary = runs.RunDir(path).read_summary() if runs.RunDir(path).is_complete() else {}
    if "early_stopping" in summary:
        raise _refusal(f"{where} cannot be extended: its run stopped early at step "
                       f"{summary['early_stopping']['stopped_at_step']}, and would stop there "
                       "again; choose a new --workdir")
    print(f"extending the run in {path} from {old_total} to {new_total} steps")
    return True


def _check_workdir(workdir: str, config, overwrite: bool) -> tuple[Path, dict | None]:
    """`check_workdir`, ending the process with one line (exit status 2) on a refusal."""
    from jaxdl import config as config_lib
    try:
        return check_workdir(workdir, config, overwrite)
    except config_lib.ConfigError as e:
        _fail(str(e))


def check_workdir(workdir: str, config, overwrite: bool) -> tuple[Path, dict | None]:
    """The run directory, and the summary if that run is already complete; ConfigError
    (one line) for a workdir it refuses.

    A directory holding a run of this same config is resumed, or extended when only a longer
    train.duration was asked for; one holding anything else is refused (or, with
    --overwrite, emptied of a run's files when it holds nothing else) before anything is
    written.
    """
    from jaxdl import config as config_lib, runs
    path = Path(workdir).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise _refusal(f"--workdir={workdir} is a file, not a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "a file" if not existing.is_dir() else "not writable"
        raise _refusal(f"--workdir={workdir} cannot be created: {existing} is {what}; choose a "
                       "writable directory")
    if overwrite and _protected(path):
        raise _refusal(f"--workdir={workdir} is {_protected(path)}; --overwrite never empties "
                       "it; choose another --workdir")
    if not path.exists() or not any(path.iterdir()):
        return path, None
    run_dir = runs.RunDir(path)
    if overwrite:
        _overwrite(workdir, run_dir)
        return path, None
    if not run_dir.config.exists():
        raise _refusal(f"--workdir={workdir} is not empty and holds no jaxdl run; choose a new "
                       "--workdir")
    try:
        saved = json.loads(run_dir.config.read_text())
        changed = config_lib.differences(saved["config"], config.to_dict())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _refusal(f"--workdir={workdir}: unreadable config.json ({e}); choose a new "
                       "--workdir") from None
    longer = _check_extension(workdir, path, saved, config) if changed else None
    if longer:
        return path, None  # the loop trains on from the latest checkpoint
    if changed and longer is None:
        raise _refusal(f"--workdir={workdir} holds a run with another config ("
                       f"{'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); choose a "
                       "new --workdir"
                       f"{_overwrite_hint(run_dir)}")
    return path, run_dir.read_summary() if run_dir.is_complete() else None


def _drop_closed_event_loop_noise(unraisable) -> None:
    """After a failed checkpoint write, tensorstore's callbacks keep reaching orbax's closed
    asyncio loop; each would print a traceback under the one error line that matters."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and "Event loop is closed" in str(error):
        return
    sys.__unraisablehook__(unraisable)


class _StopOnSignal:
    """The first SIGTERM/SIGINT asks the loop to checkpoint and stop; a second one ends
    the process at once."""

    def __init__(self):
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: checkpointing, then stopping "
              "(send it again to stop at once)", file=sys.stderr)

    def requested(self) -> bool:
        return self.signal is not None


def _checkpoint_steps(workdir: Path) -> list[int]:
    """The committed checkpoints' steps (orbax writes into a temporary name, then renames)."""
    return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


def _start_distributed(jax, flag_values, workdir: Path):
    """jax.distributed for a multi-host run; returns the Watch that ends this process with
    one line (exit status EXIT_PROCESS_LOST) when another process of the run is lost."""
    from jax._src import distributed  # the coordination service's client; no public handle
    from jaxdl import cluster
    cluster.initialize(jax, coordinator_address=flag_values.coordinator_address,
                       num_processes=flag_values.num_processes,
                       process_id=flag_values.process_id,
                       heartbeat_timeout=flag_values.heartbeat_timeout)
    count, index = jax.process_count(), jax.process_index()

    def on_lost(lost: list[int]) -> None:
        names = ", ".join(f"{i}{' (the coordinator)' if i == 0 else ''}" for i in lost)
        saved = _checkpoint_steps(workdir)
        kept = (f"the last complete checkpoint is step {saved[-1]}, where a rerun of every "
                "process resumes" if saved else "no checkpoint was saved yet")
        print(f"error: process {names} of {count} was lost (no heartbeat within "
              f"--heartbeat_timeout={flag_values.heartbeat_timeout} s); process {index} "
              f"stops too; {kept}", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(EXIT_PROCESS_LOST)  # as SIGKILL would: checkpoints commit atomically

    if count == 1:
        return None
    return cluster.Watch(distributed.global_state.client, process_id=index,
                         num_processes=count, on_lost=on_lost)


def _print_summary(summary: dict) -> None:
    for split, metrics in summary["final"].items():
        values = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "examples")
        print(f"final {split}: {values}  ({int(metrics['examples'])} examples)")
    print(f"steps {summary['steps']}  train {summary['train_examples_per_second']:.0f} "
          f"examples/s  compile {summary['segment_compile_seconds']:.1f}s  wall "
          f"{summary['segment_wall_seconds']:.1f}s")


def run(get_config: Callable[..., ml_collections.ConfigDict]) -> None:
    """Parses flags, sets up the process and trains the experiment `get_config` pins
    (`get_config(variant)` with `--variant=NAME`, where the experiment offers variants)."""
    # Defined here, not at import, so importing jaxdl never touches the global flags.
    flag_values = flags.FLAGS
    flags.DEFINE_string("workdir", None, "directory for this run's files", flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "remove the files of the jaxdl run in --workdir and "
                      "start afresh; a folder holding anything else is refused untouched",
                      flag_values=flag_values)
    flags.DEFINE_bool("deterministic", False,
                      "ask XLA (GPU) and tf.data for run-to-run determinism; seed Python's and "
                      "numpy's global RNGs", flag_values=flag_values)
    flags.DEFINE_bool("distributed", False, "multi-host: jax.distributed.initialize() with the "
                      "cluster's own settings (SLURM, Open MPI, Kubernetes, Cloud TPU)",
                      flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "multi-host: host:port of process 0 "
                        "(implies --distributed)", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes",
                         flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "multi-host: this process's index",
                         flag_values=flag_values)
    flags.DEFINE_integer("heartbeat_timeout", 100, "multi-host: seconds without a heartbeat "
                         "after which a process counts as lost and the others stop (JAX's "
                         "default)", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_string("compilation_cache_dir", _default_cache_dir(),
                        "persistent XLA compilation cache ('' = off)", flag_values=flag_values)
    flags.DEFINE_string("variant", None, "the experiment's named config, for one whose "
                        "get_config(variant) offers several (e.g. 'gpu')", flag_values=flag_values)
    flags.DEFINE_integer("fast_dev_run", 0, "N > 0: a smoke run of N train steps, one eval "
                         "batch per split, one checkpoint; without --workdir its files go to "
                         "a temporary folder, removed at the end. A bare --fast_dev_run is "
                         f"--fast_dev_run={FAST_DEV_RUN_STEPS}", lower_bound=0,
                         flag_values=flag_values)
    get_config = _variant_of(get_config, sys.argv)
    from absl import logging as absl_logging
    from ml_collections import config_flags
    # Backend-probing INFO lines (no TPU here) would bury the one line a user must read.
    absl_logging.set_verbosity(absl_logging.WARNING)
    from jaxdl import config as config_lib
    # A --config.optimizer.name (schedule) override brings in that one's fields, so its
    # other fields can be set on the same command line.
    defaults = config_lib.with_defaults(get_config(), sys.argv[1:])
    try:  # config_flags applies --config.* overrides while defining the flag
        config_flags.DEFINE_config_dict("config", defaults, "experiment config",
                                        flag_values=flag_values, lock_config=True)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
        _fail(_override_error(e, defaults, sys.argv[1:]))

    def parse(argv):
        argv = _bare_fast_dev_run(argv)
        try:
            rest = flag_values(argv)
        except flags.Error as e:
            _fail(str(e).splitlines()[0])
        if len(rest) > 1:
            _fail(f"unexpected arguments {rest[1:]}")
        if not flag_values.workdir and not flag_values.fast_dev_run:
            _fail("--workdir is required: the directory for this run's files")
        return rest

    def main(argv):
        del argv
        from jaxdl import config as config_lib
        try:
            config = config_lib.validate(flag_values.config)
            if flag_values.fast_dev_run:
                config = config_lib.fast_dev_run(config, flag_values.fast_dev_run)
        except config_lib.ConfigError as e:
            _fail(str(e))
        scratch = None  # --fast_dev_run without --workdir: nothing is kept
        if not flag_values.workdir:
            scratch = tempfile.mkdtemp(prefix="jaxdl-fast-dev-run-")
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        # Only process 0 may empty a workdir: the others see what it leaves.
        overwrite = flag_values.overwrite and not flag_values.process_id
        workdir, done = _check_workdir(flag_values.workdir or scratch, config, overwrite)
        if done is not None:
            print(f"the run in {workdir} is already complete")
            _print_summary(done)
            return
        try:
            cache = prepare_process(config, deterministic=flag_values.deterministic,
                                    compilation_cache_dir=flag_values.compilation_cache_dir)
        except config_lib.ConfigError as e:
            _fail(str(e))

        import jax
        watch = None
        if flag_values.distributed or flag_values.coordinator_address:
            watch = _start_distributed(jax, flag_values, workdir)
        primary = jax.process_index() == 0

        def leave(code: int | None = None, *, at_once: bool = False) -> None:
            """Ends this process; the processes of a multi-host run leave together (JAX's
            shutdown does not wait for them in the mode cluster.py runs it in)."""
            if watch is not None:
                try:
                    watch.finish()
                except Exception:  # noqa: BLE001 - the others went another way: leave alone
                    at_once = True
            sys.stderr.flush()
            sys.stdout.flush()
            if scratch:  # os._exit skips atexit
                shutil.rmtree(scratch, ignore_errors=True)
            if at_once:
                os._exit(code or 0)
            if code is not None:
                sys.exit(code)

        def fail(message: str) -> None:
            print(f"error: {message}", file=sys.stderr)
            leave(EXIT_BAD_INPUT)

        from jaxdl.training import loop, parallel
        try:
            devices = parallel.select_devices(config.parallel.num_devices)
        except ValueError as e:
            fail(str(e))
        try:
            config_lib.check_devices(config, len(devices))
            stop = _StopOnSignal()
            sys.unraisablehook = _drop_closed_event_loop_noise
            try:
                summary = loop.train_and_evaluate(config, workdir, should_stop=stop.requested)
            except Exception:
                if watch is not None:
                    # A lost process fails the others' collectives (or checkpoint barriers)
                    # at once, but counts as lost only when its heartbeats time out: wait
                    # for that verdict, which ends this process with its own line.
                    watch.settle(timeout=2 * flag_values.heartbeat_timeout)
                raise
        except config_lib.ConfigError as e:
            fail(str(e))
        except loop.RunInterrupted as e:
            print(f"{e}; rerun the same command to resume", file=sys.stderr)
            leave(128 + stop.signal)
        except (loop.CheckpointWriteError, loop.OutOfMemoryError) as e:
            print(f"error: {e}", file=sys.stderr)
            # orbax's writer threads would print tracebacks while the interpreter shuts down.
            leave(EXIT_BAD_INPUT, at_once=True)
        except OSError as e:  # a full disk or a lost mount while writing metrics
            fail(f"cannot write the run's files in {workdir} ({e}); free space and rerun "
                 "the same command to resume from the last checkpoint")
        except loop.NonFiniteError as e:
            saved = _checkpoint_steps(workdir)
            kept = (f"the last good checkpoint is step {saved[-1]}, where a rerun resumes"
                    if saved else "no checkpoint was saved before it")
            print(f"error: {e}; {kept}. Lower the learning rate, clip gradients "
                  "(optimizer.grad_clip_norm) or set guard.skip_nonfinite=True", file=sys.stderr)
            leave(1)
        except Exception:
            if watch is None:
                raise
            traceback.print_exc()
            leave(1)  # with the others, when they failed the same way
        if primary:
            _print_summary(summary)
            if cache is not None:
                print(f"compilation cache {flag_values.compilation_cache_dir}: {cache.hits} "
                      f"hits, {cache.misses} misses")
            print(f"run files in {workdir}: " + ", ".join(sorted(p.name for p in
                                                                 workdir.iterdir()))
                  + (" (removed at exit: pass --workdir to keep them)" if scratch else ""))
        leave()

    absl_app.run(main, flags_parser=parse)
