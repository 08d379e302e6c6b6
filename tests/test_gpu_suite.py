"""benchmarks/gpu_suite.py: the rows' command lines, the budget, bad flags, and (slow tier)
the CPU dry run of the whole path that the GPU day will take."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks import gpu_suite


def _row(name):
    return next(r for r in gpu_suite.ROWS if r.name == name)


def test_row_command_on_gpu_compares_with_torch_in_the_rows_settings(tmp_path):
    command = gpu_suite.row_command(_row("resnet50_fp32"), tmp_path / "r.jsonl",
                                    dry_run=False, torch_available=True)
    text = " ".join(command)
    assert "--model resnet50" in text and "--batch_size 256" in text
    assert "--compare torch" in text and "--torch_memory_format channels_last" in text
    assert "--config.precision=fp32" in command and "--warm_compile" in command
    assert "--no_torch_compile" not in command  # torch.compile is a column of the table
    assert not any(a.startswith("--config.data.options.shape") for a in command)


def test_row_command_without_torch_or_twin_times_jaxdl_alone(tmp_path):
    for name, torch_available in (("resnet20", False), ("vae", True)):
        command = gpu_suite.row_command(_row(name), tmp_path / "r.jsonl", dry_run=False,
                                        torch_available=torch_available)
        assert "--compare" not in command, name


def test_dry_run_shrinks_every_row(tmp_path):
    for row in gpu_suite.ROWS:
        command = gpu_suite.row_command(row, tmp_path / "r.jsonl", dry_run=True,
                                        torch_available=True)
        assert command[command.index("--batch_size") + 1] == str(gpu_suite.DRY_BATCH)
        assert command[command.index("--steps") + 1] == str(gpu_suite.DRY_STEPS)
        if row.compare:
            assert "--no_torch_compile" in command
        assert set(row.dry_overrides) <= set(command)


def test_budget_spent_skips_rows_and_still_writes_the_table(tmp_path):
    results = gpu_suite.main(["--out", str(tmp_path), "--rows", "resnet50_bf16,vae",
                              "--budget_s", "1"])
    assert [r["status"] for r in results] == ["skipped", "skipped"]
    saved = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert [r["row"] for r in saved["rows"]] == ["resnet50_bf16", "vae"]
    assert "- vae: skipped" in (tmp_path / "gpu_suite.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--rows", "resnet51"], "unknown"),
    (["--rows", ","], "empty"),
    (["--budget_s", "0"], "budget_s"),
])
def test_bad_flags_exit_2_and_write_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        gpu_suite.main(["--out", str(out), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_dry_run_of_the_suite_on_cpu(tmp_path):
    """What CI can check of the GPU day: every row's process runs (tiny shapes), and the
    JSON and Markdown table hold its figures (torch's columns where torch is installed).
    resnet50_fp32 and resnet20 take the same path as resnet50_bf16 (another precision, a
    smaller family) at two more minutes of CPU compile, so they are left out here."""
    rows = [_row(name) for name in ("resnet50_bf16", "lstm_lm", "dcgan", "vae")]
    results = gpu_suite.main(["--out", str(tmp_path), "--dry_run", "--budget_s", "1800",
                              "--rows", ",".join(row.name for row in rows)])
    assert [r["status"] for r in results] == ["done"] * len(rows), results
    table = (tmp_path / "gpu_suite.md").read_text()
    torch_available = importlib.util.find_spec("torch") is not None
    for result, row in zip(results, rows):
        record = result["record"]
        assert f"| {row.name} | cpu |" in table
        assert record["compile_seconds_warm"] > 0 and record["batch_size"] == gpu_suite.DRY_BATCH
        assert ("sides" in record) == (row.compare and torch_available)
