"""What a step_throughput run prints and records: Markdown rows and JSON lines."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

MODE = "synthetic-from-real-data: batches pre-placed on device, host input excluded"
RANDOM_MODE = "synthetic (random data): batches pre-placed on device, host input excluded"
HEADER = ("| experiment | backend | devices | batch (per device) | compile s | "
          "ms/step median [p10, p90] | examples/s | GFLOP/step | TFLOP/s | MFU | "
          "memory MiB/device |")
SEPARATOR = "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"


def run_fields(args, trainer, window_steps, max_in_flight) -> dict:
    """What every record says about the run: when, what, on which devices, how timed."""
    backend, batch_size = trainer.backend, trainer.config.data.batch_size
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "experiment": args.experiment,
        "backend": backend.kind,
        "platform": backend.devices[0].platform,
        "device_kind": backend.devices[0].device_kind,
        "num_devices": backend.num_devices,
        "batch_size": batch_size,
        "per_device_batch": batch_size // backend.num_devices,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": len(window_steps),
        "distinct_batches": args.batches,
        "max_in_flight": max_in_flight,
        "compile_seconds": trainer.compile_seconds,
    }


def compare_markdown(record: dict) -> str:
    devices = f"{record['num_devices']} x {record['platform']}"
    lines = ["| side | setting | batch | compile s | first step s | ms/step median [p10, p90] | "
             "examples/s | jaxdl / side: medians (per window: median, range) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in record["sides"].items():
        if name == "jaxdl":
            setting = f"{record['backend']}, {devices}"
            compile_s, first, ratio = f"{record['compile_seconds']:.1f}", "-", "1"
        else:
            setting = (f"{record['torch']['device']}, {record['torch']['threads']} threads, "
                       f"{record['torch']['memory_format']}")
            compile_s, first = "-", f"{r['first_step_seconds']:.1f}"
            pw = r["jaxdl_ratio_per_window"]
            ratio = (f"{r['jaxdl_ratio']:.2f} ({r['jaxdl_ratio_per_window_median']:.2f}, "
                     f"{min(pw):.2f}-{max(pw):.2f})")
        lines.append(f"| {name} | {setting} | {record['batch_size']} | {compile_s} | {first} | "
                     f"{r['ms_per_step_median']:.2f} [{r['ms_per_step_p10']:.2f}, "
                     f"{r['ms_per_step_p90']:.2f}] | {r['examples_per_second']:.0f} | "
                     f"{ratio} |")
    return "\n".join(lines)


def markdown_row(record: dict) -> str:
    devices = f"{record['num_devices']} x {record['platform']} ({record['device_kind']})"
    return (f"| {record['experiment']} | {record['backend']} | {devices} | "
            f"{record['batch_size']} ({record['per_device_batch']}) | "
            f"{record['compile_seconds']:.2f} | {record['ms_per_step_median']:.3f} "
            f"[{record['ms_per_step_p10']:.3f}, {record['ms_per_step_p90']:.3f}] | "
            f"{record['examples_per_second']:.0f} | {record['flops_per_step'] / 1e9:.3g} | "
            f"{record['achieved_tflops']:.3g} | "
            f"{'n/a' if record['mfu'] is None else format(record['mfu'], '.1%')} | "
            f"{record['memory_bytes_per_device'] / 2**20:.0f} |")




def fail(error: BaseException) -> None:
    """Ends a benchmark on bad input: its first line on stderr, exit status 2."""
    text = str(error).strip()
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    sys.exit(2)


def append_json(path: str | None, record: dict) -> None:
    """Appends `record` as one JSON line to `path` (nothing when None)."""
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
