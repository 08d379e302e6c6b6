"""MNIST speedrun: the shortest training on this 2-core CPU that reaches 99.0% test accuracy
on the real MNIST, in the spirit of the CIFAR-10 airbench records.

Command:
    python -m experiments.mnist_speedrun --workdir=runs/mnist_speedrun

A small CNN with BatchNorm (conv3x3(8) BN relu maxpool, conv3x3(16) BN relu maxpool,
dense 128, dense 10), one-cycle SGD with Nesterov momentum, label smoothing, data on the
device, one device (no host-device split), one evaluation at the end. The time that counts is
the training loop's (`summary.json` train_seconds: first step to last, compile excluded).

Choices were made on the validation split (5,002 of the train images), never on the test
split. Validation accuracy of the candidates, one run each (seed 0, 2-core CPU dev VM,
2026-12-07; loops measured while other runs shared the machine, so not comparable):

| features | dense | epochs | peak lr | batch | validation |
|---|---:|---:|---:|---:|---:|
| (16, 32) | 128 | 2 | 0.2 | 128 | 0.9904 |
| (16, 32) | 128 | 1 | 0.2 / 0.4 | 128 | 0.9864 / 0.9878 |
| (16, 32) | 128 | 1 | 0.4 | 256 | 0.9854 |
| (16, 32) | 128 | 1.5 | 0.4 | 128 | 0.9884 |
| (8, 32) | 128 | 1.5 | 0.4 | 128 | 0.9894 |
| (12, 24) | 128 | 2 | 0.4 | 128 | 0.9896 |
| (8, 16) | 64 | 1 / 2 | 0.2 | 128 | 0.9838 / 0.9866 |
| (8, 16) | 128 | 2 / 3 | 0.4 | 128 | 0.9894 / **0.9916** (pinned) |

RESULTS (`python -m benchmarks.speedrun --seeds 5 --workdir DIR`, 2026-12-07, 21:21-21:24
UTC, 2-core AMD EPYC CPU dev VM with AVX-512, no GPU, jax 0.10.2, torch 2.13.0+cpu with 2
threads, nothing else of ours running; 1,287 steps each; the whole benchmark, compiles and
evaluations included, took 3 min):

| seed | jaxdl loop s | jaxdl test | torch eager loop s | torch test |
|---:|---:|---:|---:|---:|
| 0 | 18.1 | 0.9918 | 16.7 | 0.9920 |
| 1 | 16.3 | 0.9921 | 17.4 | 0.9925 |
| 2 | 15.0 | 0.9918 | 15.8 | 0.9920 |
| 3 | 18.0 | 0.9919 | 16.1 | 0.9928 |
| 4 | 15.6 | 0.9924 | 15.6 | 0.9932 |
| mean ± sd | 16.6 ± 1.4 | 0.9920 | 16.3 ± 0.7 | 0.9925 |

Every seed reached 99.0% on both sides; the loops are at parity (jaxdl's also fetches
metrics every 100 steps; torch's does not). The goal of <= 10 s is not met: at 1,287 steps
that needs ~8 ms a step, and this step takes 11-13 ms on this VM
(`benchmarks.step_throughput --model mnist_speedrun`; the loop adds the metric fetches and
the device feed's gathers). Earlier the same day, on another VM: jaxdl 26.0 ± 1.6 s
(test 0.9918), PyTorch 30.3 ± 1.3 s (0.9926).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="cnn", features=(8, 16), kernel_size=3, pooling="max", dense_width=128,
                   activation="relu", dropout_rate=0.0, batch_norm=True, bn_momentum=0.9,
                   num_classes=10)
    c.task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.1)
    c.data = dict(name="mnist", split_seed=0, validation_fraction=5000 / 60000, test_fraction=0.0,
                  batch_size=128, eval_batch_size=1000, augmentation="none", pipeline="device")
    c.train = dict(duration="3 epochs", log_every="100 steps", eval_every="3 epochs")
    c.checkpoint = dict(every="3 epochs", keep_last=1, keep_best=1, monitor="validation/accuracy",
                        mode="max")
    c.optimizer = dict(name="nesterov", learning_rate=0.4, momentum=0.9)
    c.schedule = dict(name="one_cycle")
    c.precision = "fp32"
    c.parallel = dict(backend="sharded", host_devices=1)
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
