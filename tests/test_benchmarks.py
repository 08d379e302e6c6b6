"""The step-throughput benchmark through its real command line, on 2 forced host devices."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
NUM_DEVICES = 2


def _env() -> dict[str, str]:
    env = dict(os.environ)  # conftest forces 4 devices: replace its count, keep other flags
    flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "",
                   env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join(
        flags + [f"--xla_force_host_platform_device_count={NUM_DEVICES}"])
    return env


@pytest.mark.parametrize("backend", ["pmap", "sharded"])
def test_step_throughput_tiny(backend, tmp_path):
    out = tmp_path / "bench.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.step_throughput", "--experiment", "digits_cnn",
         "--backend", backend, "--steps", "4", "--warmup", "1", "--json", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    context = f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, context

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 1, context
    record = records[0]
    assert record["backend"] == backend
    assert record["num_devices"] == NUM_DEVICES
    assert record["platform"] == "cpu"
    assert record["batch_size"] == 64 and record["per_device_batch"] == 64 // NUM_DEVICES
    assert record["steps"] == 4 and sum(record["window_steps"]) == 4
    eps = record["examples_per_second"]
    assert math.isfinite(eps) and eps > 0, record
    assert record["compile_seconds"] > 0
    assert record["ms_per_step_p10"] <= record["ms_per_step_median"] <= record["ms_per_step_p90"]
    assert math.isfinite(record["last_train_loss"])
    assert "host input excluded" in record["mode"]

    rows = [line for line in result.stdout.splitlines() if line.startswith("| digits_cnn |")]
    assert len(rows) == 1, context
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == backend
    assert cells[2].startswith(f"{NUM_DEVICES} x cpu")
    assert float(cells[-1]) > 0
    assert "host input excluded" in result.stdout
