"""The step-throughput benchmark through its real command line, on 2 forced host devices."""

from __future__ import annotations

import importlib.util
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
    assert float(cells[6]) > 0  # examples/s
    # XLA's FLOP count of the whole step: every weight multiplies at least one input per
    # example forward and twice backward, so 6 x batch x parameters is a floor.
    assert record["flops_per_step"] >= 6 * record["batch_size"] * record["params"]
    assert record["params"] > 0
    assert float(cells[7]) == pytest.approx(record["flops_per_step"] / 1e9, rel=0.01)
    assert record["mfu"] is None and cells[9] == "n/a"  # a CPU has no datasheet peak here
    assert record["memory_bytes_per_device"] > 0
    assert record["memory_source"] == "compiled estimate"
    assert "host input excluded" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is an optional 'bench' extra (pip install -e '.[bench]'); "
                           "CI installs only '.[test]', so this skips there")
def test_compare_torch_tiny(tmp_path):
    """`--compare torch` on the synthetic ResNet-20, a few steps: both sides run in one
    process, start from the same weights (same first loss) and report a ratio."""
    out = tmp_path / "compare.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.step_throughput", "--model", "resnet20",
         "--compare", "torch", "--no_torch_compile", "--batch_size", "16", "--steps", "4",
         "--warmup", "1", "--repeats", "2", "--batches", "2", "--json", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    context = f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, context

    record = json.loads(out.read_text().splitlines()[-1])
    assert record["benchmark"] == "step_throughput_compare"
    assert record["experiment"] == "resnet20" and record["batch_size"] == 16
    assert record["num_devices"] == NUM_DEVICES and record["backend"] == "pmap"
    assert set(record["sides"]) == {"jaxdl", "torch eager"}, context
    jaxdl, torch_eager = record["sides"]["jaxdl"], record["sides"]["torch eager"]
    assert math.isclose(jaxdl["first_loss"], torch_eager["first_loss"], rel_tol=1e-3)
    for side in (jaxdl, torch_eager):
        assert len(side["window_ms_per_step"]) == 2
        assert math.isfinite(side["examples_per_second"]) and side["examples_per_second"] > 0
        assert math.isfinite(side["last_train_loss"])
    ratio = torch_eager["jaxdl_ratio"]
    assert math.isclose(ratio, jaxdl["examples_per_second"] / torch_eager["examples_per_second"])
    assert record["torch"]["threads"] == os.cpu_count()

    rows = [line for line in result.stdout.splitlines() if line.startswith("| torch eager |")]
    assert len(rows) == 1, context
    assert rows[0].split("|")[-2].strip().startswith(f"{ratio:.2f}")
