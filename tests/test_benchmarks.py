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

import numpy as np
import pytest
from benchmark_families import TINY_DCGAN, TINY_LSTM, family_config, family_dataset
from conftest import stderr_tail

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
@pytest.mark.slow
def test_step_throughput_tiny(backend, tmp_path):
    out = tmp_path / "bench.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.step_throughput", "--experiment", "digits_cnn",
         "--backend", backend, "--steps", "4", "--warmup", "1", "--json", str(out),
         *(["--warm_compile"] if backend == "sharded" else [])],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    context = f"\nstdout:\n{result.stdout}\nstderr:\n{stderr_tail(result.stderr)}"
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
    windows = np.asarray(record["window_ms_per_step"])  # rounded to 1e-4 ms
    assert record["ms_per_step_median"] == pytest.approx(np.median(windows), abs=2e-4)
    assert record["ms_per_step_p10"] == pytest.approx(np.percentile(windows, 10), abs=2e-4)
    assert record["ms_per_step_p90"] == pytest.approx(np.percentile(windows, 90), abs=2e-4)
    assert eps == pytest.approx(64 / (record["ms_per_step_median"] / 1e3), rel=1e-9)
    assert math.isfinite(record["last_train_loss"])
    assert "host input excluded" in record["mode"]
    if backend == "sharded":  # --warm_compile: the second build compiled nothing anew
        assert record["compile_seconds_cold"] == record["compile_seconds"] > 0
        assert record["compile_seconds_warm"] > 0
        assert record["warm_cache_hits"] >= 2 and record["warm_cache_misses"] == 0, record

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
                    reason="torch is not installed: an optional extra (`make install-extras`, "
                           "which CI runs)")
def test_compare_torch_tiny(tmp_path):
    """`--compare torch` on the synthetic ResNet-20, a few steps: both sides run in one
    process, start from the same weights (same first loss) and report a ratio."""
    out = tmp_path / "compare.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.step_throughput", "--model", "resnet20",
         "--compare", "torch", "--no_torch_compile", "--batch_size", "16", "--steps", "4",
         "--warmup", "1", "--repeats", "2", "--batches", "2", "--json", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    context = f"\nstdout:\n{result.stdout}\nstderr:\n{stderr_tail(result.stderr)}"
    assert result.returncode == 0, context

    record = json.loads(out.read_text().splitlines()[-1])
    assert record["benchmark"] == "step_throughput_compare"
    assert record["experiment"] == "resnet20" and record["batch_size"] == 16
    # experiments/cifar10_resnet20.py's backend
    assert record["num_devices"] == NUM_DEVICES and record["backend"] == "sharded"
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


# --- model families (--model NAME): configs, harness smoke runs ----------------------------
# (the torch twins themselves: tests/test_torch_twins.py)

# Registered model and task each --model name times.
FAMILIES = {"mlp": ("mlp", "classification"), "mnist_cnn": ("cnn", "classification"),
            "cnn": ("cnn", "classification"), "mnist_speedrun": ("cnn", "classification"),
            "resnet20": ("resnet20", "classification"),
            "resnet56": ("resnet56", "classification"),
            "resnet50": ("resnet50", "classification"), "vgg16": ("vgg16", "classification"),
            "densenet121": ("densenet121", "classification"),
            "lstm_lm": ("lstm_lm", "language_model"), "dcgan": ("dcgan", "gan"),
            "vae": ("vae", "vae"), "transformer_lm": ("transformer_lm", "language_model"),
            "seq2seq_attention": ("seq2seq", "seq2seq")}
FEWER_BLOCKS = ["--config.model.generator_blocks=1", "--config.model.discriminator_blocks=1"]


