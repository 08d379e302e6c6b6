"""Running a sweep: every trial an ordinary jaxdl run (or one run per fold and seed) in
DIR/trials/<id>/, claimed by one worker at a time, recorded in an Optuna study.

DIR holds sweep.json (the Spec: what the sweep runs; a rerun with another one is refused),
the study (Optuna's journal file, which Optuna recommends for several processes on one
machine, unless `storage` names a database), and trials/<id>.json, each trial's record:
its overrides, status ('running', 'complete', 'pruned', 'failed'), per-run metrics, steps
and wall time. A worker holds trials/<id>.lock (an flock: the kernel drops it when the
process dies, even by SIGKILL) while it runs trial <id>, and DIR/.sweep.lock while it
claims a trial, so two workers never run one trial; a trial whose worker died is claimed
again and its runs resume from their checkpoints, as any jaxdl run does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from jaxdl import runs
from jaxdl.schema import ConfigError
from jaxdl.sweep.space import Spec, format_value
from jaxdl.training import loop

SPEC_FILENAME = "sweep.json"
JOURNAL_FILENAME = "study.journal"
TRIALS_DIRNAME = "trials"
LOCK_FILENAME = ".sweep.lock"
RUNNING, COMPLETE, PRUNED, FAILED = "running", "complete", "pruned", "failed"
FINISHED = (COMPLETE, PRUNED, FAILED)
TRIAL_ATTR = "jaxdl_trial"  # the Optuna trial's user attribute naming its DIR/trials/<id>


def study_name(spec: Spec) -> str:
    """One name per Spec: workers given the same command share the study in a database."""
    return f"{spec.experiment}-{spec.digest}"


def open_storage(directory: Path, url: str | None):
    """The study's storage: `url` (any database Optuna supports), or the journal file in
    `directory`. Raises ConfigError (one line) when `url` cannot be reached."""
    if url is None:
        journal = optuna.storages.journal
        return optuna.storages.JournalStorage(
            journal.JournalFileBackend(str(directory / JOURNAL_FILENAME)))
    try:  # connects and creates Optuna's tables
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy's and the drivers' errors vary
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--storage={url}: cannot open the study database ({reason})"
                          ) from None


def load_study(directory: Path, url: str | None = None) -> optuna.Study:
    """The Optuna study of the sweep in `directory` (its database at `url`, if it has one)."""
    spec = Spec.from_json(json.loads((directory / SPEC_FILENAME).read_text()))
    return optuna.load_study(study_name=study_name(spec), storage=open_storage(directory, url))


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool) -> Iterator[bool]:
    """Holds an exclusive flock on `path` (True), or yields False at once when another
    process holds it and `wait` is False."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(runs.finite_or_null(value), indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a record


def check_directory(directory: Path, spec: Spec) -> bool:
    """Whether `directory` already holds this sweep (False: it is new or empty). Refuses
    one holding another sweep or anything that is not a sweep, in one line."""
    where = f"--workdir={directory}"
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{where} is a file, not a directory")
    if not directory.exists() or not any(directory.iterdir()):
        return False
    saved_path = directory / SPEC_FILENAME
    if not saved_path.is_file():
        raise ConfigError(f"{where} is not empty and holds no sweep ({SPEC_FILENAME}); choose "
                          "a new --workdir")
    saved, current = json.loads(saved_path.read_text()), spec.to_json()
    changed = [k for k in current if saved.get(k) != current[k]]
    if changed:
        key = changed[0]
        raise ConfigError(f"{where} holds a sweep with another {key} ({saved.get(key)} here, "
                          f"{current[key]} asked); rerun it with the same command or choose a "
                          "new --workdir")
    return True


