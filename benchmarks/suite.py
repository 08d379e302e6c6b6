"""The backend x host-device matrix of `benchmarks.step_throughput`, one subprocess a cell.

    python -m benchmarks.suite [--experiment digits_cnn] [--json FILE] [--rounds 3]
        [--steps K] [--warmup W] [--repeats R] [--batch_size N] [--max_in_flight M]
        [--config.KEY=VALUE ...]

Cells: backend in (pmap, sharded) x host_devices in (1, 2). The host split is read by XLA
when JAX starts its CPU backend, so every cell runs in its own process with
XLA_FLAGS=--xla_force_host_platform_device_count=N in its environment (replacing any count
already there). The cells run `--rounds` times, in forward order in even rounds and in
reverse order in odd ones, so slow drift of a shared machine does not land on one row.

The table gives, per cell, the median over rounds of each run's examples/s (itself the
global batch over the median window step time), every round's value, and the ratio to the
(sharded, 1 device) cell: of the medians, and the range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("pmap", "sharded")
HOST_DEVICES = (1, 2)
BASELINE = ("sharded", 1)
_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


def child_env(host_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = _COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={host_devices}"])
    return env


def run_cell(backend: str, host_devices: int, passthrough: list[str], json_path: Path,
             timeout: float) -> dict:
    """One `step_throughput` process; returns its JSON record."""
    command = [sys.executable, "-m", "benchmarks.step_throughput", "--backend", backend,
               "--json", str(json_path), "--no_header", *passthrough]
    result = subprocess.run(command, cwd=REPO, env=child_env(host_devices),
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} (host_devices={host_devices}) exited "
                           f"{result.returncode}:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in json_path.read_text().splitlines() if line]
    record = records[-1]
    if record["num_devices"] != host_devices or record["backend"] != backend:
        raise RuntimeError(f"asked for {backend} on {host_devices} devices, the run reports "
                           f"{record['backend']} on {record['num_devices']}")
    return record


def summarize(records: list[dict]) -> list[dict]:
    """One row per cell: medians over rounds and ratios to the baseline cell."""
    by_cell: dict[tuple[str, int], dict[int, dict]] = {}
    for r in records:
        by_cell.setdefault((r["backend"], r["num_devices"]), {})[r["round"]] = r
    base = by_cell[BASELINE]
    base_median = statistics.median(r["examples_per_second"] for r in base.values())
    rows = []
    for n in HOST_DEVICES:
        for backend in BACKENDS:
            runs = by_cell[(backend, n)]
            rounds = sorted(runs)
            eps = [runs[i]["examples_per_second"] for i in rounds]
            median = statistics.median(eps)
            ratios = [runs[i]["examples_per_second"] / base[i]["examples_per_second"]
                      for i in rounds if i in base]
            rows.append({
                "backend": backend, "host_devices": n,
                "batch_size": runs[rounds[0]]["batch_size"],
                "examples_per_second": median, "per_round": eps,
                "ms_per_step": statistics.median(runs[i]["ms_per_step_median"] for i in rounds),
                "compile_seconds": statistics.median(runs[i]["compile_seconds"]
                                                     for i in rounds),
                "ratio": median / base_median,
                "ratio_range": (min(ratios), max(ratios)),
            })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| backend | host devices | batch | examples/s (median) | per round | "
             "ms/step | compile s | vs sharded x1 (per-round range) |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        lo, hi = row["ratio_range"]
        per_round = ", ".join(f"{v:.0f}" for v in row["per_round"])
        lines.append(f"| {row['backend']} | {row['host_devices']} | {row['batch_size']} | "
                     f"{row['examples_per_second']:.0f} | {per_round} | "
                     f"{row['ms_per_step']:.3f} | {row['compile_seconds']:.2f} | "
                     f"{row['ratio']:.2f} ({lo:.2f}-{hi:.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="digits_cnn")
    parser.add_argument("--json", default=None, help="append every run's record here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=0)
    parser.add_argument("--max_in_flight", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per cell")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad or args.rounds < 1:
        parser.error(f"unrecognized arguments: {' '.join(bad)}" if bad else "--rounds >= 1")
    passthrough = ["--experiment", args.experiment, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--repeats", str(args.repeats),
                   "--batch_size", str(args.batch_size),
                   "--max_in_flight", str(args.max_in_flight), *rest]

    cells = [(backend, n) for n in HOST_DEVICES for backend in BACKENDS]
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxdl-suite-") as tmp:
        for round_index in range(args.rounds):
            order = cells if round_index % 2 == 0 else cells[::-1]
            for position, (backend, n) in enumerate(order):
                path = Path(tmp) / f"r{round_index}-{backend}-{n}.jsonl"
                record = run_cell(backend, n, passthrough, path, args.timeout)
                record.update(round=round_index, position=position, suite_argv=passthrough)
                records.append(record)
                print(f"round {round_index} {backend:7s} x{n}: "
                      f"{record['examples_per_second']:8.0f} examples/s  "
                      f"{record['ms_per_step_median']:.3f} ms/step "
                      f"[{record['ms_per_step_p10']:.3f}, {record['ms_per_step_p90']:.3f}]  "
                      f"compile {record['compile_seconds']:.2f}s", file=sys.stderr, flush=True)
    rows = summarize(records)
    first = records[0]
    print(f"# {args.experiment}: {first['mode']}; compile excluded (reported); "
          f"{args.rounds} rounds (order alternating), {args.steps} timed steps in "
          f"{first['repeats']} windows after {args.warmup} warmup per run, at most "
          f"{args.max_in_flight or 'unbounded'} steps in flight; "
          f"{first['platform']} ({first['device_kind']}), jax {first['env']['packages']['jax']}; "
          f"suite wall {time.perf_counter() - start:.0f}s")
    print(markdown(rows))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    return rows


if __name__ == "__main__":
    main()
