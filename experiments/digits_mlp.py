"""MLP on scikit-learn's handwritten digits (1,797 8x8 images), the lectures' first network.

Command:
    python -m experiments.digits_mlp --workdir=runs/digits_mlp
    python -m experiments.digits_mlp --workdir=runs/digits_mlp_sigmoid --config.model.activation=sigmoid

Expected result (measured 2026-12-07 on the 2-core AMD EPYC CPU dev machine, no GPU,
jax 0.10.2, 1 CPU device, sharded backend): ReLU test accuracy 0.9806 after 60 epochs =
1,140 steps; sigmoid hidden units with the same recipe reach only 0.9114: they learn far
more slowly at this learning rate. Timings (idle machine, 2026-11-21, before dropout masks
were drawn per example): training loop 0.9 s / 1.1 s, whole command 6.4 s / 7.0 s.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="mlp", widths=(128, 64), activation="relu", dropout_rate=0.1,
                   num_classes=10)
    c.task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.0)
    c.data = dict(name="digits", split_seed=0, validation_fraction=0.1, test_fraction=0.2,
                  batch_size=64, eval_batch_size=128, augmentation="none")
    c.train = dict(duration="60 epochs", log_every="1 epoch", eval_every="5 epochs")
    c.checkpoint = dict(every="10 epochs", keep_last=2, keep_best=1, monitor="validation/accuracy",
                        mode="max")
    c.early_stopping = dict(patience=0, min_delta=0.0)
    c.guard = dict(skip_nonfinite=False)
    c.init_from = ""
    c.optimizer = dict(name="momentum", learning_rate=0.05, momentum=0.9, b1=0.9, b2=0.999,
                       eps=1e-8, rmsprop_decay=0.9, adagrad_initial_accumulator=0.1,
                       weight_decay=1e-4, weight_decay_mask="no_bias_no_norm", grad_clip_norm=0.0,
                       grad_accum_steps=1)
    c.schedule = dict(name="cosine", warmup="0 steps", boundaries="", decay_factor=0.1,
                      decay_every="1 epoch", final_lr_factor=0.0, pct_start=0.3,
                      div_factor=25.0, final_div_factor=1e4, plateau_factor=0.1,
                      plateau_patience=10, plateau_cooldown=0, plateau_rtol=1e-4,
                      plateau_accumulation=1)
    c.precision = "fp32"
    c.parallel = dict(backend="sharded", num_devices=0, host_devices=0, max_in_flight=8)
    c.logging = dict(tensorboard=True, progress=True, plot=True)
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
