"""The GPU day in one command: every step benchmark the benchmarks README wants GPU rows
for, jaxdl beside PyTorch, in one process per row, within a time budget.

    bash benchmarks/gpu_suite.sh            # on the GPU machine (installs carried wheels)
    python -m benchmarks.gpu_suite --out DIR [--rows resnet50_bf16,...] [--budget_s 480]
    python -m benchmarks.gpu_suite --out DIR --dry_run      # tiny shapes, any machine (CI)

Each row is one `python -m benchmarks.step_throughput --model M` process (the compiled
train step `python -m experiments.NAME` trains with, on random data of the family's shape,
batches pre-placed on the device), with `--warm_compile` (compile cold, then warm from a
fresh persistent cache) and, for families with a PyTorch twin and torch installed,
`--compare torch`: torch eager and torch.compile in alternating windows in the same
process, bf16 rows under `torch.autocast(bfloat16)` (AMP), convolutional rows channels_last.
jaxdl's side reports XLA's FLOPs per step, MFU against the datasheet peak and the
allocator's peak memory (benchmarks/step_throughput/measure.py).

The rows run in the order of ROWS, most wanted first; a row starts only while the budget
has room for it (`--budget_s`, default 8 minutes of wall time for the whole suite) and is
stopped at what is left, so a suite always ends inside its budget with every finished row
written. Output: `DIR/gpu_suite.json` (the step_throughput records, one per row, plus the
rows skipped or failed and why) and `DIR/gpu_suite.md` (one table), rewritten after every row.

`--dry_run` shrinks every row (images 32x32, batch 4, a tiny LSTM, 2 timed steps, no
torch.compile) so the whole path (subprocesses, records, table) runs on a CPU in CI; its
figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    model: str                      # a `--model` family of benchmarks.step_throughput
    batch_size: int = 0             # 0 = the family's experiment's batch
    overrides: tuple[str, ...] = ()
    compare: bool = True            # the family has a PyTorch twin
    memory_format: str | None = None
    steps: int = 300
    dry_overrides: tuple[str, ...] = ()  # what --dry_run adds to shrink the row


# Batch 256 per GPU for ResNet-50 is the common ImageNet setting (MLPerf's per-chip batches
# are of that order); the CIFAR/MNIST families keep their experiments' batches.
SMALL_IMAGE = ("--config.data.options.shape=(32,32,3)",)
ROWS = (
    Row("resnet50_bf16", "resnet50", batch_size=256, memory_format="channels_last",
        steps=200, dry_overrides=SMALL_IMAGE),
    Row("resnet50_fp32", "resnet50", batch_size=256, overrides=("--config.precision=fp32",),
        memory_format="channels_last", steps=100, dry_overrides=SMALL_IMAGE),
    Row("resnet20", "resnet20", memory_format="channels_last"),
    Row("lstm_lm", "lstm_lm", dry_overrides=("--config.model.hidden_size=8",
                                             "--config.data.options.shape=(6,)")),
    Row("dcgan", "dcgan"),
    Row("vae", "vae", compare=False),
)
DRY_BATCH, DRY_STEPS = 4, 2
# A row is not started with less than this left of the budget: a ResNet-50 row's compile
# alone (cold + warm + torch.compile) takes most of it.
MIN_ROW_SECONDS = 45.0


def row_command(row: Row, json_path: Path, *, dry_run: bool, torch_available: bool) -> list[str]:
    """The step_throughput command line of one row."""
    command = [sys.executable, "-m", "benchmarks.step_throughput", "--model", row.model,
               "--json", str(json_path), "--warm_compile",
               "--steps", str(DRY_STEPS if dry_run else row.steps),
               "--warmup", "1" if dry_run else "20", "--repeats", "2" if dry_run else "10"]
    batch = DRY_BATCH if dry_run else row.batch_size
    if batch:
        command += ["--batch_size", str(batch)]
    if row.compare and torch_available:
        command += ["--compare", "torch"]
        if row.memory_format:
            command += ["--torch_memory_format", row.memory_format]
        if dry_run:  # inductor's compile of even a tiny model takes minutes on a CPU
            command.append("--no_torch_compile")
    return command + list(row.overrides) + (list(row.dry_overrides) if dry_run else [])


def summary_row(name: str, record: dict) -> str:
    """One Markdown row of the suite's table from a step_throughput record."""
    sides = record.get("sides") or {"jaxdl": record}
    jaxdl = sides["jaxdl"]

    def rate(side):
        return f"{sides[side]['examples_per_second']:.0f}" if side in sides else "-"

    def ratio(side):
        return f"{sides[side]['jaxdl_ratio']:.2f}x" if side in sides else "-"

    mfu = record.get("mfu")
    memory = record.get("memory_bytes_per_device")
    return (f"| {name} | {record['device_kind']} | {record['precision']} | "
            f"{record['batch_size']} | {record['compile_seconds_cold']:.1f} / "
            f"{record['compile_seconds_warm']:.1f} | {jaxdl['ms_per_step_median']:.2f} | "
            f"{jaxdl['examples_per_second']:.0f} | "
            f"{'n/a' if mfu is None else format(mfu, '.1%')} | "
            f"{'-' if memory is None else format(memory / 2**20, '.0f')} | "
            f"{rate('torch eager')} | {rate('torch.compile')} | {ratio('torch eager')} | "
            f"{ratio('torch.compile')} |")


