"""MNIST speedrun: the shortest training on this 2-core CPU that reaches 99.0% test accuracy
on the real MNIST, in the spirit of the CIFAR-10 airbench records.

Command:
    python -m experiments.mnist_speedrun --workdir=runs/mnist_speedrun

A small CNN with BatchNorm (conv3x3(8) BN relu avgpool, conv3x3(16) BN relu avgpool,
dense 256, dense 10), 2 epochs of one-cycle SGD with Nesterov momentum, label smoothing,
data on the device, one device (no host-device split), one evaluation at the end. The time
that counts is the training loop's (`summary.json` train_seconds: first step to last,
compile excluded).

Choices were made on the validation split (5,002 of the train images), never on the test
split. Validation accuracy of the candidates, batch 128, one run each (seed 0; seeds 0 / 1
where two are given), 2-core CPU dev VM. First round, max pooling, dense 128 unless given
(2026-12-07 afternoon, loops measured while other runs shared the machine):

| features | dense | epochs | peak lr | batch | validation |
|---|---:|---:|---:|---:|---:|
| (16, 32) | 128 | 2 | 0.2 | 128 | 0.9904 |
| (16, 32) | 128 | 1 | 0.2 / 0.4 | 128 | 0.9864 / 0.9878 |
| (16, 32) | 128 | 1 | 0.4 | 256 | 0.9854 |
| (16, 32) | 128 | 1.5 | 0.4 | 128 | 0.9884 |
| (8, 32) | 128 | 1.5 | 0.4 | 128 | 0.9894 |
| (12, 24) | 128 | 2 | 0.4 | 128 | 0.9896 |
| (8, 16) | 64 | 1 / 2 | 0.2 | 128 | 0.9838 / 0.9866 |
| (8, 16) | 128 | 2 / 3 | 0.4 | 128 | 0.9894 / 0.9916 (the pinned recipe until the second round) |

Second round (2026-12-07, 23:15-23:23 UTC, quiet machine), after a step profile showed
max pooling's gradient mask and BatchNorm's reductions as the largest ops: average pooling
runs the step at 10.0 ms instead of 11.1-11.3 (`benchmarks.step_throughput --experiment
mnist_speedrun --config.model.pooling=avg`); batch 64-128 all give 11,000-11,500
examples/s, batch 256 7,450 (1 device) and 11,200 (2 host devices), so batch 128 on one
device stays. Average pooling, peak lr 0.4 unless given:

| features | dense | epochs | validation (seed 0 / 1) | loop s |
|---|---:|---:|---:|---:|
| (8, 16) | 128 | 3 | 0.9914 | 14.2 |
| (8, 16) | 128 | 2 | 0.9900 / 0.9902 | 9.4 / 8.5 |
| (8, 16), lr 0.8 | 128 | 2 | 0.9894 | 9.1 |
| (8, 16) | **256** | **2** | **0.9902 / 0.9906** (pinned) | 8.9 / 9.1 |
| (10, 16) | 128 | 2 | 0.9906 / 0.9908 | 10.9 / 10.3 |
| (12, 16) | 128 | 2 | 0.9916 / 0.9908 | 10.4 / 10.4 |
| (8, 24) | 128 | 2 | 0.9904 | 10.6 |
| (8, 32) | 128 | 2 | 0.9904 | 11.5 |
| (16, 32) | 128 | 2 | 0.9920 | 16.9 |

The pinned recipe is the fastest whose validation accuracy cleared 99.0% on both seeds.

RESULTS (`python -m benchmarks.speedrun --seeds 5 --workdir DIR`, 2026-12-07, 23:26-23:28
UTC, 2-core AMD EPYC CPU dev VM with AVX-512, no GPU, jax 0.10.2, torch 2.13.0+cpu with 2
threads, nothing else of ours running; 858 steps each; the whole benchmark, compiles and
evaluations included, took 2 min 23 s):

| seed | jaxdl loop s | jaxdl test | torch eager loop s | torch test |
|---:|---:|---:|---:|---:|
| 0 | 9.4 | 0.9924 | 10.9 | 0.9923 |
| 1 | 9.2 | 0.9921 | 11.1 | 0.9918 |
| 2 | 9.2 | 0.9928 | 10.7 | 0.9934 |
| 3 | 9.7 | 0.9921 | 11.4 | 0.9927 |
| 4 | 9.2 | 0.9917 | 11.7 | 0.9920 |
| mean ± sd | 9.4 ± 0.2 | 0.9922 | 11.2 ± 0.4 | 0.9924 |

Every seed reached 99.0% on both sides, and jaxdl's loop is under 10 s and 1.19x faster than
PyTorch eager's on the same batches (jaxdl's loop also fetches metrics every 100 steps;
torch's does not). The same benchmark 3 minutes earlier: jaxdl 9.8 ± 0.7 s, torch 11.0 ±
0.2 s, the same test accuracies (each side is deterministic per seed). The previous recipe
(max pooling, dense 128, 3 epochs, 1,287 steps) at 21:21-21:24 the same day: jaxdl 16.6 ±
1.4 s (test 0.9920), torch 16.3 ± 0.7 s (0.9925); on another VM earlier that day: jaxdl
26.0 ± 1.6 s, torch 30.3 ± 1.3 s.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="cnn", features=(8, 16), kernel_size=3, pooling="avg", dense_width=256,
                   activation="relu", dropout_rate=0.0, batch_norm=True, bn_momentum=0.9,
                   num_classes=10)
    c.task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.1)
    c.data = dict(name="mnist", split_seed=0, validation_fraction=5000 / 60000, test_fraction=0.0,
                  batch_size=128, eval_batch_size=1000, augmentation="none", pipeline="device")
    c.train = dict(duration="2 epochs", log_every="100 steps", eval_every="2 epochs")
    c.checkpoint = dict(every="2 epochs", keep_last=1, keep_best=1, monitor="validation/accuracy",
                        mode="max")
    c.optimizer = dict(name="nesterov", learning_rate=0.4, momentum=0.9)
    c.schedule = dict(name="one_cycle")
    c.precision = "fp32"
    c.parallel = dict(backend="sharded", host_devices=1)
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
