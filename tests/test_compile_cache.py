"""The persistent compilation cache through the real CLI: a rerun compiles nothing."""

import re

from conftest import run_cli
from jaxdl.training.writers import read_metrics

SHRINK = ["--config.train.duration=2 epochs", "--config.train.eval_every=1 epoch",
          "--config.logging.progress=False"]


def _train(workdir, cache):
    result = run_cli("experiments.digits_mlp", f"--workdir={workdir}", *SHRINK,
                     f"--compilation_cache_dir={cache}")
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.findall(rf"^compilation cache {re.escape(str(cache))}: (\d+) hits, (\d+) misses$",
                       result.stdout, flags=re.MULTILINE)
    assert len(found) == 1, result.stdout
    values = [{k: v for k, v in r.items() if k != "time"}
              for r in read_metrics(workdir / "metrics.jsonl")]
    return tuple(map(int, found[0])), values


def test_second_run_hits_the_cache(tmp_path):
    cache = tmp_path / "cache"
    (hits, misses), first = _train(tmp_path / "a", cache)
    assert hits == 0 and misses > 0
    assert any(cache.iterdir())
    (hits, misses), second = _train(tmp_path / "b", cache)
    assert hits > 0 and misses == 0
    assert first == second  # a cached executable computes what a fresh compile does
