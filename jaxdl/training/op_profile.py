"""Where a compiled train step's time goes: the XLA op events of a `jax.profiler` trace,
summed per op and per JAX primitive, and named by the model code they came from.

It reads the Perfetto JSON that `jax.profiler` writes with `create_perfetto_trace=True`, so
no viewer is needed: each op event carries `hlo_module` and `hlo_op`, and the compiled
step's HLO text maps the op to its `op_name` metadata (the JAX call path, e.g.
`transpose(jvp(CNN))/Conv_1/...`). Control-flow ops (`while`, `conditional`, `call`) are
left out: their events span the events of the ops inside them, which are counted. Used by
a run's `logging.profile_steps` (profile/ops.md) and `benchmarks.step_throughput --profile`.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path

CONTAINERS = ("while", "conditional", "call")
TRACE_GLOB = "plugins/profile/*/*perfetto_trace.json.gz"
_MODULE = re.compile(r"^HloModule\s+([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{[^}]*op_name=\"([^\"]*)\"")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OPCODE = re.compile(r"=\s*[\w\[\],{}:]+\s+([\w\-]+)\(")
# The ops a fusion is named after when it holds one: its cost, not its root's.
_HEAVY = ("convolution", "dot")
# Wrappers in an op_name that say how the op was reached, not which model code it is.
_WRAPPERS = re.compile(r"(?:jit|pmap)\([^)]*\)/|shard_map/|(?:transpose\()?jvp\([^)]*\)\)?/"
                       r"|while/body/|closed_call/")


def module_name(hlo_text: str) -> str | None:
    """The name the HLO text gives its module: what the trace's events call `hlo_module`."""
    match = _MODULE.match(hlo_text)
    return match.group(1) if match else None


def _describe(op_name: str) -> str:
    part = ("backward: " if "transpose(jvp(" in op_name
            else "forward: " if "jvp(" in op_name else "")
    return part + _WRAPPERS.sub("", op_name)


def op_sources(hlo_text: str) -> dict[str, str]:
    """{instruction name: where it came from}: its op_name metadata without the wrappers,
    after 'backward: ' when autodiff's transpose made it (the backward pass) and
    'forward: ' when its forward pass did. A fusion that holds a convolution or a matmul
    is named after that op rather than after its root (a matmul fused with the sum after
    it costs what the matmul costs)."""
    own, calls, heavy = {}, {}, {}
    computation = None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and "=" not in line.split("{", 1)[0]:
            computation = header.group(1)
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, op_name = match.groups()
        own[name] = op_name
        called = _CALLS.search(line)
        if called:
            calls[name] = called.group(1)
        opcode = _OPCODE.search(line)
        if computation and opcode and opcode.group(1) in _HEAVY:
            heavy.setdefault(computation, op_name)
    return {name: _describe(heavy.get(calls.get(name), op_name))
            for name, op_name in own.items()}


def op_events(trace_file: Path) -> list[dict]:
    """The trace's complete events ('X') that belong to an XLA op (they carry `hlo_op`)."""
    with gzip.open(trace_file, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events
            if e.get("ph") == "X" and "dur" in e and "hlo_op" in e.get("args", {})]


def top_ops(events: list[dict], steps: int, sources: dict[str, str], *,
            limit: int | None, module: str | None = None) -> list[dict]:
    """The `limit` ops (None: all) with the most time per step in `module` (None, or a name
    no event has: the module with the most time; an evaluation traced in between is another
    module). On several devices their times add up. Each row: op, source, calls per step,
    ms per step, share of the time of all counted ops."""
    by_module = collections.Counter()
    for e in events:
        by_module[e["args"].get("hlo_module", "")] += e["dur"]
    if not by_module:
        return []
    if module not in by_module:
        module = by_module.most_common(1)[0][0]
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        op = e["args"]["hlo_op"]
        if e["args"].get("hlo_module", "") != module or op.startswith(CONTAINERS):
            continue
        total[op] += e["dur"]  # microseconds
        calls[op] += 1
    grand = sum(total.values())
    return [{"op": op, "source": sources.get(op, ""), "calls_per_step": calls[op] / steps,
             "ms_per_step": us / 1e3 / steps, "share": us / grand}
            for op, us in total.most_common(limit)]


def by_primitive(rows: list[dict]) -> list[dict]:
    """`top_ops` rows (all of them) summed per JAX primitive, the last component of their
    source (conv_general_dilated, dot_general, add, psum, ...), most time first; ops with no
    op_name (buffer initialisations, copies XLA added) count as '(none)'."""
    total, calls, share = collections.Counter(), collections.Counter(), collections.Counter()
    for row in rows:
        primitive = row["source"].rsplit("/", 1)[-1].split(": ")[-1] or "(none)"
        total[primitive] += row["ms_per_step"]
        calls[primitive] += row["calls_per_step"]
        share[primitive] += row["share"]
    return [{"primitive": p, "ops_per_step": calls[p], "ms_per_step": ms, "share": share[p]}
            for p, ms in total.most_common()]


def primitives_markdown(rows: list[dict]) -> str:
    lines = ["| primitive | ops/step | ms/step | share |", "|---|---:|---:|---:|"]
    lines += [f"| {r['primitive']} | {r['ops_per_step']:g} | {r['ms_per_step']:.2f} | "
              f"{r['share']:.1%} |" for r in rows]
    return "\n".join(lines)


def find_trace(directory: Path, before: set[Path] = frozenset()) -> Path:
    """The newest Perfetto trace under `directory` that is not in `before`."""
    written = sorted(set(Path(directory).rglob(TRACE_GLOB)) - set(before),
                     key=lambda p: p.stat().st_mtime)
    if not written:
        raise FileNotFoundError(f"jax.profiler wrote no Perfetto trace under {directory}")
    return written[-1]


def report(trace_file: Path, steps: int, hlo_text: str, *, limit: int) -> dict:
    """The ops with the most time (`limit` rows) and the time per primitive (all), from
    `steps` traced steps of the program whose optimized HLO is `hlo_text`."""
    every_op = top_ops(op_events(trace_file), steps, op_sources(hlo_text), limit=None,
                       module=module_name(hlo_text))
    return {"trace": str(trace_file), "steps": steps, "ops": every_op[:limit],
            "primitives": by_primitive(every_op)}


def report_markdown(found: dict, devices: int, *, limit: int) -> str:
    return "\n".join([
        f"# profile: {found['steps']} steps traced into {found['trace']}; op events summed "
        f"per step over {devices} device(s), control-flow ops left out. The ops with the "
        "most time:", markdown(found["ops"]), "",
        "# the same time per JAX primitive (the last component of the source):",
        primitives_markdown(found["primitives"][:limit])])


def markdown(rows: list[dict], *, source_width: int = 90) -> str:
    lines = ["| op | source (op_name) | calls/step | ms/step | share |",
             "|---|---|---:|---:|---:|"]
    for row in rows:
        source = row["source"]
        if len(source) > source_width:  # the end names the operation; keep it
            part, _, path = source.rpartition(": ")
            keep = source_width - len(part) - 5
            source = f"{part}: ..." + path[-keep:] if part else "..." + path[-(source_width - 3):]
        lines.append(f"| {row['op']} | {source} | {row['calls_per_step']:g} | "
                     f"{row['ms_per_step']:.2f} | {row['share']:.1%} |")
    return "\n".join(lines)
