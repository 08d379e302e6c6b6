"""The backend x host-device matrix of `benchmarks.step_throughput`, one subprocess a cell,
for one experiment or for a list of model families.

    python -m benchmarks.suite [--experiment digits_cnn | --models mlp,cnn,lstm_lm,...]
        [--backends pmap,sharded] [--host_devices 1,2] [--json FILE] [--rounds 3]
        [--steps K] [--warmup W] [--repeats R] [--batch_size N] [--max_in_flight M]
        [--config.KEY=VALUE ...]
    python -m benchmarks.suite --compare torch [--models mnist_cnn,resnet20,lstm_lm,dcgan]
        [--no_torch_compile] [--rounds 1] [--steps K --warmup W --repeats R] [--json FILE]

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

With `--compare torch` the suite is the bar against PyTorch instead: one
`step_throughput --compare torch` process per model (default: the four of COMPARED),
each with its experiment's own parallel setting (no --backends/--host_devices), timed
with its own window plan (COMPARE_WINDOWS, unless --steps/--warmup/--repeats are given),
and one table: jaxdl's, torch eager's and torch.compile's ms/step and jaxdl's speed
over each torch side (medians over rounds of the in-process ratio of medians; the
per-window median in brackets), then which models reach 1.0x torch eager.
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
# The bar against PyTorch: its model families by default, and each one's (timed steps,
# warmup, windows); ResNet-20 steps take ~10x longer.
COMPARED = ("mnist_cnn", "resnet20", "lstm_lm", "dcgan")
COMPARE_WINDOWS = {"mnist_cnn": (200, 20, 10), "mnist_speedrun": (200, 20, 10),
                   "resnet20": (30, 3, 6), "lstm_lm": (100, 10, 10), "dcgan": (100, 10, 10)}
DEFAULT_WINDOWS = (100, 10, 10)
TORCH_SIDES = ("torch eager", "torch.compile")
_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


def child_env(host_devices: int | None) -> dict[str, str]:
    """This environment with XLA's host-device count replaced by `host_devices`, or with none
    (None: each experiment's own `parallel.host_devices` applies, jaxdl.app.prepare_process)."""
    env = dict(os.environ)
    flags = _COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    if host_devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={host_devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _run_step_throughput(arguments: list[str], host_devices: int | None, json_path: Path,
                         timeout: float) -> dict:
    """One `step_throughput` process writing its record to `json_path`; returns the record."""
    command = [sys.executable, "-m", "benchmarks.step_throughput", "--json", str(json_path),
               *arguments]
    result = subprocess.run(command, cwd=REPO, env=child_env(host_devices),
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode or not json_path.exists():
        raise RuntimeError(f"{' '.join(command)} (host_devices={host_devices}) exited "
                           f"{result.returncode}:\n{result.stdout[-1500:]}"
                           f"{result.stderr[-3000:]}")
    return json.loads(json_path.read_text().splitlines()[-1])


def run_cell(backend: str, host_devices: int, passthrough: list[str], json_path: Path,
             timeout: float) -> dict:
    """One `step_throughput` process of the matrix; returns its JSON record."""
    record = _run_step_throughput(["--backend", backend, "--no_header", *passthrough],
                                  host_devices, json_path, timeout)
    if record["num_devices"] != host_devices or record["backend"] != backend:
        raise RuntimeError(f"asked for {backend} on {host_devices} devices, the run reports "
                           f"{record['backend']} on {record['num_devices']}")
    return record


def run_compare(model: str, passthrough: list[str], json_path: Path, timeout: float) -> dict:
    """One `step_throughput --model M --compare torch` process, with the experiment's own
    host-device split; returns its JSON record."""
    return _run_step_throughput(["--model", model, "--compare", "torch", *passthrough], None,
                                json_path, timeout)


def summarize_compare(records: list[dict]) -> list[dict]:
    """One row per model: medians over rounds of jaxdl's and each torch side's ms/step and
    of jaxdl's speed over that side (the in-process ratio of medians, and the median of
    its per-window ratios)."""
    by_model: dict[str, list[dict]] = {}
    for r in records:
        by_model.setdefault(r["experiment"], []).append(r)
    rows = []
    for model, runs in by_model.items():
        first = runs[0]
        row = {"model": model, "backend": first["backend"],
               "num_devices": first["num_devices"], "batch_size": first["batch_size"],
               "rounds": len(runs), "load_average": [r["loadavg_start"][0] for r in runs],
               "jaxdl_ms": statistics.median(r["sides"]["jaxdl"]["ms_per_step_median"]
                                             for r in runs), "sides": {}}
        for side in TORCH_SIDES:
            present = [r["sides"][side] for r in runs if side in r["sides"]]
            if not present:
                continue
            row["sides"][side] = {
                "ms": statistics.median(s["ms_per_step_median"] for s in present),
                "ratio": statistics.median(s["jaxdl_ratio"] for s in present),
                "ratio_per_window": statistics.median(s["jaxdl_ratio_per_window_median"]
                                                      for s in present),
                "ratio_per_round": [s["jaxdl_ratio"] for s in present]}
        rows.append(row)
    return rows


def compare_markdown(rows: list[dict]) -> str:
    lines = ["| model | jaxdl setting | batch | jaxdl ms/step | torch eager ms/step | "
             "jaxdl / eager (per window) | torch.compile ms/step | jaxdl / compile (per window) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cells = []
        for side in TORCH_SIDES:
            s = row["sides"].get(side)
            cells += (["n/a", "n/a"] if s is None else
                      [f"{s['ms']:.1f}", f"**{s['ratio']:.2f}** ({s['ratio_per_window']:.2f})"])
        lines.append(f"| {row['model']} | {row['backend']}, {row['num_devices']} device(s) | "
                     f"{row['batch_size']} | {row['jaxdl_ms']:.1f} | {' | '.join(cells)} |")
    eager = [(row["model"], row["sides"].get("torch eager")) for row in rows]
    met = [m for m, s in eager if s is not None and s["ratio"] >= 1.0]
    below = [f"{m} {s['ratio']:.2f}x" for m, s in eager if s is not None and s["ratio"] < 1.0]
    lines.append("")
    lines.append(f"jaxdl >= 1.0x torch eager: {', '.join(met) or 'none'}; below: "
                 f"{', '.join(below) or 'none'}")
    return "\n".join(lines)


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
    parser.add_argument("--backends", default=None,
                        help=f"default {','.join(BACKENDS)}; not with --compare")
    parser.add_argument("--host_devices", default=None,
                        help="CPU host splits to run (default "
                             f"{','.join(map(str, HOST_DEVICES))}); give 1 on a GPU; not with "
                             "--compare")
    parser.add_argument("--compare", choices=("torch",), default=None,
                        help="the bar against PyTorch: one step_throughput --compare process "
                             f"per model (default {','.join(COMPARED)}), each with its "
                             "experiment's own parallel setting")
    parser.add_argument("--no_torch_compile", action="store_true",
                        help="with --compare: torch eager only")
    parser.add_argument("--json", default=None, help="append every run's record here")
    parser.add_argument("--rounds", type=int, default=None,
                        help="default 3, or 1 with --compare (its windows alternate already)")
    parser.add_argument("--steps", type=int, default=None,
                        help="default 1500, or each model's COMPARE_WINDOWS with --compare")
    parser.add_argument("--warmup", type=int, default=None, help="default 50 (see --steps)")
    parser.add_argument("--repeats", type=int, default=None, help="default 10 (see --steps)")
    parser.add_argument("--batch_size", type=int, default=0)
    parser.add_argument("--max_in_flight", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per cell")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    rounds = args.rounds if args.rounds is not None else (1 if args.compare else 3)
    if bad or rounds < 1:
        parser.error(f"unrecognized arguments: {' '.join(bad)}" if bad else "--rounds >= 1")
    if args.compare and (args.backends or args.host_devices):
        parser.error("--compare runs each model with its experiment's own parallel setting; "
                     "change it with --config.parallel.backend=... / "
                     "--config.parallel.host_devices=... instead of --backends/--host_devices")
    if args.compare and args.experiment != "digits_cnn":
        parser.error("--compare takes --models (the step_throughput --model names), "
                     "not --experiment")
    backends = _names(args.backends or ",".join(BACKENDS))
    host_devices = _names(args.host_devices or ",".join(map(str, HOST_DEVICES)), int)
    if not backends or set(backends) - set(BACKENDS):
        parser.error(f"--backends: give some of {', '.join(BACKENDS)}")
    if not host_devices or min(host_devices) < 1:
        parser.error("--host_devices: give device counts >= 1")
    from benchmarks import step_throughput

    models = _names(args.models) or (list(COMPARED) if args.compare else [])
    unknown = sorted(set(models) - set(step_throughput.MODEL_FAMILIES))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; valid: "
                     f"{', '.join(step_throughput.MODEL_FAMILIES)}")
    if args.compare:
        uncomparable = sorted(set(models) - set(step_throughput.COMPARABLE))
        if uncomparable:
            parser.error(f"--compare: no PyTorch twin for {', '.join(uncomparable)}; "
                         f"comparable: {', '.join(step_throughput.COMPARABLE)}")
        return compare_main(args, models, rounds, rest)
    steps, warmup, repeats = (1500 if args.steps is None else args.steps,
                              50 if args.warmup is None else args.warmup,
                              10 if args.repeats is None else args.repeats)
    targets = [["--model", m] for m in models] or [["--experiment", args.experiment]]
    common = ["--steps", str(steps), "--warmup", str(warmup),
              "--repeats", str(repeats), "--batch_size", str(args.batch_size),
              "--max_in_flight", str(args.max_in_flight), *rest]

    cells = [(target, backend, n) for target in targets for n in host_devices
             for backend in backends]
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxdl-suite-") as tmp:
        for round_index in range(rounds):
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
          f"(reported); {rounds} rounds (order alternating), {steps} timed steps in "
          f"{first['repeats']} windows after {warmup} warmup per run, at most "
          f"{args.max_in_flight or 'unbounded'} steps in flight; "
          f"{first['platform']} ({first['device_kind']}), jax {first['env']['packages']['jax']}; "
          f"suite wall {time.perf_counter() - start:.0f}s")
    print(markdown(rows))
    _append_json(args.json, records)
    return rows


def compare_main(args: argparse.Namespace, models: list[str], rounds: int,
                 overrides: list[str]) -> list[dict]:
    """`--compare torch`: one process per model and round (models in forward order in even
    rounds, reverse in odd ones), then the table."""
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxdl-suite-") as tmp:
        for round_index in range(rounds):
            for model in (models if round_index % 2 == 0 else models[::-1]):
                steps, warmup, repeats = COMPARE_WINDOWS.get(model, DEFAULT_WINDOWS)
                passthrough = [
                    "--steps", str(steps if args.steps is None else args.steps),
                    "--warmup", str(warmup if args.warmup is None else args.warmup),
                    "--repeats", str(repeats if args.repeats is None else args.repeats),
                    "--batch_size", str(args.batch_size),
                    "--max_in_flight", str(args.max_in_flight),
                    *(["--no_torch_compile"] if args.no_torch_compile else []), *overrides]
                path = Path(tmp) / f"r{round_index}-{model}.jsonl"
                record = run_compare(model, passthrough, path, args.timeout)
                record.update(round=round_index, suite_argv=passthrough)
                records.append(record)
                ratios = ", ".join(f"{name} {side['jaxdl_ratio']:.2f}x"
                                   for name, side in record["sides"].items() if name != "jaxdl")
                print(f"round {round_index} {model}: jaxdl "
                      f"{record['sides']['jaxdl']['ms_per_step_median']:.1f} ms/step; "
                      f"jaxdl over {ratios}", file=sys.stderr, flush=True)
    rows = summarize_compare(records)
    first = records[0]
    loads = ", ".join(f"{r['loadavg_start'][0]:.2f}" for r in records)
    print(f"# --compare torch: {', '.join(models)}; {rounds} round(s), one process per model "
          f"and round, jaxdl and torch in alternating windows inside it; "
          f"{first['platform']} ({first['device_kind']}), jax {first['jax']}, torch "
          f"{first['torch']['version']} ({first['torch']['threads']} threads); load average "
          f"at each start {loads}; "
          f"suite wall {time.perf_counter() - start:.0f}s")
    print(compare_markdown(rows))
    _append_json(args.json, records)
    return rows


def _append_json(path: str | None, records: list[dict]) -> None:
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