HEADER = ("| row | device | precision | batch | compile s cold / warm | jaxdl ms/step | "
          "jaxdl ex/s | MFU | peak MiB | torch eager ex/s | torch.compile ex/s | "
          "jaxdl / eager | jaxdl / compile |\n"
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def write_outputs(out: Path, header: dict, results: list[dict]) -> None:
    """gpu_suite.json and gpu_suite.md from what has run so far."""
    (out / "gpu_suite.json").write_text(json.dumps({**header, "rows": results}, indent=1))
    lines = [f"# GPU suite, {header['date']}{' (dry run: figures mean nothing)' if header['dry_run'] else ''}",
             "", f"torch installed: {header['torch_available']}; budget {header['budget_s']:.0f} s; "
             f"wall {header.get('wall_s', 0):.0f} s", "", HEADER]
    notes = []
    for result in results:
        if result["status"] == "done":
            lines.append(summary_row(result["row"], result["record"]))
        else:
            notes.append(f"- {result['row']}: {result['status']}: {result['reason']}")
        notes += [f"- {result['row']}: {note}" for note in result.get("notes", [])]
    (out / "gpu_suite.md").write_text("\n".join(lines + [""] + notes) + "\n")


def run_row(row: Row, out: Path, *, dry_run: bool, torch_available: bool,
            seconds_left: float) -> dict:
    json_path = out / f"{row.name}.jsonl"
    json_path.unlink(missing_ok=True)
    command = row_command(row, json_path, dry_run=dry_run, torch_available=torch_available)
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              timeout=seconds_left, check=False)
    except subprocess.TimeoutExpired:
        return {"row": row.name, "status": "stopped",
                "reason": f"ran past the {seconds_left:.0f} s left of the budget",
                "command": command}
    (out / f"{row.name}.log").write_text(done.stdout + done.stderr)
    result = {"row": row.name, "command": command, "seconds": time.monotonic() - start}
    if done.returncode or not json_path.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {**result, "status": "failed", "reason": f"exit {done.returncode}: {tail}"}
    record = json.loads(json_path.read_text().splitlines()[-1])
    return {**result, "status": "done", "record": record, "notes": record.get("notes", [])}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_suite",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_suite.json/.md and logs")
    parser.add_argument("--rows", default=",".join(r.name for r in ROWS),
                        help="comma-separated subset of: " + ", ".join(r.name for r in ROWS))
    parser.add_argument("--budget_s", type=float, default=480.0,
                        help="wall-clock budget of the whole suite in seconds")
    parser.add_argument("--dry_run", action="store_true",
                        help="tiny shapes and steps: checks the path on any machine")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    by_name = {r.name: r for r in ROWS}
    wanted = [name for name in args.rows.split(",") if name]
    unknown = [name for name in wanted if name not in by_name]
    if unknown or not wanted:
        parser.error(f"--rows: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
                     f"choose from {', '.join(by_name)}")
    if args.budget_s <= 0:
        parser.error("--budget_s must be > 0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch_available = importlib.util.find_spec("torch") is not None
    header = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "dry_run": args.dry_run, "torch_available": torch_available,
              "budget_s": args.budget_s, "python": sys.version.split()[0],
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    start = time.monotonic()
    results: list[dict] = []
    for name in wanted:
        left = args.budget_s - (time.monotonic() - start)
        if left < (0 if args.dry_run else MIN_ROW_SECONDS):
            result = {"row": name, "status": "skipped",
                      "reason": f"{left:.0f} s of the budget left"}
        else:
            result = run_row(by_name[name], out, dry_run=args.dry_run,
                             torch_available=torch_available, seconds_left=left)
        results.append(result)
        header["wall_s"] = time.monotonic() - start
        write_outputs(out, header, results)
        print(f"{name}: {result['status']}" + (f" ({result['reason']})" if "reason" in result
                                                else f" in {result['seconds']:.0f} s"),
              flush=True)
    print((out / "gpu_suite.md").read_text())
    return results


if __name__ == "__main__":
    main()
