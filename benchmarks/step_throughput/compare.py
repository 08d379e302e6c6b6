"""`--compare torch`: jaxdl's compiled step and its PyTorch twin (benchmarks/torch_twins,
the `bench` extra) timed side by side in one process.

The same validated config builds both sides (model, loss, optimizer, schedule, precision;
for the `--model` names in `families.COMPARABLE` and `--experiment mnist_cnn`). jaxdl's
initial weights are copied into the twin, and the two must agree: equal parameter counts,
and the same first loss (for a GAN, the D + G loss of given latents, `gan_probe_loss`;
within 1e-3, or 2e-2 under bf16, where torch.autocast and XLA round different ops). The
twin is fed the same host batches, pre-converted to tensors (NCHW images), on the GPU when
jaxdl runs on one. With --model, on-device augmentation is turned off for both sides (the
twin does not mirror it). After each side's warmup (and torch.compile's compilation,
unless `--no_torch_compile`), the timed steps run in `--repeats` alternating windows
(jaxdl, torch eager, torch.compile, then the reverse order), so drift of a shared machine
hits every side. The record gives examples/s for each (global batch over the median
window) and the ratio jaxdl / torch: of the medians, and the median and range of the
per-window ratios (adjacent windows). torch uses os.cpu_count() threads.
"""

from __future__ import annotations

import argparse
import math
import os
import time

from benchmarks.step_throughput import measure, report


class TorchSteps:
    """Runs a `torch_twins.TorchStep` over the same host batches, pre-converted to
    torch tensors. CPU eager work is synchronous; `run` still ends by reading the loss."""

    def __init__(self, name: str, step, host_batches):
        self.name, self.step = name, step
        self.batches = [step.batch(b) for b in host_batches]
        self.index, self.last = 0, None

    def run(self, count: int) -> None:
        for _ in range(count):
            self.last = self.step(*self.batches[self.index % len(self.batches)])
            self.index += 1
        if self.last is not None:
            float(self.last)

    def loss(self) -> float:
        return float(self.last)


def gan_probe_loss(task, params, model_state, host_batch, latents) -> float:
    """Mean D loss + G loss of a real batch and G(`latents`) from the given weights, every
    net in training mode, computed with the GAN task's own functions (`task` built without
    the pmap axis, so it runs outside the step). The torch side computes the same
    (`GanStep.initial_loss`): a GAN's first-step loss draws latents from jaxdl's PRNG, so
    the check that both sides hold the same model uses given latents instead."""
    import jax
    import jax.numpy as jnp

    def probe(params, model_state, images, latents):
        real = task.to_model_range(images)
        fake, state = task.run_net("generator", params, model_state, latents, train=True)
        real_logits, _ = task.run_net("discriminator", params, state, real, train=True)
        fake_logits, _ = task.run_net("discriminator", params, state, fake, train=True)
        losses = task.discriminator_losses(real_logits, fake_logits) + \
            task.generator_losses(fake_logits)
        return jnp.mean(losses)

    return float(jax.jit(probe)(params, dict(model_state), host_batch["inputs"], latents))


def torch_device(trainer) -> str:
    """Torch runs where jaxdl runs: on a GPU when jaxdl's devices are GPUs (and torch sees
    one), else on the CPU."""
    import torch

    on_gpu = trainer.backend.devices[0].platform == "gpu"
    return "cuda" if on_gpu and torch.cuda.is_available() else "cpu"


