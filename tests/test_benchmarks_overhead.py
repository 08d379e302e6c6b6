"""benchmarks.overhead on a small model: the record's structure, and that the hand-written
step is the same computation as jaxdl's (the same loss before and after one update). No
timing is asserted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import overhead


@pytest.mark.slow  # 18-35 s on 2 cores (--durations of a fresh clone): slow tier
def test_overhead_record_and_same_losses(tmp_path, capsys):
    # pmap: the plain step's pmean, per-example dropout masks (digits_cnn has dropout) and
    # BatchNorm over the device axis (model state) must all match jaxdl's.
    record = overhead.main(["--experiment", "digits_cnn", "--backend", "pmap", "--steps", "4",
                            "--warmup", "2", "--repeats", "2", "--config.model.dense_width=16",
                            "--config.model.batch_norm=True",
                            "--json", str(tmp_path / "o.jsonl")])

    assert record["benchmark"] == "overhead"
    assert record["backend"] == "pmap" and record["num_devices"] == 4  # conftest's devices
    assert set(record["sides"]) == {"jaxdl", "plain"}
    for side in record["sides"].values():
        assert len(side["window_ms_per_step"]) == 2
        # The summary statistics are those of the logged windows (rounded to 1e-4 ms).
        windows = np.asarray(side["window_ms_per_step"])
        assert side["ms_per_step_median"] == pytest.approx(np.median(windows), abs=2e-4)
        assert side["ms_per_step_p10"] == pytest.approx(np.percentile(windows, 10), abs=2e-4)
        assert side["ms_per_step_p90"] == pytest.approx(np.percentile(windows, 90), abs=2e-4)
        assert side["examples_per_second"] == pytest.approx(
            record["batch_size"] / (side["ms_per_step_median"] / 1e3), rel=1e-9)
        assert side["dispatch_ms_median"] > 0
        assert math.isfinite(side["last_loss"])
    jaxdl, plain = record["sides"]["jaxdl"], record["sides"]["plain"]
    # One update from the same state and batch: the same loss before and after it.
    assert jaxdl["first_loss"] == pytest.approx(plain["first_loss"], rel=1e-5)
    assert jaxdl["second_loss"] == pytest.approx(plain["second_loss"], rel=1e-5)
    assert jaxdl["second_loss"] != pytest.approx(jaxdl["first_loss"], rel=1e-5)  # it learned
    assert math.isfinite(record["overhead_percent"])
    assert len(record["overhead_percent_per_window"]) == 2
    assert (tmp_path / "o.jsonl").read_text().count("\n") == 1
    assert "overhead of jaxdl over the plain step" in capsys.readouterr().out


def test_a_different_plain_step_is_refused():
    same = {"first_loss": 2.30, "second_loss": 2.10}
    overhead.check_same_computation({"jaxdl": same, "plain": dict(same)})
    with pytest.raises(RuntimeError, match="second_loss.*not the same computation"):
        overhead.check_same_computation({"jaxdl": same, "plain": {**same, "second_loss": 2.11}})
