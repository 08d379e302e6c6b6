"""Weights from PyTorch (`python -m jaxdl.weights import`, jaxdl/weights/).

The proof (slow tier): for each family, torchvision's own model with random weights and
randomised BatchNorm statistics, saved with torch.save, imported, read back the way
`init_from` reads it, gives the same eval-mode logits as torchvision (float32, rtol/atol
1e-4) and the same top-1. Bad input (fast tier): one line naming the first mismatching key
and its shapes, exit status 2, nothing written. torchvision is imported through
tests/torchvision_models.py (why: see there).
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxdl import models, runs
from jaxdl.schema import ConfigError
from jaxdl.weights import __main__ as cli
from jaxdl.weights import import_torchvision
from jaxdl.weights import torchvision as tv_weights
from torchvision_models import classification_models

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (the `torch` "
                                 "extra; `make install-extras`)")
needs_torchvision = pytest.mark.skipif(
    not HAS_TORCH or importlib.util.find_spec("torchvision") is None,
    reason="torch or torchvision is not installed (`make install-extras`)")
needs_safetensors = pytest.mark.skipif(
    importlib.util.find_spec("safetensors") is None,
    reason="safetensors is not installed (the `torch` extra)")


def _state_dict_like(name: str, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under the keys and shapes torchvision's `name` has (with its
    num_batches_tracked), from the importer's own table: for the bad-input tests, which need
    no torchvision."""
    config = {**tv_weights.model_config(name, {}), "num_classes": num_classes}
    rng = np.random.default_rng(seed)
    out = {}
    for key, tensor in tv_weights.expected_tensors(config).items():
        out[key] = rng.random(tensor.torch_shape, dtype=np.float32)
        if key.endswith(".running_var"):
            out[key.removesuffix("running_var") + "num_batches_tracked"] = np.array(7)
    return out


def _save(tensors: dict[str, np.ndarray], path):
    import torch
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, path)
    return path


@pytest.fixture(scope="module")
def resnet18_tensors():
    """ResNet-18 at 10 classes, the smallest supported network: copy before changing it."""
    return _state_dict_like("resnet18", 10)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory, resnet18_tensors):
    return _save(resnet18_tensors, tmp_path_factory.mktemp("sd") / "r18.pth")