def compare_torch(trainer, config, args: argparse.Namespace, max_in_flight: int) -> dict:
    """jaxdl's compiled step vs its PyTorch twin (eager, and torch.compile unless
    `--no_torch_compile` or it fails), in alternating windows in this one process."""
    import jax
    import numpy as np

    from jaxdl.training import environment

    try:
        from benchmarks import torch_twins as twins
    except ImportError as e:
        report.fail(ImportError(f"--compare torch needs PyTorch: pip install -e '.[bench]' ({e})"))
    import torch

    threads = twins.set_threads()
    load_start = os.getloadavg()
    jaxdl_side = measure.JaxdlSteps(trainer, batches=args.batches, max_in_flight=max_in_flight)
    host = jaxdl_side.host_batches
    initial = trainer.backend.get_state(trainer.state)  # before the first step donates it
    batch_stats = dict(initial.model_state).get("batch_stats")
    plan = trainer.plan
    variants = [("torch eager", False)] + ([] if args.no_torch_compile else
                                           [("torch.compile", True)])
    torch_sides, notes = [], []
    device = torch_device(trainer)
    for name, compiled in variants:
        try:
            step = twins.build_step(config, plan.total_updates, host[0]["inputs"].shape[1:],
                                  memory_format=args.torch_memory_format, compile=compiled,
                                  to_updates=plan.to_updates(config), device=device)
        except twins.UnsupportedConfig as e:
            report.fail(e)
        torch_params = sum(p.numel() for p in step.model.parameters())
        jaxdl_params = sum(x.size for x in jax.tree.leaves(initial.params))
        if torch_params != jaxdl_params:
            report.fail(RuntimeError(f"the torch {config.model.name} has {torch_params} "
                                     f"parameters, jaxdl's {jaxdl_params}: not the same model"))
        twins.load_flax_params(step.model, initial.params, batch_stats)  # the same start
        torch_sides.append(TorchSteps(name, step, host))

    # Both sides' loss from the same weights and batch: the first step's (before its
    # update) or, for a GAN, the probe from fixed latents (`gan_probe_loss`).
    latents = None
    if config.task.name == "gan":
        latents = np.random.default_rng(config.seed).standard_normal(
            (config.data.batch_size, config.model.latent_dim)).astype(np.float32)
        from jaxdl import tasks

        probe_task = tasks.build_task(config, trainer.dataset, axis_name=None)
        first_loss = {"jaxdl": gan_probe_loss(probe_task, initial.params, initial.model_state,
                                              host[0], latents)}
    # Warm up each side; the first torch.compile call compiles (timed, reported).
    jaxdl_side.run(args.warmup)
    if latents is None:
        first_loss = {"jaxdl": jaxdl_side.loss(jaxdl_side.first_metrics)}
    first_step_seconds = {"jaxdl": None}
    for side in list(torch_sides):
        first_loss[side.name] = side.step.initial_loss(side.batches[0], latents)
        start = time.perf_counter()
        try:
            side.run(1)
        except Exception as e:  # noqa: BLE001 - inductor needs a compiler, may fail
            text = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            notes.append(f"{side.name} failed on its first step and is left out: {text}")
            torch_sides.remove(side)
            continue
        first_step_seconds[side.name] = time.perf_counter() - start
        side.run(max(0, args.warmup - 1))
    # bf16: both sides round differently (autocast's op list is not XLA's)
    tolerance = 2e-2 if config.precision == "bf16" else 1e-3
    for name, loss in first_loss.items():
        if not math.isclose(loss, first_loss["jaxdl"], rel_tol=tolerance, abs_tol=1e-4):
            raise RuntimeError(f"the first loss of {name} ({loss:.6f}) differs from jaxdl's "
                               f"({first_loss['jaxdl']:.6f}) from the same weights and batch: "
                               "the torch reference is not the same model")

    sides = [jaxdl_side, *torch_sides]
    names = ["jaxdl", *(side.name for side in torch_sides)]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    sizes = measure.split(args.steps, args.repeats)
    for window, size in enumerate(sizes):
        order = list(zip(names, sides))
        for name, side in (order if window % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            side.run(size)
            seconds[name].append((time.perf_counter() - start) / size)
    last_loss = {"jaxdl": jaxdl_side.loss(), **{s.name: s.loss() for s in torch_sides}}
    jaxdl_side.finish()
    for name, loss in last_loss.items():
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite train loss of {name}: {loss}")

    batch_size = config.data.batch_size
    backend = trainer.backend
    results = {}
    for name in names:
        stats = measure.window_stats(seconds[name])
        eps = batch_size / (stats["ms_per_step_median"] / 1e3)
        results[name] = {**stats, "examples_per_second": eps,
                         "window_examples_per_second": [batch_size / t for t in seconds[name]],
                         "first_loss": first_loss[name], "last_train_loss": last_loss[name],
                         "first_step_seconds": first_step_seconds[name]}
    for name in names[1:]:
        # jaxdl examples/s over this side's, window by adjacent window
        per_window = [side_s / jaxdl_s for side_s, jaxdl_s in zip(seconds[name],
                                                                   seconds["jaxdl"])]
        results[name]["jaxdl_ratio"] = (results["jaxdl"]["examples_per_second"]
                                        / results[name]["examples_per_second"])
        results[name]["jaxdl_ratio_per_window"] = per_window
        results[name]["jaxdl_ratio_per_window_median"] = float(np.median(per_window))
    torch_step = torch_sides[0].step if torch_sides else None
    return {
        "benchmark": "step_throughput_compare",
        "mode": (report.RANDOM_MODE if args.model else report.MODE).replace(
            "on device", "on device / as torch tensors"),
        **report.run_fields(args, trainer, sizes, max_in_flight),
        "compare": args.compare,
        "window_steps": sizes,
        "torch": {"version": torch.__version__, "threads": threads, "device": device,
                  "memory_format": torch_step.memory_format if torch_step else None},
        "precision": config.precision,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "sides": results,
        # jaxdl's side: XLA's FLOPs, MFU and memory, as a plain step_throughput row gives
        **measure.efficiency(trainer, results["jaxdl"]["ms_per_step_median"]),
        "notes": notes,
        "config_overrides": [],
        "env": environment.describe(backend.devices, backend.kind),
        "jax": jax.__version__,
    }


