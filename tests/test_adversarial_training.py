"""Adversarial training (task.adversarial_epsilon, Madry et al. 2018): the training loss is
the loss on PGD examples within epsilon of the batch, which is higher than the clean loss
at the same weights; off (epsilon 0) and at evaluation nothing changes; an attack without
its steps and step size is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config

from jaxdl import losses
from jaxdl.models import build_model
from jaxdl.schema import ConfigError
from jaxdl.tasks.classification import ClassificationTask


def _task(eps):
    model = build_model("cnn", features=(3,), kernel_size=3, pooling="max", dense_width=8,
                        activation="relu", dropout_rate=0.0, batch_norm=False,
                        bn_momentum=0.9, num_classes=4)
    return ClassificationTask(model=model, loss_fn=losses.get_loss("softmax_cross_entropy"),
                              eval_batch_size=8, misclassified_shown=0, draw_figures=False,
                              adversarial_epsilon=eps, adversarial_steps=3,
                              adversarial_step_size=0.5)


def test_the_training_loss_is_taken_on_pgd_examples():
    batch = {"inputs": jax.random.uniform(jax.random.PRNGKey(0), (8, 4, 4, 1)),
             "targets": jnp.arange(8) % 4}
    variables = _task(0.0).init(jax.random.PRNGKey(1), batch["inputs"])
    rng = jax.random.PRNGKey(2)

    def loss(eps, train):
        values, _ = _task(eps).apply(variables, batch, train=train, rng=rng)
        return np.asarray(values["loss"])

    clean = loss(0.0, True)
    np.testing.assert_array_equal(loss(0.0, False), clean)
    assert np.all(loss(0.1, True) > clean)
    np.testing.assert_array_equal(loss(0.1, False), clean)  # evaluation stays clean


def test_adversarial_training_without_its_attack_is_refused():
    from jaxdl.training.build import build
    config = make_config("digits_cnn", **{"task.adversarial_epsilon": 0.1})
    with pytest.raises(ConfigError, match="set config.task.adversarial_steps and "
                                          "adversarial_step_size"):
        build(config)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sharded", "pmap"])
def test_the_compiled_train_step_trains_on_pgd_examples(tmp_path, backend):
    """Through the real loop on 2 devices: the same 20 steps log a higher training loss on
    PGD examples than on clean ones (the weights see harder inputs)."""
    import io

    from jaxdl.training import loop
    from jaxdl.training.writers import read_metrics

    def train_loss(eps, name):
        attack = {"task.adversarial_epsilon": eps, "task.adversarial_steps": 3,
                  "task.adversarial_step_size": 0.5} if eps else {}
        config = make_config("digits_cnn", **attack, **{
            "logging.tensorboard": False, "logging.progress": False, "logging.plot": False,
            "train.duration": "20 steps", "train.log_every": "20 steps",
            "train.eval_every": "20 steps", "checkpoint.every": "20 steps",
            "parallel.backend": backend, "parallel.num_devices": 2})
        loop.train_and_evaluate(config, tmp_path / name, stream=io.StringIO())
        (record,) = [r for r in read_metrics(tmp_path / name / "metrics.jsonl")
                     if r["split"] == "train"]
        return record["loss"]

    assert train_loss(0.2, "adversarial") > train_loss(0.0, "standard")
