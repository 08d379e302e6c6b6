"""benchmarks.speedrun end to end on a few steps: both sides train the experiment's recipe on
the same number of steps, and the record holds each seed's time and test accuracy."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("JAXDL_DATA_DIR", "no-JAXDL_DATA_DIR")) / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed: an optional extra (`make install-extras`)")
@pytest.mark.skipif(not DATA.is_dir(), reason=f"MNIST IDX files absent ({DATA}; set "
                                               "JAXDL_DATA_DIR)")
def test_speedrun_trains_both_sides_and_records_each_seed(tmp_path, capsys):
    from benchmarks import speedrun

    short = ["--config.train.duration=6 steps", "--config.train.eval_every=6 steps",
             "--config.checkpoint.every=6 steps"]
    record = speedrun.main(["--seeds", "1", "--workdir", str(tmp_path / "runs"),
                            "--json", str(tmp_path / "r.jsonl"), *short])
    (mine,), (theirs,) = record["jaxdl"], record["torch"]
    assert mine["steps"] == theirs["steps"] == 6
    for side in (mine, theirs):
        assert side["seconds"] > 0 and 0.0 <= side["test_accuracy"] <= 1.0
    assert json.loads((tmp_path / "r.jsonl").read_text())["config_overrides"] == short
    assert "| jaxdl |" in capsys.readouterr().out


def test_bad_arguments_are_one_line(capsys):
    from benchmarks import speedrun

    with pytest.raises(SystemExit) as exit_info:
        speedrun.main(["--workdir", "x", "--steps=3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --steps=3" in capsys.readouterr().err
