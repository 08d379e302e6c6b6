"""GAN training as a task: one compiled step updates the discriminator `n_critic` times,
then the generator once, each net with its own optimizer state and BatchNorm statistics;
evaluations add a sample grid and the Fréchet distance to the real images.

The model is a module with submodules `generator` and `discriminator` and methods
`generate(z, train=)` and `discriminate(x, train=)` (`jaxdl.models.gan.DCGAN`), so params,
batch statistics and optimizer states are {"discriminator": ..., "generator": ...}: one
TrainState, and checkpoints and resume work unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import plots, runs
from jaxdl.models import layers
from jaxdl.schema import ConfigError, Field, positive
from jaxdl.tasks.base import Learned, Task, build_model_from_config, example_rows, register_task
from jaxdl.tasks.frechet import FeatureExtractor, frechet_distance, statistics

GENERATOR, DISCRIMINATOR = "generator", "discriminator"
GAN_LOSSES = ("non_saturating", "hinge")

# Stream ids folded into a key: each draw of latents has its own stream, apart from the
# step's augmentation stream (1) and dropout (the step key itself).
_CRITIC_LATENTS, _GENERATOR_LATENTS, _EVAL_LATENTS, _GRID_LATENTS, _FD_LATENTS = 2, 3, 4, 5, 6


def _rows(batch) -> jax.Array:
    """The batch's rows in the global batch (0..n-1 for a batch given by hand)."""
    rows = example_rows(batch)
    return jnp.arange(batch["inputs"].shape[0]) if rows is None else rows


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(values * mask) / jnp.sum(mask)


