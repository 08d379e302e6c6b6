"""The persistent compilation cache through the real CLI: a rerun compiles nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env, run_cli, stderr_tail
from jaxdl.training.writers import read_metrics

SHRINK = ["--config.train.duration=2 epochs", "--config.train.eval_every=1 epoch",
          "--config.logging.progress=False"]


def _train(workdir, cache):
    result = run_cli("experiments.digits_mlp", f"--workdir={workdir}", *SHRINK,
                     f"--compilation_cache_dir={cache}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    found = re.findall(rf"^compilation cache {re.escape(str(cache))}: (\d+) hits, (\d+) misses$",
                       result.stdout, flags=re.MULTILINE)
    assert len(found) == 1, result.stdout
    values = [{k: v for k, v in r.items() if k != "time"}
              for r in read_metrics(workdir / "metrics.jsonl")]
    return tuple(map(int, found[0])), values


@pytest.mark.slow
def test_second_run_hits_the_cache(tmp_path):
    cache = tmp_path / "cache"
    (hits, misses), first = _train(tmp_path / "a", cache)
    assert hits == 0 and misses > 0
    assert any(cache.iterdir())
    (hits, misses), second = _train(tmp_path / "b", cache)
    assert hits > 0 and misses == 0
    assert first == second  # a cached executable computes what a fresh compile does


def test_the_suite_writes_nothing_into_the_users_home(tmp_path):
    """A CLI run without --compilation_cache_dir, as the suite runs it (conftest points
    $XDG_CACHE_HOME at the session's tmp), with $HOME an empty folder: nothing lands there,
    and the default cache is the suite's."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**cli_env(), "HOME": str(home)}
    result = subprocess.run([sys.executable, "-m", "experiments.digits_mlp",
                             f"--workdir={tmp_path / 'run'}", *SHRINK], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, stderr_tail(result.stderr)
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "jaxdl" / "xla"
    assert f"compilation cache {cache}:" in result.stdout
    assert any(cache.iterdir())
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []


def test_the_default_cache_follows_xdg_cache_home_else_home(monkeypatch, tmp_path):
    from jaxdl import app
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert app._default_cache_dir() == str(tmp_path / "xdg" / "jaxdl" / "xla")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert app._default_cache_dir() == str(tmp_path / "home" / ".cache" / "jaxdl" / "xla")
