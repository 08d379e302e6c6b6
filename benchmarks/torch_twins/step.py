"""One training step of a torch twin (`TorchStep`, `GanStep`) and `build_step`, which
builds it from a validated jaxdl config."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.torch_twins.models import (DCGAN, MEMORY_FORMAT, UnsupportedConfig,
                                           build_lm, build_model)
from benchmarks.torch_twins.optimizers import make_optimizer, make_schedule


def set_threads() -> int:
    """Intra-op threads = os.cpu_count(), as asked of every comparison; returns it."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads



def to_torch_batch(batch: Mapping[str, np.ndarray], memory_format: str = "contiguous",
                   device: str = "cpu"):
    """jaxdl's host batch as torch tensors (x, y): NHWC float32 images as NCHW in
    `memory_format`, token ids (or other integer inputs) as int64; targets int64."""
    inputs = np.asarray(batch["inputs"])
    if np.issubdtype(inputs.dtype, np.integer):
        x = torch.from_numpy(inputs.astype(np.int64))
    else:
        x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32))
        if x.ndim == 4:
            x = x.permute(0, 3, 1, 2).contiguous(
                memory_format=torch.channels_last if memory_format == "channels_last"
                else torch.contiguous_format)
    y = torch.from_numpy(np.asarray(batch["targets"], np.int64))
    return x.to(device), y.to(device)


def classification_loss(label_smoothing: float):
    def loss(logits, y):
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    return loss


def language_model_loss(logits, y):
    """Mean next-token cross-entropy over every position (jaxdl: over the window, then the
    batch: the same mean for equal windows)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class TorchStep:
    """One training step of a torch model, eager or torch.compile'd (the model's forward
    and its backward are compiled; the optimizer step runs eagerly)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, lr_factor, *,
                 loss_fn=None, label_smoothing: float = 0.0, grad_clip_norm: float = 0.0,
                 memory_format: str = "contiguous", compile: bool = False,
                 device: str = "cpu", precision: str = "fp32"):
        if memory_format not in ("contiguous", "channels_last"):
            raise ValueError(f"memory_format {memory_format!r}")
        self.memory_format, self.device, self.precision = memory_format, device, precision
        if memory_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(device).train()
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        self.loss_fn = loss_fn or classification_loss(label_smoothing)
        self.grad_clip_norm = grad_clip_norm
        self.compiled = compile
        self.forward = torch.compile(self.model) if compile else self.model

    def autocast(self):
        """bf16: matmuls and convolutions in bfloat16 on float32 parameters (jaxdl's
        'bf16': model dtype bfloat16, parameters float32); fp32: nothing."""
        return torch.autocast(self.device.split(":")[0], torch.bfloat16,
                              enabled=self.precision == "bf16")

    def loss(self, x, y, forward=None):
        with self.autocast():
            out = (forward or self.forward)(x)
        return self.loss_fn(out.float(), y)

    def __call__(self, x, y) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        if self.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def batch(self, host_batch: Mapping[str, np.ndarray]):
        return to_torch_batch(host_batch, self.memory_format, self.device)

    def initial_loss(self, batch, latents=None) -> float:
        """The loss on `batch` in training mode (batch statistics) from the current
        weights, on a copy so the running statistics stay as they are."""
        del latents
        model = copy.deepcopy(self.model).train()
        with torch.no_grad():
            return float(self.loss(*batch, forward=model))