def test_every_model_family_resolves_to_a_valid_config():
    """Each --model name gives a validated config of its family on synthetic data whose
    shape the task accepts (build_task checks classes, vocabulary, image shapes)."""
    from benchmarks import step_throughput
    from jaxdl import tasks

    assert set(step_throughput.MODEL_FAMILIES) == set(FAMILIES)
    for name, (model, task) in FAMILIES.items():
        config = family_config(name, "--batch_size", "8")
        assert (config.model.name, config.task.name) == (model, task), name
        assert config.data.name == step_throughput.SYNTHETIC_SOURCE
        assert config.data.batch_size == config.data.eval_batch_size == 8
        assert config.data.options.examples == 8 * 4
        dataset = family_dataset(config)
        shape = tuple(config.data.options.shape)
        if config.data.options.kind == "pairs":  # (source, target) widths
            assert dataset.targets.shape[1:] == shape[1:], name
            shape = shape[:1]
        assert dataset.features.shape[1:] == shape, name
        tasks.build_task(config, dataset, axis_name=None)  # raises ConfigError on a mismatch
    assert family_config("lstm_lm").data.batch_size == 32
    assert family_config("lstm_lm").data.options.shape == (100,)
    assert family_config("lstm_lm").model.hidden_size == 256
    assert family_config("dcgan").data.batch_size == 64


@pytest.mark.slow
def test_lstm_lm_and_dcgan_through_the_harness(capsys):
    """`--model lstm_lm` and `--model dcgan`, shrunken, for 2 steps in this process: the
    experiments' own steps (language model; the GAN's D + G update) compile and run."""
    from benchmarks import step_throughput

    for name, tiny in (("lstm_lm", TINY_LSTM), ("dcgan", TINY_DCGAN + FEWER_BLOCKS)):
        record = step_throughput.main(
            ["--model", name, "--batch_size", "8", "--steps", "2", "--warmup", "1",
             "--repeats", "1", "--batches", "1", "--no_header", *tiny])
        out = capsys.readouterr().out
        assert record["experiment"] == name and record["batch_size"] == 8
        assert record["mode"].startswith("synthetic (random data)")
        assert math.isfinite(record["last_train_loss"]), record
        assert record["examples_per_second"] > 0 and record["flops_per_step"] > 0
        assert record["params"] > 0
        rows = [line for line in out.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows) == 1, out
    assert record["config_overrides"] == TINY_DCGAN + FEWER_BLOCKS


def test_suite_table_per_model_with_efficiency_columns():
    """benchmarks.suite's summary: one row per (model, cell), ratios to each model's own
    baseline cell, and the efficiency columns as medians over rounds."""
    from benchmarks import suite

    def record(model, backend, n, round_index, eps, flops):
        return {"experiment": model, "backend": backend, "num_devices": n,
                "round": round_index, "batch_size": 8, "examples_per_second": eps,
                "ms_per_step_median": 8e3 / eps, "compile_seconds": 1.0,
                "flops_per_step": flops, "achieved_tflops": flops * eps / 8e12, "mfu": None,
                "memory_bytes_per_device": 2 ** 20, "precision": "fp32"}

    records = [record(m, b, 1, r, eps, 1e9) for r in range(2)
               for m, b, eps in (("mlp", "sharded", 100.0 + r), ("mlp", "pmap", 50.0),
                                 ("dcgan", "sharded", 10.0), ("dcgan", "pmap", 40.0))]
    rows = suite.summarize(records)
    assert [(r["model"], r["backend"]) for r in rows] == [
        ("mlp", "sharded"), ("mlp", "pmap"), ("dcgan", "sharded"), ("dcgan", "pmap")]
    assert rows[1]["ratio"] == pytest.approx(50.0 / 100.5)
    assert rows[3]["ratio"] == pytest.approx(4.0)  # against dcgan's own baseline
    table = suite.markdown(rows).splitlines()
    assert "GFLOP/step | TFLOP/s | MFU | memory MiB/device |" in table[0]
    cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert cells[:2] == ["mlp", "pmap"] and cells[-4:] == ["1", "0.00625", "n/a", "1"]