def _cli(args, capsys):
    code = cli.main(["import", "--from", "torchvision", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _bad(tmp_path, capsys, model, state_dict, match):
    out = tmp_path / "imported"
    code, stdout, stderr = _cli(["--model", model, "--state_dict", str(state_dict),
                                 "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert match in stderr, stderr
    assert not out.exists(), "nothing may be written on bad input"


@needs_torch
def test_another_size_names_the_first_mismatching_key_and_shapes(tmp_path, capsys,
                                                                 resnet18_file):
    # ResNet-18's first block is 3x3 convs where ResNet-50's bottleneck starts with a 1x1.
    _bad(tmp_path, capsys, "resnet50", resnet18_file,
         "layer1.0.conv1.weight is [64, 64, 3, 3], torchvision's resnet50 has [64, 64, 1, 1]")


@needs_torch
def test_another_architecture_names_its_first_tensor(tmp_path, capsys, resnet18_file):
    _bad(tmp_path, capsys, "vgg11", resnet18_file,
         "unexpected tensor conv1.weight [64, 3, 7, 7]: torchvision's vgg11 has no such entry "
         "(its first is features.0.weight [64, 3, 3, 3])")


@needs_torch
def test_a_missing_tensor_is_named(tmp_path, capsys, resnet18_tensors):
    tensors = dict(resnet18_tensors)
    del tensors["layer4.1.bn2.running_var"]
    _bad(tmp_path, capsys, "resnet18", _save(tensors, tmp_path / "sd.pt"),
         "missing tensor layer4.1.bn2.running_var [512] of torchvision's resnet18")


@needs_torch
def test_an_extra_tensor_is_named(tmp_path, capsys, resnet18_tensors):
    tensors = dict(resnet18_tensors)
    tensors["fc2.weight"] = np.zeros((10, 10), np.float32)
    _bad(tmp_path, capsys, "resnet18", _save(tensors, tmp_path / "sd.pt"),
         "unexpected tensor fc2.weight [10, 10]")


@needs_torch
def test_a_truncated_file_is_one_line(tmp_path, capsys, resnet18_file):
    data = resnet18_file.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[:len(data) // 2])
    _bad(tmp_path, capsys, "resnet18", truncated, "cannot read it as a torch.save file")


def test_an_unsupported_model_and_a_used_out_dir_are_refused(tmp_path, resnet18_tensors):
    with pytest.raises(ConfigError, match="'resnet20': no torchvision twin in jaxdl; "
                                          "supported: alexnet, densenet121"):
        import_torchvision("resnet20", {}, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        import_torchvision("resnet18", resnet18_tensors, used)
    assert [p.name for p in used.iterdir()] == ["notes.txt"]


def test_the_checkpoint_holds_the_converted_tensors_where_init_from_reads_them(
        tmp_path, resnet18_tensors):
    tensors = resnet18_tensors
    config = import_torchvision("resnet18", tensors, tmp_path / "out")
    assert config == {"name": "resnet18", "num_classes": 10, **tv_weights.FAMILY_FIELDS["resnet"]}
    weights, step = runs.read_weights(tmp_path / "out")  # what WarmStart (init_from) calls
    params, stats = weights["params"], weights["model_state"]["batch_stats"]
    assert step == 0
    np.testing.assert_array_equal(params["stem_conv"]["kernel"],
                                  tensors["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["head"]["kernel"], tensors["fc.weight"].T)
    np.testing.assert_array_equal(params["stage2_block0"]["downsample_bn"]["scale"],
                                  tensors["layer2.0.downsample.1.weight"])
    np.testing.assert_array_equal(stats["stage4_block1"]["bn2"]["var"],
                                  tensors["layer4.1.bn2.running_var"])
    saved = json.loads((tmp_path / "out" / runs.CONFIG_FILENAME).read_text())
    assert runs.read_config(tmp_path / "out", role="test")["model"] == config
    assert saved["imported"] == {"from": "torchvision", "model": "resnet18",
                                 "state_dict": "state_dict"}


@needs_safetensors
def test_a_safetensors_file_imports_without_torch(tmp_path, resnet18_tensors):
    from safetensors.numpy import save_file
    save_file(resnet18_tensors, str(tmp_path / "resnet18.safetensors"))
    import_torchvision("resnet18", tmp_path / "resnet18.safetensors", tmp_path / "out")
    params = runs.read_weights(tmp_path / "out")[0]["params"]
    np.testing.assert_array_equal(params["stage3_block1"]["conv2"]["kernel"],
                                  resnet18_tensors["layer3.1.conv2.weight"].transpose(2, 3, 1, 0))


# --- the proof: torchvision's logits -----------------------------------------------------------

# (torchvision builder, image side): small images each family accepts, with a final feature
# map larger than 1x1 before VGG's and AlexNet's adaptive pool (2x2 and 3x3), so the
# (c, h, w) -> (h, w, c) permutation of their first classifier layer is exercised.
PROOF = [("resnet18", 64), ("resnet50", 64), ("vgg11_bn", 64), ("densenet121", 32),
         ("alexnet", 127), ("inception_v3", 75)]
BATCH = 4
RESIDUAL_DAMPING = 0.2
# Inception v3 at random weights is ill-conditioned in float32 whatever its BatchNorm
# statistics: torch's own float32 logits differ from its float64 ones by 1e-3 at logits up
# to 13 (dev VM). Its check is therefore relative to the largest logit, 1e-4 of it.
SCALED_TOLERANCE = ("inception_v3",)


def _random_torchvision(name: str, seed: int):
    """torchvision's `name` (1000 classes) in eval mode with random weights and BatchNorm
    statistics, and random images for it.

    Scales are kept O(1) so that a 1e-4 tolerance is tight without being float32 noise:
    linear layers are redrawn at std sqrt(1 / fan_in) (torchvision's VGG and AlexNet heads
    give logits near 0.01), and each BatchNorm's running statistics are those of random
    images (one train-mode pass with momentum=None, a plain average) randomly perturbed, so
    activations stay normalised through 50+ layers (arbitrary statistics give logits of
    1e2 to 1e9, where float32 rounding alone exceeds 1e-4). The last BatchNorm of each
    residual branch is scaled by 0.2, as training leaves it small (torchvision's
    zero_init_residual starts it at 0): a random ResNet-50 whose residual stream grows
    freely is so ill-conditioned that torch's own float32 logits differ from float64 by
    2e-4; damped, by 6e-6 (measured on the 2-core dev VM)."""
    import torch
    torch.manual_seed(seed)
    extra = {"aux_logits": False, "init_weights": True} if name == "inception_v3" else {}
    net = getattr(classification_models(), name)(weights=None, **extra)
    generator = torch.Generator().manual_seed(seed)
    side = dict(PROOF)[name]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                                    / module.in_features ** 0.5)
        for norm in norms:
            norm.weight.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
            norm.bias.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
            norm.momentum = None
            norm.reset_running_stats()
        for block in net.modules():
            last = getattr(block, "bn3", None) or getattr(block, "bn2", None) \
                if type(block).__name__ in ("BasicBlock", "Bottleneck") else None
            if last is not None:
                last.weight.mul_(RESIDUAL_DAMPING)
        net.train()(torch.rand(2 * BATCH, 3, side, side, generator=generator))
        for norm in norms:
            n = norm.num_features
            norm.running_mean.add_(torch.randn(n, generator=generator) * 0.05
                                   * norm.running_var.sqrt())
            norm.running_var.mul_(torch.rand(n, generator=generator) * 0.2 + 0.9)
            norm.momentum = 0.1
    images = torch.rand(BATCH, 3, side, side, generator=generator)
    return net.eval(), images


# XLA:CPU's LLVM optimisations take most of the compile time of these deep networks (20 s
# of DenseNet-121's 26 s on the 2-core dev VM) and do not change what is computed.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.mark.slow
@needs_torchvision
@pytest.mark.parametrize("name", [name for name, _ in PROOF])
def test_imported_weights_give_torchvisions_logits(tmp_path, name):
    import torch
    net, images = _random_torchvision(name, seed=0)
    with torch.no_grad():
        expected = net(images).numpy()
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    config = import_torchvision(name, path, tmp_path / "imported")
    weights, _ = runs.read_weights(tmp_path / "imported")  # as init_from reads it
    model = models.build_model(name, **{k: v for k, v in config.items() if k != "name"})
    variables = {"params": weights["params"], **weights["model_state"]}
    nhwc = images.numpy().transpose(0, 2, 3, 1)
    apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False)).lower(
        variables, nhwc).compile(FAST_COMPILE)
    logits = np.asarray(apply(variables, nhwc))
    scale = np.abs(expected).max() if name in SCALED_TOLERANCE else 1.0
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_array_equal(logits.argmax(-1), expected.argmax(-1))
    # The importer lists torchvision's tensors in torchvision's order (its messages name the
    # first mismatch in the file's order).
    assert list(tv_weights.expected_tensors(config)) == [
        k for k in net.state_dict() if not k.endswith(".num_batches_tracked")]
    layer = {"vgg11_bn": "Dense_0", "alexnet": "fc1"}.get(name)
    if layer is not None:
        # The flatten permutation matters at these sizes: the plain transpose of torch's
        # matrix (no permutation) gives other logits, so this test would catch its loss.
        plain = net.state_dict()[f"classifier.{0 if layer == 'Dense_0' else 1}.weight"]
        params = {**variables["params"], layer: {**variables["params"][layer],
                                                 "kernel": plain.numpy().T}}
        wrong = np.asarray(apply({**variables, "params": params}, nhwc))
        assert np.abs(wrong - expected).max() > 1e-2


@pytest.mark.slow
@needs_torchvision
def test_an_imported_checkpoint_warm_starts_an_ordinary_run(tmp_path):
    import torch

    from conftest import make_config
    from jaxdl.training import loop
    net = classification_models().resnet18(weights=None, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    code = cli.main(["import", "--from", "torchvision", "--model", "resnet18", "--state_dict",
                     str(tmp_path / "resnet18.pth"), "--out", str(tmp_path / "imported")])
    assert code == 0
    model = runs.read_config(tmp_path / "imported", role="test")["model"]
    config = make_config(**{
        "model": model, "init_from": str(tmp_path / "imported"),
        "data.name": "synthetic", "data.validation_fraction": 0.0,
        "data.test_fraction": 0.0, "data.batch_size": 8, "data.eval_batch_size": 8,
        "data.augmentation": "none",
        "data.options": dict(kind="images", shape=(32, 32, 3), num_classes=10, examples=8,
                             validation_examples=8, seed=0),
        "train.duration": "1 steps", "train.eval_every": "1 steps",
        "train.log_every": "1 steps", "logging.progress": False, "logging.plot": False,
        "logging.tensorboard": False})
    stream = io.StringIO()
    loop.train_and_evaluate(config, tmp_path / "run", stream=stream)
    arrays = len(jax.tree.leaves(runs.read_weights(tmp_path / "imported")[0]))
    log = stream.getvalue()
    assert f"(step 0): loaded {arrays} arrays" in log, log
    assert "missing" not in log and "mismatched" not in log and "unexpected" not in log


@pytest.mark.slow
def test_the_command_line_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jaxdl.weights", "import", "--from", "torchvision", "--model",
         "resnet18", "--state_dict", str(tmp_path / "absent.pth"), "--out",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --state_dict {str(tmp_path / 'absent.pth')!r}: " \
                                    "no such file"
    assert not (tmp_path / "out").exists()


def test_old_densenet_key_names_are_renamed_as_torchvision_does():
    # torchvision's published DenseNet files say `norm.1` where its modules say `norm1`.
    one = np.ones(3, np.float32)
    old = {"features.denseblock1.denselayer1.norm.1.weight": one,
           "features.denseblock4.denselayer16.conv.2.weight": one,
           "features.transition1.norm.weight": one, "features.norm0.running_var": one}
    assert list(tv_weights.renamed("densenet121", old)) == [
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock4.denselayer16.conv2.weight",
        "features.transition1.norm.weight", "features.norm0.running_var"]
    assert list(tv_weights.renamed("resnet18", {"layer1.0.norm.1.weight": one})) == [
        "layer1.0.norm.1.weight"]


def test_a_mapping_with_something_else_than_tensors_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="state_dict: entry 'fc.weight' is a str, not a tensor"):
        import_torchvision("resnet18", {"fc.weight": "oops"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
