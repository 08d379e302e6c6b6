"""The PyTorch twins (benchmarks/torch_twins) are jaxdl's models, optimizers and steps: from
jaxdl's weights they give jaxdl's losses. They run whenever torch is installed (the `bench`
extra, or `make install-extras`, which CI runs); without torch they skip, with the reason."""

from __future__ import annotations

import functools
import importlib.util
import math

import pytest
from benchmark_families import TINY_DCGAN, TINY_LSTM, family_config, family_dataset

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="torch is not installed: an optional extra (`make install-extras`, which CI runs)")



def _jaxdl_variables(config, dataset):
    """The family's task and random variables of its shapes (traced, not compiled: cheaper
    than the initialisers, and any weights show whether the copy into torch is right)."""
    import jax
    import numpy as np

    from jaxdl import tasks

    task = tasks.build_task(config, dataset, axis_name=None)
    shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0), dataset.features[:1])
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("mean", "var"):  # BatchNorm statistics
            return np.full(leaf.shape, float(name == "var"), np.float32)
        return rng.normal(0.0, 0.3, leaf.shape).astype(np.float32)

    return task, jax.tree_util.tree_map_with_path(fill, shapes)


def _torch_twin(config, dataset, variables):
    """The torch step of `config`, after checking its parameter count against jaxdl's, with
    jaxdl's `variables` copied in."""
    import jax

    from benchmarks import torch_twins

    step = torch_twins.build_step(config, 10, dataset.features.shape[1:])
    jaxdl_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert sum(p.numel() for p in step.model.parameters()) == jaxdl_params, config.model.name
    torch_twins.load_flax_params(step.model, variables["params"],
                                     variables.get("batch_stats"))
    return step


def test_torch_char_lstm_is_jaxdls_model():
    """The torch char LSTM has jaxdl's parameter count (its b_ih are buffers) and, from
    jaxdl's weights, jaxdl's loss on a batch."""
    import jax
    import numpy as np

    config = family_config("lstm_lm", *TINY_LSTM, "--config.model.num_layers=2")
    dataset = family_dataset(config)
    task, variables = _jaxdl_variables(config, dataset)
    step = _torch_twin(config, dataset, variables)
    batch = {"inputs": dataset.features, "targets": dataset.targets}
    apply = jax.jit(functools.partial(task.apply, train=True))
    values, _ = apply(variables, batch, rng=jax.random.PRNGKey(0))
    torch_loss = step.initial_loss(step.batch(batch))
    assert torch_loss == pytest.approx(float(np.mean(values["loss"])), rel=1e-5)
    assert math.isfinite(float(step(*step.batch(batch))))


def test_torch_dcgan_is_jaxdls_model():
    """The torch DCGAN (both nets) has jaxdl's parameter count and, from jaxdl's weights
    and the same latents, jaxdl's D + G loss; one torch GAN step runs."""
    import numpy as np

    from benchmarks import step_throughput

    config = family_config("dcgan", *TINY_DCGAN)
    dataset = family_dataset(config)
    task, variables = _jaxdl_variables(config, dataset)
    step = _torch_twin(config, dataset, variables)
    batch = {"inputs": dataset.features, "targets": dataset.targets}
    latents = np.random.default_rng(0).standard_normal((2, config.model.latent_dim),
                                                       np.float32)
    expected = step_throughput.gan_probe_loss(task, variables["params"],
                                              {"batch_stats": variables["batch_stats"]},
                                              batch, latents)
    assert step.initial_loss(step.batch(batch), latents) == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(float(step(*step.batch(batch))))


def test_torch_resnet50_parameter_count():
    """The torch ResNet-50 (written here, no torchvision) has jaxdl's resnet50 parameter
    count, which tests/test_models_resnet_vgg.py pins (torchvision's)."""
    from benchmarks import torch_twins

    config = family_config("resnet50")
    model, family = torch_twins.build_model(config.model, (224, 224, 3))
    assert family == "imagenet_resnet"
    assert sum(p.numel() for p in model.parameters()) == 25_557_032


@pytest.mark.parametrize("family", ["mnist_cnn", "mnist_speedrun", "resnet20"])
def test_classification_twin_trains_as_jaxdl(family):
    """Model, loss, optimizer and schedule together: from jaxdl's initial weights, the twin's
    step gives jaxdl's compiled train step's loss at each of 3 steps on the same batches (the
    losses of steps 2 and 3 follow the optimizer's updates; ResNet-20's BatchNorm runs on
    batch statistics). A twin with another optimizer, learning rate or weight decay drifts
    apart by step 2. mnist_speedrun: the CNN with BatchNorm, Nesterov and one-cycle."""
    from benchmarks import torch_twins
    from benchmarks.step_throughput import measure
    from jaxdl.training import loop

    # A learning rate of 0.01 keeps 3 steps of batch 8 well-conditioned: at the families'
    # 0.1 float32 rounding grows to 0.3% by step 3 on ResNet-20.
    config = family_config(family, "--batch_size", "8", "--config.data.augmentation=none",
                            "--config.optimizer.learning_rate=0.01", batches=2)
    trainer = loop.build(config)
    initial = trainer.backend.get_state(trainer.state)  # before the first step donates it
    jaxdl_side = measure.JaxdlSteps(trainer, batches=2, max_in_flight=0)
    step = torch_twins.build_step(config, trainer.plan.total_updates,
                                  tuple(config.data.options.shape),
                                  to_updates=trainer.plan.to_updates(config))
    torch_twins.load_flax_params(step.model, initial.params,
                                 dict(initial.model_state).get("batch_stats"))
    batches = [step.batch(b) for b in jaxdl_side.host_batches]
    losses = []
    for index in range(3):
        jaxdl_side.run(1)
        losses.append((float(step(*batches[index % 2])), jaxdl_side.loss()))
    jaxdl_side.finish()
    assert losses[1][1] != losses[0][1]  # the first update moved the weights
    for torch_loss, jaxdl_loss in losses:
        assert torch_loss == pytest.approx(jaxdl_loss, rel=1e-4), losses


def test_twin_refuses_what_it_does_not_mirror():
    """A config the twin would train differently is refused by name, never run."""
    from benchmarks import torch_twins
    from jaxdl.schema import Clock

    config = family_config("resnet20", "--config.data.augmentation=none").to_dict()
    config["optimizer"] = {**config["optimizer"], "name": "rmsprop"}
    clock = Clock(steps_per_epoch=4, batch_size=config["data"]["batch_size"])
    with pytest.raises(torch_twins.UnsupportedConfig, match="optimizer 'rmsprop' is not mirrored"):
        torch_twins.build_step(config, 10, (32, 32, 3), to_updates=clock.steps)
