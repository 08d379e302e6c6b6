"""Training-step throughput of an experiment, timed on the very step its runs compile.

    python -m benchmarks.step_throughput --experiment digits_cnn --backend sharded \
        [--batch_size N] [--steps K] [--warmup W] [--repeats R] [--json FILE] \
        [--config.KEY=VALUE ...]
    python -m benchmarks.step_throughput --experiment mnist_cnn --compare torch [...]
    python -m benchmarks.step_throughput --model NAME [--compare torch] [...]

The config is the one `python -m experiments.NAME` runs with (`jaxdl.app.load_config`),
the process is set up as a run sets it up (`jaxdl.app.prepare_process`: the CPU split into
`config.parallel.host_devices` unless XLA_FLAGS sets the count, which must happen before
JAX starts its backend, so one process measures one split; `benchmarks.suite` runs the
matrix in subprocesses), and the trainer comes from `jaxdl.training.loop.build`, as in
`train_and_evaluate`. So the timed executable is the experiment's compiled `train_step`
(same model, optimizer, backend, donation and shardings); nothing here re-implements it.

What is timed: `--batches` distinct training batches are placed on the devices *before*
timing and cycled, so host batching and host-to-device transfer are excluded. After
`--warmup` steps, `--steps` steps are timed in `--repeats` windows; each window ends with
`jax.block_until_ready` on the returned state and metrics, so it measures device work plus
per-step dispatch. The step time is reported as the median and p10/p90 over windows,
examples/s as the global batch over the median. Compilation is excluded from the timing
and reported separately (`Trainer.compile_seconds`: train + eval step, no persistent
compilation cache). With `--warm_compile` the trainer is built twice with JAX's persistent
cache in a fresh temporary directory: the first build is the cold compile (it fills the
cache), the second the warm one.

The modules, one concern each:
  cli.py       flags, the config, main()
  families.py  `--model NAME`: model families on synthetic data
  measure.py   the timed loop (pre-placed batches, bounded queue), window statistics, FLOPs
  compare.py   `--compare torch`: the PyTorch twin (benchmarks/torch_twins) side by side
  report.py    Markdown rows, JSON records, the one-line error exit
"""

from benchmarks.step_throughput.cli import load_config, main, parse_args
from benchmarks.step_throughput.compare import gan_probe_loss
from benchmarks.step_throughput.families import COMPARABLE, MODEL_FAMILIES, SYNTHETIC_SOURCE
from benchmarks.step_throughput.measure import JaxdlSteps, split, window_stats
from benchmarks.step_throughput.report import append_json, fail

__all__ = ["COMPARABLE", "MODEL_FAMILIES", "SYNTHETIC_SOURCE", "JaxdlSteps", "append_json",
           "fail", "gan_probe_loss", "load_config", "main", "parse_args", "split", "window_stats"]