@contextlib.contextmanager
def frozen_statistics(module: nn.Module):
    """BatchNorm in training mode (batch statistics) that leaves its running averages as
    they are (momentum 0), for the passes in which jaxdl's GAN task drops them."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class GanStep:
    """jaxdl's GAN task step (jaxdl/tasks/gan.py) in torch: `n_critic` discriminator
    updates, each on the real batch and as many samples of G from fresh latents (G in
    training mode, its output detached), then one generator update through D; one optimizer
    per net (the config's, both with the same schedule). As in jaxdl, G's running
    statistics are left alone in D's update and D's in G's update (`frozen_statistics`),
    and D's parameters get no gradient in G's update. Returns d_loss + g_loss, as jaxdl's
    `loss` metric. The latents differ (torch's generator, not jaxdl's PRNG)."""

    def __init__(self, model: DCGAN, optimizers: dict, lr_factor, *, gan_loss: str,
                 n_critic: int, grad_clip_norm: float = 0.0, compile: bool = False,
                 device: str = "cpu"):
        if gan_loss not in ("non_saturating", "hinge"):
            raise UnsupportedConfig(f"gan_loss {gan_loss!r}")
        self.model = model.to(device).train()
        self.memory_format, self.device = "contiguous", device
        self.optimizers = optimizers
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor)
                           for o in optimizers.values()]
        self.gan_loss, self.n_critic = gan_loss, n_critic
        self.grad_clip_norm, self.compiled = grad_clip_norm, compile
        self.generate = torch.compile(model.generator) if compile else model.generator
        self.discriminate = torch.compile(model.discriminator) if compile else \
            model.discriminator

    def d_losses(self, real_logits, fake_logits):
        if self.gan_loss == "hinge":
            return F.relu(1.0 - real_logits) + F.relu(1.0 + fake_logits)
        return F.softplus(-real_logits) + F.softplus(fake_logits)

    def g_losses(self, fake_logits):
        return -fake_logits if self.gan_loss == "hinge" else F.softplus(-fake_logits)

    def to_model_range(self, images):
        return images * 2.0 - 1.0 if self.model.output_activation == "tanh" else images

    def latents(self, count: int):
        return torch.randn(count, self.model.latent_dim, device=self.device)

    def _update(self, net: str, loss) -> None:
        loss.backward()
        module = getattr(self.model, net)
        if self.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip_norm)
        self.optimizers[net].step()

    def __call__(self, x) -> torch.Tensor:
        real = self.to_model_range(x)
        generator, discriminator = self.model.generator, self.model.discriminator
        for _ in range(self.n_critic):
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
            with torch.no_grad(), frozen_statistics(generator):
                fake = self.generate(self.latents(real.shape[0]))
            d_loss = self.d_losses(self.discriminate(real), self.discriminate(fake)).mean()
            self._update("discriminator", d_loss)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        discriminator.requires_grad_(False)
        try:
            with frozen_statistics(discriminator):
                g_loss = self.g_losses(self.discriminate(
                    self.generate(self.latents(real.shape[0])))).mean()
            self._update("generator", g_loss)
        finally:
            discriminator.requires_grad_(True)
        for scheduler in self.schedulers:
            scheduler.step()
        return (d_loss + g_loss).detach()

    def batch(self, host_batch: Mapping[str, np.ndarray]):
        return (to_torch_batch(host_batch, self.memory_format, self.device)[0],)

    def initial_loss(self, batch, latents) -> float:
        """Mean D loss + G loss of the real `batch` and G(`latents`), every net in training
        mode (batch statistics) from the current weights, on a copy: what
        `gan_probe_loss` computes with jaxdl's task from the same latents."""
        model = copy.deepcopy(self.model).train()
        real = self.to_model_range(batch[0])
        with torch.no_grad():
            fake = model.generator(torch.as_tensor(np.asarray(latents), device=self.device))
            fake_logits = model.discriminator(fake)
            losses = self.d_losses(model.discriminator(real), fake_logits) + \
                self.g_losses(fake_logits)
        return float(losses.mean())


def build_step(config, total_updates: int, input_shape: tuple[int, ...], *,
               memory_format: str | None = None, compile: bool = False, to_updates=None,
               seed: int | None = None, device: str = "cpu"):
    """The torch twin of the train step jaxdl builds from `config` (a validated jaxdl
    config): model, loss, optimizer and schedule from its sections. `input_shape` is one
    example's (H, W, C) or (T,)."""
    task = config["task"]
    if config["precision"] != "fp32" and task["name"] != "classification":
        raise UnsupportedConfig(f"precision {config['precision']!r} is mirrored for "
                                "classification only")
    augmentation = (config.get("data") or {}).get("augmentation", "none")
    if augmentation not in ("", "none"):
        raise UnsupportedConfig(f"data augmentation {augmentation!r} is not mirrored; "
                                "set config.data.augmentation='none'")
    torch.manual_seed(config["seed"] if seed is None else seed)
    schedule = make_schedule(config["schedule"], total_updates, to_updates)
    clip = config["optimizer"]["grad_clip_norm"]
    if task["name"] == "classification":
        if task["loss"] != "softmax_cross_entropy":
            raise UnsupportedConfig("only classification with softmax_cross_entropy is "
                                    "mirrored")
        model, family = build_model(config["model"], tuple(input_shape))
        return TorchStep(model, make_optimizer(model, config["optimizer"]), schedule,
                         label_smoothing=task["label_smoothing"], grad_clip_norm=clip,
                         memory_format=memory_format or MEMORY_FORMAT[family],
                         compile=compile, device=device, precision=config["precision"])
    if task["name"] == "language_model":
        model = build_lm(config["model"])
        return TorchStep(model, make_optimizer(model, config["optimizer"]), schedule,
                         loss_fn=language_model_loss, grad_clip_norm=clip,
                         compile=compile, device=device)
    if task["name"] == "gan":
        if config["model"]["name"] != "dcgan":
            raise UnsupportedConfig(f"gan with model {config['model']['name']!r}: only dcgan "
                                    "is mirrored")
        model = DCGAN(config["model"], tuple(input_shape))
        optimizers = {net: make_optimizer(getattr(model, net), config["optimizer"])
                      for net in ("discriminator", "generator")}
        return GanStep(model, optimizers, schedule, gan_loss=task["gan_loss"],
                       n_critic=task["n_critic"], grad_clip_norm=clip, compile=compile,
                       device=device)
    raise UnsupportedConfig(f"task {task['name']!r} is not mirrored; mirrored: "
                            "classification, language_model, gan")


# --- standalone timing --------------------------------------------------------------------