@dataclasses.dataclass
class Sweep:
    """One sweep in `directory`. `configure(overrides)` gives the validated config of a run
    from its --config.KEY=VALUE overrides (the app's load_config, bound to the experiment)."""

    directory: Path
    spec: Spec
    configure: Callable[[Sequence[str]], Any]
    storage: Any
    budget: int = 0  # Optuna trials in all (a grid runs all its points)
    pruner_startup_trials: int = 5
    worker: int = 0
    stream: Any = sys.stderr
    should_stop: Callable[[], bool] = lambda: False
    on_trial_end: Callable[[], None] = lambda: None

    @property
    def trials_dir(self) -> Path:
        return self.directory / TRIALS_DIRNAME

    def record_path(self, trial_id: str) -> Path:
        return self.trials_dir / f"{trial_id}.json"

    def read_record(self, trial_id: str) -> dict[str, Any] | None:
        path = self.record_path(trial_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.trials_dir.glob("*.json"))]

    # -- the runs of a trial --------------------------------------------------------------

    def member_overrides(self, member: dict[str, int], base) -> list[str]:
        """The overrides that make a trial's run its fold and seed: the fold the data.fold
        mechanism holds out (validation from that fold, not a fraction), seed + i."""
        extra = []
        if member["fold"] >= 0:
            extra += [f"--config.data.folds={self.spec.folds}",
                      f"--config.data.fold={member['fold']}"]
            if base.data.validation_fraction:
                extra.append("--config.data.validation_fraction=0.0")
        if self.spec.seeds > 1:
            extra.append(f"--config.seed={base.seed + member['seed']}")
        return extra

    def member_dir(self, trial_id: str, member: dict[str, int]) -> Path:
        if len(self.spec.members()) == 1:
            return self.trials_dir / trial_id
        name = "_".join(([f"fold{member['fold']}"] if member["fold"] >= 0 else []) +
                        ([f"seed{member['seed']}"] if self.spec.seeds > 1 else []))
        return self.trials_dir / trial_id / name

    def member_configs(self, overrides: list[str]) -> list[tuple[dict[str, int], Any]]:
        """(member, validated config) of every run of a trial with `overrides`."""
        base = self.configure([*self.spec.overrides, *overrides])
        return [(m, self.configure([*self.spec.overrides, *overrides,
                                    *self.member_overrides(m, base)]))
                for m in self.spec.members()]

    def check(self) -> None:
        """Validates every override the sweep can make before anything is written: each
        grid point (or each Optuna key at its bounds) with every fold and seed."""
        if not self.spec.optuna:
            for point in self.spec.grid_points():
                self.member_configs(_overrides(point))
        else:
            for key, dist in self.spec.distributions().items():
                for value in dist.get("choices") or (dist["low"], dist["high"]):
                    self.member_configs(_overrides({key: format_value(value)}))
            self.member_configs([])

    # -- one trial ------------------------------------------------------------------------

    def run_trial(self, trial_id: str, params: dict[str, str], optuna_trial=None
                  ) -> dict[str, Any]:
        """Runs (or resumes) every run of a trial; returns its finished record."""
        record = self.read_record(trial_id) or {
            "id": trial_id, "params": params, "overrides": _overrides(params),
            "status": RUNNING, "wall_seconds": 0.0, "segments": []}
        if optuna_trial is not None:
            record["optuna_number"] = optuna_trial.number
        start = time.perf_counter()
        split, _, metric = self.spec.objective.partition("/")
        runs_done, steps, pruned, error = [], 0, False, None
        try:
            members = self.member_configs(record["overrides"])
        except ConfigError as e:
            members, error = [], str(e)
        for index, (member, config) in enumerate(members):
            workdir = self.member_dir(trial_id, member)
            run_dir = runs.RunDir(workdir)
            if not run_dir.is_complete():
                record["segments"].append({"worker": self.worker, "pid": os.getpid(),
                                           "run": workdir.name, "from_step":
                                           _latest_checkpoint(workdir)})
                _write_json(self.record_path(trial_id), record)
                report = None
                reports = loop.run(config, workdir, stream=self.stream,
                                   should_stop=self.should_stop)
                try:
                    for report in reports:
                        value = report.get(split, {}).get(metric)
                        if optuna_trial is None or value is None or "summary" in report:
                            continue
                        # One step axis over the trial's runs, so the pruner compares the
                        # same run of every trial.
                        at = index * _total_steps(workdir) + report["step"]
                        with warnings.catch_warnings():
                            # A resumed run evaluates again the steps after its checkpoint:
                            # Optuna keeps the first report (the same value) and warns.
                            warnings.simplefilter("ignore", UserWarning)
                            optuna_trial.report(value, at)
                        if optuna_trial.should_prune():
                            pruned = True
                            steps += report["step"]
                            record["pruned_at"] = {"step": report["step"], "value": value}
                            break
                except loop.NonFiniteError as e:
                    error = str(e)
                finally:
                    reports.close()
                if pruned or error:
                    break
            summary = run_dir.read_summary()
            steps += summary["steps"]
            runs_done.append({**member, "dir": str(workdir.relative_to(self.directory)),
                              "steps": summary["steps"], "metrics": _flat(summary["final"])})
        record["wall_seconds"] += time.perf_counter() - start
        record.update(steps=steps, runs=runs_done, metrics=_aggregate(runs_done))
        value = record["metrics"].get(self.spec.objective, {}).get("mean")
        if pruned:
            record["status"] = PRUNED
        elif error or value is None:
            record["status"] = FAILED
            record["error"] = error or f"no {self.spec.objective} in the runs' final metrics"
        else:
            record["status"] = COMPLETE
        record["objective"] = value
        _write_json(self.record_path(trial_id), record)
        self._tell(record, optuna_trial)
        return record

    def _tell(self, record: dict[str, Any], optuna_trial) -> None:
        """Puts the finished trial into the study (once: a worker killed after this and
        before the record's rewrite does it again, which changes nothing)."""
        state = {COMPLETE: optuna.trial.TrialState.COMPLETE,
                 PRUNED: optuna.trial.TrialState.PRUNED,
                 FAILED: optuna.trial.TrialState.FAIL}[record["status"]]
        value = record["objective"] if state == optuna.trial.TrialState.COMPLETE else None
        study = self.study()
        if optuna_trial is not None:
            study.tell(optuna_trial.number, value, state=state, skip_if_finished=True)
            return
        if any(t.user_attrs.get(TRIAL_ATTR) == record["id"] for t in study.get_trials(deepcopy=False)):
            return
        distributions = {key: optuna.distributions.CategoricalDistribution(list(values))
                         for key, values in self.spec.grid}
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params=record["params"], distributions=distributions,
            user_attrs={TRIAL_ATTR: record["id"]}))

    # -- the study and the workers' loop --------------------------------------------------

    def study(self) -> optuna.Study:
        if self.spec.pruner == "median":
            pruner = optuna.pruners.MedianPruner(n_startup_trials=self.pruner_startup_trials)
        elif self.spec.pruner == "hyperband":
            pruner = optuna.pruners.HyperbandPruner()
        else:
            pruner = optuna.pruners.NopPruner()
        base = self.configure(list(self.spec.overrides))
        # Seeded by the experiment's seed, the worker and the study's length: reproducible
        # for one worker, and a rerun or a second worker does not repeat earlier draws.
        return optuna.create_study(storage=self.storage, study_name=study_name(self.spec),
                                   direction=self.spec.direction, pruner=pruner,
                                   load_if_exists=True, sampler=optuna.samplers.TPESampler(
                                       seed=self._sampler_seed(base.seed)))

    def _sampler_seed(self, seed: int) -> int:
        return int(np.random.SeedSequence([seed, self.worker, len(self.records())
                                           if self.trials_dir.exists() else 0]
                                          ).generate_state(1)[0])

    def work(self) -> None:
        """Runs trials until none is left to claim: every grid point (no grid: the one
        config, e.g. its folds), or the Optuna budget."""
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        if not self.spec.optuna:
            for index, point in enumerate(self.spec.grid_points()):
                self._claim_and_run(f"{index:04d}", point)
            return
        study = self.study()
        while True:
            with _flock(self.directory / LOCK_FILENAME, wait=True):
                orphan = next((r for r in self.records() if r["status"] == RUNNING
                               and self._free(r["id"])), None)
                if orphan is None:
                    if len(self.records()) >= self.budget:
                        return
                    trial = study.ask({k: _distribution(d)
                                       for k, d in self.spec.distributions().items()})
                    trial_id = f"{trial.number:04d}"
                    params = {k: format_value(v) for k, v in trial.params.items()}
                    _write_json(self.record_path(trial_id), {
                        "id": trial_id, "params": params, "overrides": _overrides(params),
                        "status": RUNNING, "wall_seconds": 0.0, "segments": [],
                        "optuna_number": trial.number})
                else:  # a trial whose worker died: its Optuna trial is still running
                    trial_id, params = orphan["id"], orphan["params"]
                    frozen = next(t for t in study.get_trials(deepcopy=False)
                                  if t.number == orphan["optuna_number"])
                    # Optuna has no public call that hands a running trial to another
                    # process; Trial(study, id) is what study.ask() builds.
                    trial = optuna.trial.Trial(study, frozen._trial_id)
            # Between the claim and this lock another worker may take it: then move on.
            self._claim_and_run(trial_id, params, trial)

    def _free(self, trial_id: str) -> bool:
        with _flock(self.trials_dir / f"{trial_id}.lock", wait=False) as free:
            return free

    def _claim_and_run(self, trial_id: str, params: dict[str, str], optuna_trial=None) -> None:
        with _flock(self.trials_dir / f"{trial_id}.lock", wait=False) as mine:
            record = self.read_record(trial_id)
            if not mine or (record and record["status"] in FINISHED):
                return
            self.run_trial(trial_id, params, optuna_trial)
        with _flock(self.directory / LOCK_FILENAME, wait=True):
            self.on_trial_end()


