"""Gradual magnitude pruning (Zhu & Gupta 2017) of a ResNet-20 on Fashion-MNIST to 50, 80,
90 and 95 % sparsity, against the dense network.

The study: a dense ResNet-20 (half width: 8, 16, 32 channels) is trained for 5 epochs
first; each arm then starts from its weights and trains 80 more steps (about one epoch)
with `config.prune`: sparsity rises from 0 at step 0 to the arm's target at step 40 along
the cubic schedule, the masks recomputed every 4 steps, then 40 steps fine-tune the pruned
network with the masks fixed; the `_long` arms do the same over 3x as many steps (prune
120, every 12, fine-tune 120). Every pruned layer reaches the target (the paper's per-layer
scope): all conv kernels of the three stages and the head; the stem's 72 weights and every
bias and BatchNorm parameter stay dense. The 0 % arms are the same steps without pruning:
the dense network trained as long as the pruned ones. Every run reports its last weights;
the test split chooses nothing, and nothing was tuned (validation is reported only).

Scaled to fit a shared 2-core CPU (the arms take 2-3 minutes each): half the channels of
the paper's ResNet-20, 1,000 training images per class (10,000), 5 epochs dense and 80 or
240 steps per arm, where Zhu & Gupta prune over tens of thousands of steps.

Commands:
    # the whole study, resumable (rerun to continue); writes DIR/results.md, .json, .png
    python -m experiments.fashion_mnist_pruning --study --workdir=DIR
    # one run of it: the dense network, then one arm from it
    python -m experiments.fashion_mnist_pruning --variant=dense --workdir=DIR/dense
    python -m experiments.fashion_mnist_pruning --variant=sparsity_90 \\
        --config.init_from=DIR/dense --workdir=DIR/sparsity_90
    python -m experiments.fashion_mnist_pruning --variant=sparsity_90_long \\
        --config.init_from=DIR/dense --workdir=DIR/sparsity_90_long

Results (measured 2026-12-07, 20:49-21:09 UTC, on the 2-core AMD EPYC CPU dev VM with
AVX-512, no GPU, jax 0.10.2, 1 CPU device, sharded; `--study`, with the test suite's slow
tier running beside it from 20:53). Test accuracy of the last weights on the 10,000 test
images; every pruned layer reached its sparsity to within one weight; the non-zero count is
of every parameter (stem, biases and BatchNorm included). The dense network after its 5
epochs: validation 0.8615, test 0.8522.

    | sparsity | non-zero params | prune 40 + tune 40 steps | prune 120 + tune 120 steps |
    |          |                 | validation | test        | validation | test          |
    |----------|-----------------|------------|-------------|------------|---------------|
    | 0        | 67,906          | 0.8585     | 0.8540      | 0.8720     | 0.8635        |
    | 0.50     | 34,338          | 0.8520     | 0.8460      | 0.8650     | 0.8600        |
    | 0.80     | 14,196          | 0.8005     | 0.7875      | 0.8090     | 0.8035        |
    | 0.90     | 7,486           | 0.7250     | 0.7343      | 0.7705     | 0.7761        |
    | 0.95     | 4,128           | 0.6310     | 0.6248      | 0.6830     | 0.6712        |

experiments/fashion_mnist_pruning.png plots these (the study writes it as DIR/results.png).
Wall time: 19 min 41 s for the whole study (the dense run, then ten arms); training loop
70 s for the dense run, 26-31 s per 80-step arm, 81-99 s per 240-step arm.

The dense run has now been measured three ways: test 0.8512 with XLA's own weight gradient
and 0.8609 with the per-tap matmuls of that afternoon (both on another VM), 0.8522 with XLA's
own gradient on this one (where the dense run with lax's convolution alone,
`layers.plain_convolutions()` around `jaxdl.api.train`, logs the same loss, norms and
accuracies at every step). Each step's gradient agrees to float32 rounding, yet 390 steps
of this small network carry the rounding of another CPU or route to about a point. Read
differences of a point between arms accordingly.

At 50 % the pruned network keeps the accuracy of the dense one trained as long (-0.8 and
-0.35 test points, short / long); beyond that accuracy falls faster and faster, and a longer
schedule recovers part of it: against the 0 % arm of the same length, -6.7 / -6.0 points at
80 %, -12.0 / -8.7 at 90 %, -22.9 / -19.2 at 95 %. The network is small (95 % leaves 3,358
of the 67,136 weights of the pruned layers) and its schedules are short next to the
paper's, which prunes large models over tens of thousands of steps.

Needs the Fashion-MNIST IDX files (README: data lookup order).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import ml_collections

from jaxdl.models.resnet import CifarResNet

# The 0 % arm (no pruning, the same extra epochs) last: the pruned arms come first.
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.0)
ARMS = tuple(f"sparsity_{round(100 * s)}" for s in SPARSITIES)
# Each arm twice: 40 steps of pruning + 40 of fine-tuning, then 3x as long ('_long').
VARIANTS = ("dense", *ARMS, *(f"{arm}_long" for arm in ARMS))


class ResNet20Half(CifarResNet):
    """ResNet-20 (He et al. 2015: 3 stages of 3 basic blocks) at half width (8, 16, 32
    channels; 67,906 parameters at 10 classes): about 4x fewer multiply-adds than the
    paper's, so the six runs fit a shared 2-core CPU."""

    DEPTH = 20
    WIDTHS = (8, 16, 32)


