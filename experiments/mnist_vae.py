"""Variational autoencoder on MNIST (Kingma & Welling; the Flax example's model), IDX files.

Command:
    python -m experiments.mnist_vae --workdir=runs/mnist_vae

Model: 784 -> 500 relu -> (mean, log-variance) of a 20-d Gaussian latent -> 500 relu ->
784 Bernoulli logits; Adam 1e-3, batch 128, 30 epochs (the Flax example's default) of the
54,998 training images (5,002 held out for validation: 1/12 of each class, rounded per
class); the metric is the per-image negative ELBO in nats on the 10,000 test images, one
latent sample per image.

Binarisation: none. The grey levels in [0, 1] are the Bernoulli targets (soft targets,
as PyTorch's examples/vae does). The Flax example instead trains on TFDS
`binarized_mnist` (Larochelle's fixed stochastic binarisation, 50,000 training images),
which this machine cannot download; a version of its README reports a test ELBO of
107.05 +- 0.25 over 5 runs (epochs not stated). Against grey-level targets the
reconstruction term is a cross-entropy with a floor above zero, so the numbers are of the
same size but not the same quantity; other binarisations (e.g. thresholding at 0.5) give
other numbers, not measured here.

Expected result (measured 2026-12-07 on the 2-core AMD EPYC CPU dev machine, no GPU,
jax 0.10.2, 1 CPU device, sharded backend, nothing else running): test -ELBO 103.22 nats
(KL 25.55, reconstruction 77.66), validation 103.83, after 30 epochs = 12,870 steps; the
issue's target of <= 104 nats is met (on validation from epoch 28 on: 103.95); validation
106.66 after 10 epochs, 104.47 after 24. The test split is evaluated once, at the end. The
training loop took 147 s (11,231 examples/s), the whole run 164 s of wall time (compile
4.2 s). (Before the latent noise was drawn per example, 2026-11-21: test 103.25.)

After each evaluation `images/` gets reconstructions_stepN.png (test originals above
their reconstructions) and samples_stepN.png (decoded from the same 16 latent vectors
every time); the final evaluation adds embedding_stepN.png (the test means projected on
their first two principal components, coloured by digit). Needs the MNIST IDX files
(see README: data lookup order).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="vae", encoder_widths=(500,), latent_dim=20, decoder_widths=(500,),
                   activation="relu", image_shape=(28, 28, 1), decoder_distribution="bernoulli",
                   decoder_std=1.0)
    c.task = dict(name="vae", num_images=16, plot_examples=5000)
    c.data = dict(name="mnist", split_seed=0, validation_fraction=5000 / 60000, test_fraction=0.0,
                  batch_size=128, eval_batch_size=1000, augmentation="none")
    c.train = dict(duration="30 epochs", log_every="100 steps", eval_every="1 epoch")
    c.checkpoint = dict(every="1 epoch", keep_last=2, keep_best=1, monitor="validation/loss",
                        mode="min")
    c.optimizer = dict(name="adam", learning_rate=1e-3)
    c.schedule = dict(name="constant")
    c.precision = "fp32"
    c.parallel = dict(backend="sharded")
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
