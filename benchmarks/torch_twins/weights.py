"""Copying jaxdl's (Flax) parameters and BatchNorm statistics into a torch twin."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn as nn

from benchmarks.torch_twins.models import (DCGAN, CNN, CharLSTM, CifarResNet, ImageNetResNet,
                                           UnsupportedConfig)



def _conv(kernel) -> torch.Tensor:  # Flax (kh, kw, in, out) -> torch (out, in, kh, kw)
    return torch.from_numpy(np.asarray(kernel, np.float32).transpose(3, 2, 0, 1).copy())


def _dense(kernel) -> torch.Tensor:  # Flax (in, out) -> torch (out, in)
    return torch.from_numpy(np.asarray(kernel, np.float32).T.copy())


def _vec(value) -> torch.Tensor:
    return torch.from_numpy(np.asarray(value, np.float32).copy())


def _conv_transpose(kernel) -> torch.Tensor:
    """Flax ConvTranspose (kh, kw, in, out), applied unflipped to the dilated input (its
    default transpose_kernel=False) -> torch ConvTranspose2d (in, out, kh, kw), which
    flips it: the same map with the kernel flipped in space."""
    flipped = np.asarray(kernel, np.float32)[::-1, ::-1]
    return torch.from_numpy(flipped.transpose(2, 3, 0, 1).copy())


def _pairs_by_name(model: nn.Module, params: Mapping, batch_stats: Mapping) -> list:
    """(torch tensor, jaxdl value) for a model whose submodule paths are jaxdl's Flax
    module paths (`a.b` = params['a']['b'])."""

    def at(tree, dotted):
        for key in dotted.split("."):
            tree = tree.get(key, {}) if isinstance(tree, Mapping) else {}
        return tree

    pairs = []
    for name, module in model.named_modules():
        p, s = at(params, name), at(batch_stats, name)
        if isinstance(module, nn.ConvTranspose2d):
            pairs.append((module.weight, _conv_transpose(p["kernel"])))
        elif isinstance(module, nn.Conv2d):
            pairs.append((module.weight, _conv(p["kernel"])))
        elif isinstance(module, nn.Linear):
            pairs.append((module.weight, _dense(p["kernel"])))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            pairs += [(module.weight, _vec(p["scale"])), (module.bias, _vec(p["bias"]))]
            if s:
                pairs += [(module.running_mean, _vec(s["mean"])),
                          (module.running_var, _vec(s["var"]))]
            continue
        else:
            continue
        if module.bias is not None:
            pairs.append((module.bias, _vec(p["bias"])))
    return pairs


def load_flax_params(model: nn.Module, params: Mapping, batch_stats: Mapping | None = None):
    """Copies one host copy of jaxdl's parameters (and BatchNorm statistics) into `model`,
    so both frameworks start from the same numbers. Raises KeyError on a layout mismatch."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    stats = batch_stats or {}

    def bn(module: nn.BatchNorm2d, p, s):
        pairs.extend([(module.weight, _vec(p["scale"])), (module.bias, _vec(p["bias"]))])
        if s:
            pairs.extend([(module.running_mean, _vec(s["mean"])),
                          (module.running_var, _vec(s["var"]))])

    if isinstance(model, CNN):
        for i, conv in enumerate(model.convs):
            p = params[f"Conv_{i}"]
            pairs.append((conv.weight, _conv(p["kernel"])))
            if conv.bias is not None:
                pairs.append((conv.bias, _vec(p["bias"])))
            if model.norms is not None:
                bn(model.norms[i], params[f"BatchNorm_{i}"], stats.get(f"BatchNorm_{i}"))
        for i, dense in enumerate((model.dense, model.logits)):
            p = params[f"Dense_{i}"]
            pairs += [(dense.weight, _dense(p["kernel"])), (dense.bias, _vec(p["bias"]))]
    elif isinstance(model, CifarResNet):
        pairs.append((model.stem_conv.weight, _conv(params["stem_conv"]["kernel"])))
        bn(model.stem_bn, params["stem_bn"], stats.get("stem_bn"))
        n = len(model.blocks) // len(model.WIDTHS)
        for index, block in enumerate(model.blocks):
            key = f"stage{index // n + 1}_block{index % n}"
            p, s = params[key], stats.get(key, {})
            pairs += [(block.conv1.weight, _conv(p["conv1"]["kernel"])),
                      (block.conv2.weight, _conv(p["conv2"]["kernel"]))]
            bn(block.bn1, p["bn1"], s.get("bn1"))
            bn(block.bn2, p["bn2"], s.get("bn2"))
        pairs += [(model.head.weight, _dense(params["head"]["kernel"])),
                  (model.head.bias, _vec(params["head"]["bias"]))]
    elif isinstance(model, CharLSTM):
        pairs += [(model.embed.weight, _vec(params["embed"]["embedding"])),
                  (model.logits.weight, _dense(params["logits"]["kernel"])),
                  (model.logits.bias, _vec(params["logits"]["bias"]))]
        for layer in range(model.rnn.num_layers):
            p = params["rnn"][f"layer_{layer}"]
            # torch stacks the gates (i, f, g, o) along the output axis, as Flax names them
            pairs += [
                (getattr(model.rnn, f"weight_ih_l{layer}"),
                 torch.cat([_dense(p[f"i{g}"]["kernel"]) for g in "ifgo"])),
                (getattr(model.rnn, f"weight_hh_l{layer}"),
                 torch.cat([_dense(p[f"h{g}"]["kernel"]) for g in "ifgo"])),
                (getattr(model.rnn, f"bias_hh_l{layer}"),
                 torch.cat([_vec(p[f"h{g}"]["bias"]) for g in "ifgo"]))]
    elif isinstance(model, (ImageNetResNet, DCGAN)):
        pairs += _pairs_by_name(model, params, batch_stats or {})
    else:
        raise UnsupportedConfig(f"cannot load Flax parameters into {type(model).__name__}")
    with torch.no_grad():
        for target, value in pairs:
            if target.shape != value.shape:
                raise KeyError(f"shape {tuple(value.shape)} from jaxdl for a torch tensor of "
                               f"shape {tuple(target.shape)}")
            target.copy_(value)
    expected = sum(p.numel() for p in model.parameters())
    copied = sum(t.numel() for t, _ in pairs if any(t is p for p in model.parameters()))
    if copied != expected:
        raise KeyError(f"copied {copied} of the torch model's {expected} parameters")