@dataclasses.dataclass(frozen=True, eq=False)
class GANTask(Task):
    model: nn.Module
    gan_loss: str
    n_critic: int
    sample_grid: int  # the grid of samples written at each evaluation is this many a side
    fd_examples: int  # real and generated images per eval split for the Fréchet distance
    eval_batch_size: int
    classifier: FeatureExtractor | None  # None: no Fréchet distance
    monitor: str
    monitor_mode: str = "min"
    # Host-side memo of the real images' feature statistics per split (they never change).
    _real_statistics: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def metric_names(cls, task_config):
        # on_eval adds the Fréchet distance when a classifier scores the samples.
        return ("loss", "d_loss", "g_loss", "d_real", "d_fake") + (
            ("frechet_distance",) if task_config["fd_classifier"] else ())

    @classmethod
    def unavailable_metrics(cls, task_config):
        if task_config["fd_classifier"]:
            return {}
        return {"frechet_distance": "config.task.fd_classifier (a classifier run's workdir)"}

    # ---------------------------------------------------------------- the two nets
    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def latents(self, rng: jax.Array, rows: jax.Array) -> jax.Array:
        """One latent vector per example, drawn from fold_in(rng, its row in the global
        batch): the same whether the batch is on one device or split over several."""
        return jax.vmap(lambda key: jax.random.normal(key, (self.latent_dim,), jnp.float32))(
            layers.fold_rows(rng, rows))

    def to_model_range(self, images: jax.Array) -> jax.Array:
        """Data images in [0, 1] -> the generator's output range ([-1, 1] under tanh)."""
        return images * 2.0 - 1.0 if self.model.output_activation == "tanh" else images

    def to_data_range(self, samples):
        return (samples + 1.0) / 2.0 if self.model.output_activation == "tanh" else samples

    def run_net(self, net: str, params, model_state, inputs, *, train: bool):
        """(`net`'s output, model state with only `net`'s statistics updated, in training).

        The other net may run in training mode inside an update (batch statistics), but its
        running averages change only in its own update."""
        variables = {"params": params, **model_state}
        method = "generate" if net == GENERATOR else "discriminate"
        if not (train and model_state):
            return self.model.apply(variables, inputs, train=train, method=method), model_state
        out, updated = self.model.apply(variables, inputs, train=True, method=method,
                                        mutable=list(model_state))
        return out, {name: ({**collection, net: updated[name][net]}
                            if net in updated.get(name, {}) else collection)
                     for name, collection in model_state.items()}

    # ---------------------------------------------------------------- the losses
    def discriminator_losses(self, real_logits, fake_logits) -> jax.Array:
        if self.gan_loss == "hinge":
            return nn.relu(1.0 - real_logits) + nn.relu(1.0 + fake_logits)
        return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)

    def generator_losses(self, fake_logits) -> jax.Array:
        if self.gan_loss == "hinge":
            return -fake_logits
        return jax.nn.softplus(-fake_logits)  # -log D(G(z)): the non-saturating loss

    def score(self, logits) -> jax.Array:
        """What `d_real` / `d_fake` report: D's probability of 'real' (non-saturating) or
        its raw score (hinge)."""
        return logits if self.gan_loss == "hinge" else jax.nn.sigmoid(logits)

    # ---------------------------------------------------------------- the updates
    def init(self, rng, inputs):
        """Both nets' variables (the model's __call__ runs each once)."""
        return dict(self.model.init({"params": rng}, self.to_model_range(inputs), train=False))

    def init_optimizer(self, tx, params):
        """One optimizer state per net, from the same transformation."""
        return {net: tx.init(params[net]) for net in (DISCRIMINATOR, GENERATOR)}

    def discriminator_update(self, tx, params, model_state, opt_state, batch, mask, rng, *,
                             reduce) -> Learned:
        """One step on D's loss for the real batch and as many samples of G (held fixed by
        stop_gradient); G's parameters, statistics and optimizer state are untouched."""
        real = self.to_model_range(batch["inputs"])
        fake, _ = self.run_net(GENERATOR, params, model_state,
                               self.latents(rng, _rows(batch)), train=True)
        fake = jax.lax.stop_gradient(fake)

        def loss_fn(d_params):
            both = {**params, DISCRIMINATOR: d_params}
            real_logits, state = self.run_net(DISCRIMINATOR, both, model_state, real, train=True)
            fake_logits, state = self.run_net(DISCRIMINATOR, both, state, fake, train=True)
            losses = self.discriminator_losses(real_logits, fake_logits)
            values = {"d_loss": losses, "d_real": self.score(real_logits),
                      "d_fake": self.score(fake_logits)}
            return _masked_mean(losses, mask), (values, state)

        return self._update(DISCRIMINATOR, loss_fn, tx, params, opt_state, reduce=reduce)

    def generator_update(self, tx, params, model_state, opt_state, mask, rng, *,
                         reduce, rows: jax.Array | None = None) -> Learned:
        """One step on G's loss, differentiated through D at the parameters given (the
        just-updated ones); D's parameters, statistics and optimizer state are untouched.
        `rows`: the examples' rows in the global batch (default 0..len(mask)-1)."""
        z = self.latents(rng, jnp.arange(mask.shape[0]) if rows is None else rows)

        def loss_fn(g_params):
            both = {**params, GENERATOR: g_params}
            fake, state = self.run_net(GENERATOR, both, model_state, z, train=True)
            fake_logits, _ = self.run_net(DISCRIMINATOR, both, state, fake, train=True)
            losses = self.generator_losses(fake_logits)
            return _masked_mean(losses, mask), ({"g_loss": losses}, state)

        return self._update(GENERATOR, loss_fn, tx, params, opt_state, reduce=reduce)

    @staticmethod
    def _update(net, loss_fn, tx, params, opt_state, *, reduce) -> Learned:
        """One optimizer step of `net` on `loss_fn(net's params) -> (mean loss, (values,
        model state))`, gradients averaged over devices; the other net passes through."""
        (_, (values, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params[net])
        grads = reduce(grads)
        updates, net_opt_state = tx.update(grads, opt_state[net], params[net])
        return Learned(params={**params, net: optax.apply_updates(params[net], updates)},
                       model_state=state, opt_state={**opt_state, net: net_opt_state},
                       values=values, grads=grads, updates=updates)

    def learn(self, tx, params, model_state, opt_state, batch, mask, rng, *, reduce):
        """`n_critic` discriminator updates (each with fresh latents, on the step's real
        batch), then one generator update. A monitored value (reduce-on-plateau) waits in
        each net's optimizer state and is taken by that net's first update, so each net's
        plateau counts evaluations, not updates. The D updates are unrolled, not a `fori_loop`: inside a while loop XLA's CPU
        backend ran the whole step 5.6x slower (mnist_dcgan, batch 64, pmap over 2 host
        devices: 151 vs 27 ms), at the price of compiling n_critic D updates."""
        critic_rng = jax.random.fold_in(rng, _CRITIC_LATENTS)
        for i in range(self.n_critic):
            d = self.discriminator_update(
                tx, params, model_state, opt_state, batch, mask,
                jax.random.fold_in(critic_rng, i), reduce=reduce)
            params, model_state, opt_state = d.params, d.model_state, d.opt_state
        # The last D update's values, gradients and updates are reported.
        d_values, d_grads, d_updates = d.values, d.grads, d.updates
        g = self.generator_update(tx, params, model_state, opt_state, mask,
                                  jax.random.fold_in(rng, _GENERATOR_LATENTS),
                                  reduce=reduce, rows=_rows(batch))
        values = {**d_values, **g.values, "loss": d_values["d_loss"] + g.values["g_loss"]}
        return Learned(params=g.params, model_state=g.model_state, opt_state=g.opt_state,
                       values=values, grads={DISCRIMINATOR: d_grads, GENERATOR: g.grads},
                       updates={DISCRIMINATOR: d_updates, GENERATOR: g.updates})

    def apply(self, variables, batch, *, train, rng):
        """Both losses per real example, with one latent per example from `rng` (the eval
        step passes the run's fixed key, so every evaluation scores the same latents)."""
        params = variables["params"]
        state = {k: v for k, v in variables.items() if k != "params"}
        real = self.to_model_range(batch["inputs"])
        fake, state = self.run_net(GENERATOR, params, state,
                                   self.latents(jax.random.fold_in(rng, _EVAL_LATENTS),
                                                _rows(batch)), train=train)
        real_logits, state = self.run_net(DISCRIMINATOR, params, state, real, train=train)
        fake_logits, state = self.run_net(DISCRIMINATOR, params, state, fake, train=train)
        d_loss = self.discriminator_losses(real_logits, fake_logits)
        g_loss = self.generator_losses(fake_logits)
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
                "d_real": self.score(real_logits), "d_fake": self.score(fake_logits)}, state

    # ---------------------------------------------------------------- evaluation extras
    @functools.cached_property
    def _generate(self):
        return jax.jit(lambda variables, z: self.to_data_range(
            self.model.apply(variables, z, train=False, method="generate")))

    def samples(self, variables, rng: jax.Array, count: int) -> np.ndarray:
        """`count` generated images in the data's range, `eval_batch_size` at a time."""
        z = self.latents(rng, jnp.arange(count))
        return np.concatenate([np.asarray(self._generate(variables, z[i:i + self.eval_batch_size]))
                               for i in range(0, count, self.eval_batch_size)])

    def split_frechet_distance(self, name: str, real_images: np.ndarray, variables,
                               rng: jax.Array) -> float:
        """FD between the split's first `fd_examples` images and as many samples."""
        count = min(self.fd_examples, len(real_images))
        if name not in self._real_statistics:
            self._real_statistics[name] = statistics(self.classifier(
                real_images[:count], rng, batch_size=self.eval_batch_size))
        fake = self.samples(variables, jax.random.fold_in(rng, _FD_LATENTS), count)
        fake_statistics = statistics(self.classifier(fake, rng, batch_size=self.eval_batch_size))
        return frechet_distance(*self._real_statistics[name], *fake_statistics)

    def on_eval(self, context):
        """The sample grid from fixed latents (written when `context.write_files`) and, with
        a classifier, `frechet_distance` for every eval split."""
        variables = context.variables
        if context.write_files:
            grid = self.samples(variables, jax.random.fold_in(context.rng, _GRID_LATENTS),
                                self.sample_grid ** 2)
            write_grid(grid, context.workdir, context.step)
        if self.classifier is None:
            return {}
        return {name: {"frechet_distance": self.split_frechet_distance(
                    name, np.asarray(context.splits[name].inputs), variables, context.rng)}
                for name in context.eval_splits}