def get_config(variant: str = "dense") -> ml_collections.ConfigDict:
    """`dense` (trained from the seed) or `sparsity_<percent>` (from config.init_from, the
    dense run; the study sets it)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: one of {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="experiments.fashion_mnist_pruning:ResNet20Half", num_classes=10,
                   bn_momentum=0.9, bn_epsilon=1e-5, se_ratio=0.0, zero_init_last_bn=False)
    c.task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.0)
    # Fashion-MNIST ships its 10,000-image test split; validation is 2,000 train images.
    # Per-channel mean/std of the 60,000 training images (0.2860, 0.3530).
    c.data = dict(name="fashion_mnist", split_seed=0, validation_fraction=2000 / 60000,
                  test_fraction=0.0, examples_per_class=1000, batch_size=128,
                  eval_batch_size=1000,
                  augmentation="random_crop(pad=2,pad_mode=zeros)+horizontal_flip(p=0.5)"
                               "+normalize(mean=(0.2860,),std=(0.3530,))")
    c.checkpoint = dict(every="1 epoch", keep_last=1, keep_best=0,
                        monitor="validation/accuracy", mode="max")
    c.optimizer = dict(name="nesterov", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
                       weight_decay_mask="no_bias_no_norm")
    c.precision = "fp32"
    c.parallel = dict(backend="sharded")
    if variant == "dense":
        c.train = dict(duration="5 epochs", log_every="20 steps", eval_every="5 epochs")
        c.schedule = dict(name="one_cycle", pct_start=0.25, div_factor=10.0,
                          final_div_factor=1e3)
        return c
    # An arm: 80 (or 240) more steps from the dense weights at a lower, decaying rate, the
    # first half pruning.
    steps = 240 if variant.endswith("_long") else 80
    c.train = dict(duration=f"{steps} steps", log_every="20 steps",
                   eval_every=f"{steps} steps")
    c.checkpoint.every = f"{steps // 2} steps"
    c.optimizer.learning_rate = 0.02
    c.schedule = dict(name="cosine", final_lr_factor=0.0)
    c.init_from = "runs/fashion_mnist_pruning/dense"  # the study points it at its own
    sparsity = _sparsity(variant)
    if sparsity:
        c.prune = dict(final_sparsity=sparsity, start="0 steps", end=f"{steps // 2} steps",
                       every=f"{steps // 20} steps", scope="layer",
                       params="stage*/**/kernel, head/kernel")
    return c


def _sparsity(variant: str) -> float:
    return (0.0 if variant == "dense"
            else int(variant.removeprefix("sparsity_").removesuffix("_long")) / 100)


def _train(variant: str, workdir: Path, dense: Path, cache_dir: str) -> dict:
    """Trains (or resumes, or reads) one run of the study; returns its summary."""
    from jaxdl import api, runs

    if runs.RunDir(workdir).is_complete():
        return runs.RunDir(workdir).read_summary()
    config = get_config(variant)
    if "init_from" in config:
        config.init_from = str(dense)
    start = time.perf_counter()
    summary = api.train(config, workdir=workdir, compilation_cache_dir=cache_dir)
    print(f"{variant}: test accuracy {summary['final']['test']['accuracy']:.4f} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return summary


def _nonzero(workdir: Path) -> tuple[int, int]:
    """(non-zero, all) parameters of a run's last weights."""
    import jax
    import numpy as np

    from jaxdl import runs
    weights, _ = runs.read_weights(workdir)
    leaves = [np.asarray(x) for x in jax.tree.leaves(weights["params"])]
    return sum(int(np.count_nonzero(x)) for x in leaves), sum(x.size for x in leaves)


