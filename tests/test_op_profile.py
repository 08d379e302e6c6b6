"""The op table of a jax.profiler trace (`jaxdl.training.op_profile`): the parsing on fixed
HLO and events, and a real traced step through `benchmarks.step_throughput --profile`."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

from benchmark_families import TINY_LSTM

from jaxdl.training import op_profile

HLO = """\
HloModule jit_train_step, is_scheduled=true

%fused_computation.9 (param_0: f32[8,4], param_1: f32[4,4]) -> f32[4] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %dot.3 = f32[8,4]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(train)/transpose(jvp(CNN))/Dense_0/dot_general"}
  ROOT %reduce.2 = f32[4]{0} reduce(%dot.3, %c), dimensions={0}, to_apply=%add, metadata={op_name="jit(train)/transpose(jvp(CNN))/reduce_sum"}
}

ENTRY %main.1 (p: f32[8,4]) -> f32[8,4] {
  %ynn_fusion.3 = f32[16,1024]{1,0} fusion(%a, %b), kind=kCustom, calls=%f, metadata={op_name="pmap(train)/shard_map/transpose(jvp(RecurrentLM))/RecurrentLM.continue_from/rnn/RNN_0/while/body/closed_call/layer_0.scan_fn/layer_0/dot_general" stack_frame_id=3}
  ROOT %add_fusion = f32[8,4]{1,0} fusion(%p), kind=kLoop, calls=%g, metadata={op_name="jit(train)/jvp(CNN)/Dense_0/add"}
  %all-reduce = f32[8]{0} all-reduce(%x), metadata={op_name="pmap(train)/shard_map/psum"}
  %constant.1 = f32[] constant(0)
  %ynn_fusion.9 = f32[4]{0} fusion(%p, %w), kind=kCustom, calls=%fused_computation.9, metadata={op_name="jit(train)/transpose(jvp(CNN))/reduce_sum"}
}
"""


def test_op_sources_name_the_pass_and_the_model_path():
    assert op_profile.op_sources(HLO) == {
        "ynn_fusion.3": "backward: RecurrentLM.continue_from/rnn/RNN_0/layer_0.scan_fn/"
                        "layer_0/dot_general",
        "add_fusion": "forward: Dense_0/add",
        "all-reduce": "psum",
        # named after the matmul inside, not its root (the sum after it)
        "ynn_fusion.9": "backward: Dense_0/dot_general",
        "dot.3": "backward: Dense_0/dot_general",
        "reduce.2": "backward: reduce_sum",
    }


def _event(op, dur, module="jit_train"):
    return {"ph": "X", "dur": dur, "name": op, "args": {"hlo_op": op, "hlo_module": module}}


def test_top_ops_sum_per_step_in_the_busiest_module_without_control_flow(tmp_path):
    events = [_event("dot.1", 300.0), _event("dot.1", 100.0), _event("fusion", 200.0),
              _event("while.4", 5000.0),  # spans the ops inside it: not counted
              _event("dot.9", 50.0, module="jit_eval"),  # another program
              {"ph": "X", "dur": 9e9, "name": "ThunkExecutor::Execute", "args": {}}]
    trace = tmp_path / "perfetto_trace.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": events + [{"ph": "M", "name": "process_name"}]}, f)
    loaded = op_profile.op_events(trace)
    assert [e["name"] for e in loaded] == ["dot.1", "dot.1", "fusion", "while.4", "dot.9"]
    rows = op_profile.top_ops(loaded, 2, {"dot.1": "forward: Dense_0/dot_general"}, limit=5)
    assert rows == [
        {"op": "dot.1", "source": "forward: Dense_0/dot_general", "calls_per_step": 1.0,
         "ms_per_step": 0.2, "share": 400 / 600},
        {"op": "fusion", "source": "", "calls_per_step": 0.5, "ms_per_step": 0.1,
         "share": 200 / 600}]
    assert op_profile.top_ops([], 2, {}, limit=5) == []
    assert op_profile.by_primitive(rows) == [
        {"primitive": "dot_general", "ops_per_step": 1.0, "ms_per_step": 0.2,
         "share": 400 / 600},
        {"primitive": "(none)", "ops_per_step": 0.5, "ms_per_step": 0.1, "share": 200 / 600}]
    # the module the step's HLO names wins even when another one took more time
    named = op_profile.top_ops(loaded, 2, {}, limit=5, module="jit_eval")
    assert [(r["op"], r["ms_per_step"]) for r in named] == [("dot.9", 0.025)]
    assert op_profile.top_ops(loaded, 2, {}, limit=5, module="jit_other") == [
        {**row, "source": ""} for row in rows]  # a name no event has: the busiest module
    assert op_profile.module_name(HLO) == "jit_train_step"
    assert op_profile.module_name("no header") is None
    table = op_profile.markdown(rows)
    assert "| dot.1 | forward: Dense_0/dot_general | 1 | 0.20 | 66.7% |" in table.splitlines()


def test_profile_flag_traces_the_step_and_names_its_ops(tmp_path, capsys):
    """A tiny char LSTM on the forced host devices: the table's ops are the step's own,
    named by their code (the recurrence's matmuls, forward and backward)."""
    from benchmarks import step_throughput

    record = step_throughput.main(
        ["--model", "lstm_lm", "--batch_size", "8", "--steps", "2", "--warmup", "1",
         "--repeats", "1", "--batches", "1", "--no_header", "--profile", str(tmp_path),
         "--profile_steps", "2", "--profile_ops", "40", *TINY_LSTM])
    out = capsys.readouterr().out
    found = record["profile"]
    assert found["steps"] == 2 and Path(found["trace"]).is_file()
    assert Path(found["trace"]).is_relative_to(tmp_path)
    ops = found["ops"]
    assert 0 < len(ops) <= 40
    assert all(row["ms_per_step"] > 0 and row["calls_per_step"] > 0 for row in ops)
    assert sum(row["share"] for row in ops) <= 1 + 1e-9
    assert [row["ms_per_step"] for row in ops] == sorted(
        (row["ms_per_step"] for row in ops), reverse=True)
    sources = [row["source"] for row in ops]
    # the recurrence runs in a loop: 6 steps of the sequence per train step and device
    in_loop = [row for row in ops if "scan_fn" in row["source"]]
    assert in_loop and all(row["calls_per_step"] >= 6 for row in in_loop), ops
    assert any(s.startswith("backward: ") for s in sources), sources
    assert any(s.startswith("forward: ") for s in sources), sources
    assert not any(row["op"].startswith(op_profile.CONTAINERS) for row in ops)
    primitives = {row["primitive"]: row for row in found["primitives"]}
    assert primitives["dot_general"]["ops_per_step"] >= 6 * 2, primitives  # h @ W, both passes
    assert math.isclose(sum(row["share"] for row in found["primitives"]), 1.0, rel_tol=1e-6)
    assert "# profile: 2 steps traced" in out and f"| {ops[0]['op']} |" in out
    assert math.isfinite(record["last_train_loss"])