def write_grid(images: np.ndarray, workdir: Path, step: int) -> Path:
    """Samples [N, H, W, C] in [0, 1] as DIR/samples/step_XXXXXX.png, and the latest as
    DIR/samples.png."""
    path = plots.image_grid_png(np.clip(images, 0.0, 1.0), [""] * len(images),
                                Path(workdir) / runs.SAMPLES_DIRNAME / f"step_{step:06d}.png",
                                title=f"step {step}: samples of fixed latents")
    shutil.copyfile(path, Path(workdir) / runs.SAMPLES_PNG)
    return path


@register_task("gan", task=GANTask, fields={
    "gan_loss": Field(str, choices=lambda: GAN_LOSSES,
                      help="non_saturating (-log D(G(z))) or hinge"),
    "n_critic": Field(int, check=positive, help="discriminator updates per generator update"),
    "sample_grid": Field(int, check=positive, help="samples per side of the grid PNG"),
    "fd_classifier": Field(str, help="workdir of a jaxdl classifier run whose penultimate "
                                     "features score samples by Fréchet distance; '' = none"),
    "fd_examples": Field(int, check=positive,
                         help="real and generated images per eval split for the FD"),
})
def build_gan(config, dataset, *, axis_name):
    model = build_model_from_config(config, axis_name=axis_name)
    missing = [name for name in ("generate", "discriminate", "latent_dim", "output_activation")
               if not hasattr(model, name)]
    if missing:
        raise ConfigError(f"config.task.name='gan' needs a model with generate(), "
                          f"discriminate(), latent_dim and output_activation (e.g. 'dcgan'); "
                          f"{config.model.name!r} lacks {', '.join(missing)}")
    image_shape = tuple(dataset.features.shape[1:])
    sample_shape = jax.eval_shape(
        lambda z: model.init_with_output(jax.random.PRNGKey(config.seed), z, train=False,
                                         method="generate")[0],
        jax.ShapeDtypeStruct((1, model.latent_dim), jnp.float32)).shape[1:]
    if sample_shape != image_shape:
        raise ConfigError(f"config.model makes {list(sample_shape)} samples but "
                          f"{config.data.name!r} images are {list(image_shape)}")
    classifier = None
    if config.task.fd_classifier:
        try:
            classifier = FeatureExtractor.from_run(config.task.fd_classifier,
                                                   role="config.task.fd_classifier")
            classifier.feature_shape(image_shape, jax.random.PRNGKey(config.seed))
        except runs.CheckpointError as e:
            raise ConfigError(str(e)) from None
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config.task.fd_classifier={config.task.fd_classifier!r}: its "
                              f"model cannot score {list(image_shape)} images: "
                              f"{str(e).splitlines()[0]}") from None
    return GANTask(model=model, gan_loss=config.task.gan_loss, n_critic=config.task.n_critic,
                   sample_grid=config.task.sample_grid, fd_examples=config.task.fd_examples,
                   eval_batch_size=config.data.eval_batch_size, classifier=classifier,
                   monitor="frechet_distance" if classifier else "g_loss")