def study(root: Path, cache_dir: str = "") -> str:
    """Every run of the study under `root` (each skipped when complete, resumed when
    started); after each, `root/results.json`, `results.md` (the table) and `results.png`
    of the runs done so far."""
    start = time.perf_counter()
    rows = {}
    for variant in VARIANTS:
        summary = _train(variant, root / variant, root / "dense", cache_dir)
        rows[variant] = _row(variant, summary, root / variant)
        text = _report(rows, root, time.perf_counter() - start)  # after every run
    return text


def _row(variant: str, summary: dict, workdir: Path) -> dict:
    nonzero, total = _nonzero(workdir)
    return {"target_sparsity": _sparsity(variant),
            "prunable_sparsity": summary.get("sparsity", {}).get("prunable", 0.0),
            "nonzero_params": nonzero, "params": total,
            "validation_accuracy": summary["final"]["validation"]["accuracy"],
            "test_accuracy": summary["final"]["test"]["accuracy"],
            "train_seconds": summary["train_seconds"]}


def _report(rows: dict, root: Path, seconds: float) -> str:
    """results.json, results.md and results.png of the runs done so far."""
    from jaxdl import plots

    lines = ["| run | target sparsity | sparsity reached | non-zero params | validation acc "
             "| test acc | train loop s |", "|---|---|---|---|---|---|---|"]
    for variant, r in rows.items():
        lines.append(f"| {variant} | {r['target_sparsity']:.2f} | {r['prunable_sparsity']:.4f} "
                     f"| {r['nonzero_params']:,} / {r['params']:,} "
                     f"| {r['validation_accuracy']:.4f} | {r['test_accuracy']:.4f} "
                     f"| {r['train_seconds']:.0f} |")
    text = "\n".join(lines)
    (root / "results.json").write_text(json.dumps(
        {"runs": rows, "study_wall_seconds_this_call": seconds}, indent=2) + "\n")
    (root / "results.md").write_text(text + "\n")
    x = [100 * s for s in sorted(SPARSITIES)]
    series = {}
    for suffix, label in (("", "prune 40 + tune 40 steps"),
                          ("_long", "prune 120 + tune 120 steps")):
        arms = [f"sparsity_{round(s)}{suffix}" for s in x]
        if all(arm in rows for arm in arms):  # a curve once all its arms are done
            series[f"test, {label}"] = [rows[arm]["test_accuracy"] for arm in arms]
            series[f"validation, {label}"] = [rows[arm]["validation_accuracy"] for arm in arms]
    if series:
        plots.series_png(x, series, root / "results.png",
                         xlabel="sparsity of the pruned layers (%)", ylabel="accuracy",
                         title="Fashion-MNIST, half-width ResNet-20, magnitude pruning")
    return text


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the whole pruning study")
    parser.add_argument("--study", action="store_true", required=True)
    parser.add_argument("--workdir", required=True, help="folder of every run and the results")
    parser.add_argument("--compilation_cache_dir", default="",
                        help="persistent XLA compilation cache ('' = off)")
    args = parser.parse_args(argv)
    print(study(Path(args.workdir), args.compilation_cache_dir))


if __name__ == "__main__":
    if "--study" in sys.argv[1:]:
        main(sys.argv[1:])
    else:
        from jaxdl import app

        app.run(get_config)
