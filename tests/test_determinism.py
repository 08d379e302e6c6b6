"""--deterministic through the real CLI: recorded in env.json; a conflicting XLA flag refused."""

import json
import os

import pytest
from conftest import run_cli, stderr_tail
from jaxdl.training import environment
from jaxdl.training.writers import read_metrics

SHRINK = ["--config.train.duration=2 epochs", "--config.train.eval_every=1 epoch",
          "--config.logging.progress=False", "--compilation_cache_dir="]


def _train(workdir, *flags):
    result = run_cli("experiments.digits_mlp", f"--workdir={workdir}", *SHRINK, *flags)
    assert result.returncode == 0, stderr_tail(result.stderr)
    assert "compilation cache" not in result.stdout  # --compilation_cache_dir= turns it off
    values = [{k: v for k, v in r.items() if k != "time"}
              for r in read_metrics(workdir / "metrics.jsonl")]
    return values, json.loads((workdir / "env.json").read_text())


@pytest.mark.slow
def test_deterministic_is_recorded_in_env_json(tmp_path):
    """What the flag sets is in env.json. (Reruns are identical on CPU with or without it,
    test_experiments.py::test_same_config_gives_identical_metrics; its seeding of Python's
    and numpy's generators: test_readme_promises.py.)"""
    values, env = _train(tmp_path / "a", "--deterministic")
    assert values
    assert env["deterministic"] is True
    assert "--xla_gpu_deterministic_ops=true" in env["xla_flags"]
    assert env["tf_deterministic_ops"] == "1"

    _, plain_env = _train(tmp_path / "c")
    assert plain_env["deterministic"] is False
    assert "xla_gpu_deterministic_ops" not in plain_env["xla_flags"]


def test_conflicting_xla_flag_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") +
                       " --xla_gpu_deterministic_ops=false")
    result = run_cli("experiments.digits_mlp", f"--workdir={tmp_path / 'run'}", "--deterministic")
    assert result.returncode == 2, stderr_tail(result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: --deterministic conflicts with XLA_FLAGS "
                     "--xla_gpu_deterministic_ops=false"]
    assert not (tmp_path / "run").exists()


def test_xla_flag_parsing():
    flags = "--xla_force_host_platform_device_count=4 --xla_gpu_deterministic_ops=false"
    assert environment.xla_flag("xla_force_host_platform_device_count", flags) == "4"
    assert not environment.deterministic_xla(flags)
    assert environment.deterministic_xla(flags + " --xla_gpu_deterministic_ops=True")
    assert environment.deterministic_xla("--xla_gpu_deterministic_ops")  # bare means true
    assert not environment.deterministic_xla("")


def test_host_cpu_reads_the_first_processor_block():
    """env.json names the CPU (vendor, family, model) and its vector extensions, from the
    first processor's block of /proc/cpuinfo, on x86 and on ARM; nothing without it."""
    x86 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
           "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16\n\n"
           "processor\t: 1\nvendor_id\t: SomethingElse\n")
    assert environment.host_cpu(x86) == {
        "vendor": "AuthenticAMD", "family": "25", "model": "17", "model_name": "AMD EPYC",
        "simd": ["avx2", "fma", "avx512f", "avx512_bf16"]}
    arm = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"
    assert environment.host_cpu(arm) == {"vendor": "0x41", "family": None, "model": "0xd40",
                                         "model_name": None, "simd": ["asimd", "sve"]}
    assert environment.host_cpu("")["simd"] == []