def _compare_record(model, round_index, jaxdl_ms, torch_ms, load=1.0):
    """A step_throughput --compare record as the suite reads it: jaxdl and torch sides."""
    sides = {"jaxdl": {"ms_per_step_median": jaxdl_ms}}
    for name, ms in torch_ms.items():
        sides[name] = {"ms_per_step_median": ms, "jaxdl_ratio": ms / jaxdl_ms,
                       "jaxdl_ratio_per_window_median": ms / jaxdl_ms * 1.01}
    return {"experiment": model, "backend": "pmap", "num_devices": 2, "batch_size": 128,
            "round": round_index, "loadavg_start": [load, load, load], "sides": sides}


def test_suite_compare_table_names_who_reaches_torch_eager():
    """--compare's summary: per model, medians over rounds of each side's ms/step and of
    jaxdl's speed over it; a side a round lacks (torch.compile failed) is left out of its
    medians; the closing line names the models at >= 1.0x torch eager and those below."""
    from benchmarks import suite

    records = [_compare_record("dcgan", 0, 40.0, {"torch eager": 50.0, "torch.compile": 60.0}),
               _compare_record("dcgan", 1, 44.0, {"torch eager": 55.0}),
               _compare_record("resnet20", 0, 800.0, {"torch eager": 400.0}),
               _compare_record("resnet20", 1, 700.0, {"torch eager": 420.0})]
    rows = suite.summarize_compare(records)
    assert [r["model"] for r in rows] == ["dcgan", "resnet20"]
    dcgan, resnet = rows
    assert dcgan["jaxdl_ms"] == pytest.approx(42.0)
    assert dcgan["sides"]["torch eager"]["ratio"] == pytest.approx((50 / 40 + 55 / 44) / 2)
    assert dcgan["sides"]["torch.compile"]["ratio"] == pytest.approx(1.5)  # one round only
    assert resnet["sides"]["torch eager"]["ratio"] == pytest.approx((0.5 + 0.6) / 2)
    assert "torch.compile" not in resnet["sides"]
    table = suite.compare_markdown(rows).splitlines()
    resnet_cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert resnet_cells[0] == "resnet20" and resnet_cells[-2:] == ["n/a", "n/a"]
    assert resnet_cells[5] == "**0.55** (0.56)"
    assert table[-1] == "jaxdl >= 1.0x torch eager: dcgan; below: resnet20 0.55x"


def test_suite_compare_refuses_what_it_would_ignore():
    """--compare keeps each experiment's own parallel setting, so --backends and
    --host_devices are refused (not ignored), as are models without a PyTorch twin."""
    for argv, message in ((["--backends", "pmap"], "own parallel setting"),
                          (["--host_devices", "1"], "own parallel setting"),
                          (["--models", "vae"], "no PyTorch twin for vae"),
                          (["--experiment", "mnist_cnn"], "takes --models")):
        result = subprocess.run([sys.executable, "-m", "benchmarks.suite", "--compare",
                                 "torch", *argv], cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2 and message in result.stderr, (argv, result.stderr)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed: an optional extra (`make install-extras`, "
                           "which CI runs)")
def test_suite_compare_torch_tiny(tmp_path):
    """The bar end to end on the speedrun's small CNN, a few steps: one process, the
    experiment's own setting (1 device, whatever the caller's XLA_FLAGS forced), a row with
    jaxdl's speed over torch eager and the closing line."""
    out = tmp_path / "suite.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", "--compare", "torch", "--models",
         "mnist_speedrun", "--no_torch_compile", "--batch_size", "16", "--steps", "4",
         "--warmup", "1", "--repeats", "2", "--json", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    context = f"\nstdout:\n{result.stdout}\nstderr:\n{stderr_tail(result.stderr)}"
    assert result.returncode == 0, context
    record = json.loads(out.read_text().splitlines()[-1])
    assert record["experiment"] == "mnist_speedrun" and record["num_devices"] == 1, context
    ratio = record["sides"]["torch eager"]["jaxdl_ratio"]
    row = [line for line in result.stdout.splitlines() if line.startswith("| mnist_speedrun |")]
    assert len(row) == 1 and f"**{ratio:.2f}**" in row[0], context
    assert "jaxdl >= 1.0x torch eager: " in result.stdout.splitlines()[-1], context
