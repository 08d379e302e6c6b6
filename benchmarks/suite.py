"""The backend x host-device matrix of `benchmarks.step_throughput`, one subprocess a cell,
for one experiment or for a list of model families.

    python -m benchmarks.suite [--experiment digits_cnn | --models mlp,cnn,lstm_lm,...]
        [--backends pmap,sharded] [--host_devices 1,2] [--json FILE] [--rounds 3]
        [--steps K] [--warmup W] [--repeats R] [--batch_size N] [--max_in_flight M]
        [--config.KEY=VALUE ...]

Cells: backend in `--backends` x host_devices in `--host_devices` (on a GPU give
`--host_devices 1`: the split applies to CPU hosts only), for each of `--models` (the
`--model` names of step_throughput, each timed on random data with its experiment's
config) or else for `--experiment`. The host split is read by XLA when JAX starts its CPU
backend, so every cell runs in its own process with
XLA_FLAGS=--xla_force_host_platform_device_count=N in its environment (replacing any count
already there). The cells run `--rounds` times, in forward order in even rounds and in
reverse order in odd ones, so slow drift of a shared machine does not land on one row.

The table gives, per cell, the median over rounds of each run's examples/s (itself the
global batch over the median window step time), every round's value, the ratio to the
model's baseline cell ((sharded, 1 device) when it is in the matrix, else its first cell):
of the medians, and the range of the per-round ratios; and the efficiency columns of
step_throughput (GFLOP/step from XLA's cost analysis, achieved TFLOP/s, MFU against the
device's datasheet peak, memory per device), medians over rounds.
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
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} (host_devices={host_devices}) exited "
                           f"{result.returncode}:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in json_path.read_text().splitlines() if line]
    record = records[-1]
    if record["num_devices"] != host_devices or record["backend"] != backend:
        raise RuntimeError(f"asked for {backend} on {host_devices} devices, the run reports "
                           f"{record['backend']} on {record['num_devices']}")
    return record


def _median(runs: dict[int, dict], key: str):
    values = [runs[i][key] for i in sorted(runs)]
    if any(v is None for v in values):
        return None
    return statistics.median(values)


def summarize(records: list[dict]) -> list[dict]:
    """One row per (model, cell): medians over rounds and ratios to the model's baseline
    cell, in the order the cells first ran."""
    by_cell: dict[tuple[str, str, int], dict[int, dict]] = {}
    for r in records:
        by_cell.setdefault((r["experiment"], r["backend"], r["num_devices"]), {})[r["round"]] = r
    rows = []
    for (model, backend, n), runs in by_cell.items():
        cells = {key[1:]: cell for key, cell in by_cell.items() if key[0] == model}
        base = cells.get(BASELINE) or next(iter(cells.values()))
        base_median = statistics.median(r["examples_per_second"] for r in base.values())
        rounds = sorted(runs)
        eps = [runs[i]["examples_per_second"] for i in rounds]
        median = statistics.median(eps)
        ratios = [runs[i]["examples_per_second"] / base[i]["examples_per_second"]
                  for i in rounds if i in base]
        rows.append({
            "model": model, "backend": backend, "host_devices": n,
            "batch_size": runs[rounds[0]]["batch_size"],
            "examples_per_second": median, "per_round": eps,
            "ms_per_step": _median(runs, "ms_per_step_median"),
            "compile_seconds": _median(runs, "compile_seconds"),
            "ratio": median / base_median,
            "ratio_range": (min(ratios), max(ratios)),
            "flops_per_step": _median(runs, "flops_per_step"),
            "achieved_tflops": _median(runs, "achieved_tflops"),
            "mfu": _median(runs, "mfu"),
            "memory_bytes_per_device": _median(runs, "memory_bytes_per_device"),
            "precision": runs[rounds[0]].get("precision"),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    header = ("| model | backend | host devices | batch | examples/s (median) | per round | "
              "ms/step | compile s | vs baseline (per-round range) | GFLOP/step | TFLOP/s | "
              "MFU | memory MiB/device |")
    lines = [header, "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lo, hi = row["ratio_range"]
        per_round = ", ".join(f"{v:.0f}" for v in row["per_round"])
        mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
        lines.append(f"| {row['model']} | {row['backend']} | {row['host_devices']} | "
                     f"{row['batch_size']} | {row['examples_per_second']:.0f} | {per_round} | "
                     f"{row['ms_per_step']:.3f} | {row['compile_seconds']:.2f} | "
                     f"{row['ratio']:.2f} ({lo:.2f}-{hi:.2f}) | "
                     f"{row['flops_per_step'] / 1e9:.3g} | {row['achieved_tflops']:.3g} | "
                     f"{mfu} | {row['memory_bytes_per_device'] / 2**20:.0f} |")
    return "\n".join(lines)


def _names(text: str, kind: type = str) -> list:
    return [kind(part.strip()) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="digits_cnn")
    parser.add_argument("--models", default="",
                        help="comma-separated --model names of step_throughput (random data, "
                             "each with its experiment's config), instead of --experiment")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--host_devices", default=",".join(map(str, HOST_DEVICES)),
                        help="CPU host splits to run; give 1 on a GPU")
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
    backends, host_devices = _names(args.backends), _names(args.host_devices, int)
    if not backends or set(backends) - set(BACKENDS):
        parser.error(f"--backends: give some of {', '.join(BACKENDS)}")
    if not host_devices or min(host_devices) < 1:
        parser.error("--host_devices: give device counts >= 1")
    from benchmarks import step_throughput

    models = _names(args.models)
    unknown = sorted(set(models) - set(step_throughput.MODEL_FAMILIES))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; valid: "
                     f"{', '.join(step_throughput.MODEL_FAMILIES)}")
    targets = [["--model", m] for m in models] or [["--experiment", args.experiment]]
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup),
              "--repeats", str(args.repeats), "--batch_size", str(args.batch_size),
              "--max_in_flight", str(args.max_in_flight), *rest]

    cells = [(target, backend, n) for target in targets for n in host_devices
             for backend in backends]
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxdl-suite-") as tmp:
        for round_index in range(args.rounds):
            order = cells if round_index % 2 == 0 else cells[::-1]
            for position, (target, backend, n) in enumerate(order):
                path = Path(tmp) / f"r{round_index}-{target[1]}-{backend}-{n}.jsonl"
                passthrough = [*target, *common]
                record = run_cell(backend, n, passthrough, path, args.timeout)
                record.update(round=round_index, position=position, suite_argv=passthrough)
                records.append(record)
                print(f"round {round_index} {target[1]} {backend:7s} x{n}: "
                      f"{record['examples_per_second']:8.0f} examples/s  "
                      f"{record['ms_per_step_median']:.3f} ms/step "
                      f"[{record['ms_per_step_p10']:.3f}, {record['ms_per_step_p90']:.3f}]  "
                      f"compile {record['compile_seconds']:.2f}s", file=sys.stderr, flush=True)
    rows = summarize(records)
    first = records[0]
    print(f"# {', '.join(t[1] for t in targets)}: {first['mode']}; compile excluded "
          f"(reported); {args.rounds} rounds (order alternating), {args.steps} timed steps in "
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