def _overrides(params: dict[str, str]) -> list[str]:
    return [f"--config.{key}={value}" for key, value in params.items()]


def _distribution(dist: dict[str, Any]):
    d = optuna.distributions
    if dist["kind"] == "choice":
        return d.CategoricalDistribution(list(dist["choices"]))
    if dist["kind"] == "int":
        return d.IntDistribution(dist["low"], dist["high"])
    return d.FloatDistribution(dist["low"], dist["high"], log=dist["kind"] == "log")


def _latest_checkpoint(workdir: Path) -> int:
    directory = workdir / runs.CHECKPOINTS_DIRNAME
    return max((int(p.name) for p in directory.glob("*") if p.name.isdigit()), default=0)


def _total_steps(workdir: Path) -> int:
    return json.loads(runs.RunDir(workdir).config.read_text())["derived"]["total_steps"]


def _flat(final: dict[str, dict[str, float]]) -> dict[str, float]:
    """{'split/metric': value} of a run's final evaluation (example counts left out)."""
    return {f"{split}/{name}": value for split, metrics in final.items()
            for name, value in metrics.items() if name != "examples"}


def _aggregate(runs_done: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{'split/metric': {'mean', 'std'}} over a trial's runs (std with ddof=0)."""
    keys = [k for k in runs_done[0]["metrics"]] if runs_done else []
    out = {}
    for key in keys:
        values = np.array([r["metrics"][key] for r in runs_done if key in r["metrics"]],
                          np.float64)
        out[key] = {"mean": float(values.mean()), "std": float(values.std())}
    return out
