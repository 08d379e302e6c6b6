"""Training-step throughput of an experiment, timed on the very step its runs compile.

    python -m benchmarks.step_throughput --experiment digits_cnn --backend sharded \
        [--batch_size N] [--steps K] [--warmup W] [--repeats R] [--json FILE] \
        [--config.KEY=VALUE ...]
    python -m benchmarks.step_throughput --experiment mnist_cnn --compare torch [...]
    python -m benchmarks.step_throughput --model NAME [--compare torch] [...]

The trainer comes from `jaxdl.training.loop.build`, the function `train_and_evaluate`
uses, so the timed executable is the experiment's compiled `train_step` (same model,
optimizer, backend, donation and shardings); nothing here re-implements the step.

What is timed (synthetic-from-real-data mode): `--batches` distinct real training batches
are placed on the devices *before* timing and cycled, so host batching and host-to-device
transfer are excluded. After `--warmup` steps, `--steps` steps are timed in `--repeats`
windows; each window ends with `jax.block_until_ready` on the returned state and metrics,
so it measures device work plus per-step dispatch. The step time is reported as the
median and p10/p90 over windows, examples/s as the global batch over the median.
Compilation is excluded from the timing and reported separately
(`Trainer.compile_seconds`: train + eval step, no persistent compilation cache). With
`--warm_compile` the trainer is built twice with JAX's persistent cache in a fresh temporary
directory: the first build is the cold compile (it fills the cache), the second the warm one.

At most `--max_in_flight` (default: the config's `parallel.max_in_flight`) steps are
dispatched ahead of the device. Without
a bound, JAX 0.10.2's CPU client with 2 forced host devices deadlocks in the step's
all-reduce once some 30 or more steps are queued ("Termination timeout for `all reduce
RendezvousKey...` of 40 seconds exceeded", then abort), with either backend; a plain
jitted all-reduce reproduces it, so it is not jaxdl's step. With pre-placed batches the
queue fills at once; the training loop puts each batch from the host, so its queue
stays shorter (it did not hang in the runs tried). On 1 device the bound of 8 cost
nothing measurable (within the run-to-run noise of a few percent).

Devices: as in `python -m experiments.NAME`, the CPU host split comes from XLA_FLAGS if it
sets --xla_force_host_platform_device_count, otherwise from config.parallel.host_devices.
It must be decided before JAX starts its backend, so one process measures one split;
`benchmarks.suite` runs the matrix in subprocesses.

`--model NAME` (synthetic mode): time a model family with its experiment's config on random
data of the right shape (the `synthetic` source registered here), so no dataset file is
needed; the step is still the one `loop.build` compiles for that config. `MODEL_FAMILIES`:

    mlp          experiments/digits_mlp.py         8x8x1 images, 10 classes, batch 64
    mnist_cnn    experiments/mnist_cnn.py          28x28x1, 10 classes, batch 128 (alias: cnn)
    resnet20/56  experiments/cifar10_resnet20/56   32x32x3, 10 classes, batch 128
    resnet50     experiments/imagenet_resnet50.py  224x224x3, 1000 classes, batch 1024, bf16
    vgg16        imagenet_resnet50's recipe, model vgg16 (dropout 0.5)
    densenet121  imagenet_resnet50's recipe, model densenet121
    lstm_lm      experiments/shakespeare_char_lstm.py (cpu): batch 32 x 100 characters,
                 1 LSTM layer of 256, vocabulary 84 (the corpus's), Adam, clip 1.0
    dcgan        experiments/mnist_dcgan.py: batch 64, the GAN task's D + G step
    vae          experiments/mnist_vae.py          28x28x1 in [0, 1], batch 128

Everything else (optimizer, schedule, precision, parallel settings, on-device
augmentation) is the experiment's; durations given in epochs count epochs of the small
synthetic set (`--batches` batches), which moves only where the schedule is, not the work
of a step. `--config.KEY=VALUE` shrinks a family (e.g. `--config.model.hidden_size=8
--config.data.options.shape="(6,)"` for lstm_lm; the data's shape is
`config.data.options.shape`). VGG-16, DenseNet-121 and ResNet-50 at their ImageNet shapes
were not compiled on the 2-core CPU dev machine (only shrunken smoke runs); they are meant
for an accelerator.

`--compare torch` (benchmarks/torch_reference.py; needs the `bench` extra): the same
config also builds a PyTorch twin of the step (model, loss, optimizer, schedule, precision;
for --model names in `COMPARABLE` and --experiment mnist_cnn). jaxdl's initial weights are
copied into it, and the two must agree: equal parameter counts, and the same first loss
(for a GAN, the D + G loss of given latents, `gan_probe_loss`; within 1e-3, or 2e-2 under
bf16, where torch.autocast and XLA round different ops). It is fed the same `--batches`
host batches, pre-converted to tensors (NCHW images), on the GPU when jaxdl runs on one.
With --model, on-device augmentation is turned off for both sides (the reference does not
mirror it). In ONE process, after each side's warmup (and torch.compile's compilation,
unless `--no_torch_compile`), the timed steps run in `--repeats` alternating windows
(jaxdl, torch eager, torch.compile, then the reverse order), so drift of a shared machine
hits every side. It prints examples/s for each (global batch over the median window) and
the ratio jaxdl / torch: of the medians, and the median and range of the per-window ratios
(adjacent windows). torch uses os.cpu_count() threads.
`--experiment mnist_cnn` needs the MNIST files: without them the comparison is skipped
with a message (exit status 0).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODE = "synthetic-from-real-data: batches pre-placed on device, host input excluded"
RANDOM_MODE = "synthetic (random data): batches pre-placed on device, host input excluded"
HEADER = ("| experiment | backend | devices | batch (per device) | compile s | "
          "ms/step median [p10, p90] | examples/s | GFLOP/step | TFLOP/s | MFU | "
          "memory MiB/device |")
SEPARATOR = "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"

# Dense peak TFLOP/s per device from the vendors' datasheets (not measured here), by a
# substring of `device.device_kind` and the config's precision. fp32 on NVIDIA GPUs: XLA's
# default matmul precision uses TF32 tensor cores, so TF32 is the relevant peak.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.4, "fp32": 494.7},
    "H100": {"bf16": 989.4, "fp32": 494.7},  # SXM; the PCIe card is lower (756 / 378)
    "A100": {"bf16": 312.0, "fp32": 156.0},
    "TPU v4": {"bf16": 275.0},
    "TPU v5 lite": {"bf16": 197.0},
    "TPU v5p": {"bf16": 459.0},
}


def peak_tflops(device_kind: str, precision: str) -> float | None:
    """The datasheet peak for this device and precision; None where none is known (CPUs)."""
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_kind:
            return peaks.get(precision)
    return None


def efficiency(trainer, ms_per_step: float) -> dict:
    """Model FLOPs per step (XLA's cost analysis of the compiled step, all devices),
    achieved TFLOP/s, MFU against the device's peak, and memory per device: the
    allocator's peak where the device reports one (GPU/TPU), else XLA's compiled estimate."""
    import jax

    n = trainer.backend.num_devices
    cost = trainer.train_step_cost
    flops = cost["flops"] * n
    achieved = flops / (ms_per_step / 1e3) / 1e12
    device = trainer.backend.devices[0]
    peak = peak_tflops(device.device_kind, trainer.config.precision)
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        memory, memory_source = stats["peak_bytes_in_use"], "allocator peak"
    else:
        memory, memory_source = cost.get("memory_bytes", math.nan), "compiled estimate"
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(trainer.abstract_state.params))
    return {"params": params, "flops_per_step": flops, "achieved_tflops": achieved,
            "peak_tflops": peak, "mfu": achieved / peak if peak else None,
            "memory_bytes_per_device": memory, "memory_source": memory_source}
HOST_DEVICE_FLAG = "xla_force_host_platform_device_count"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The benchmark's own flags, and the rest (`--config.KEY=VALUE` overrides)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_throughput", allow_abbrev=False,
        description="Time the experiment's compiled train step (input excluded).")
    parser.add_argument("--experiment", default="digits_cnn",
                        help="module in experiments/ whose get_config() is timed")
    parser.add_argument("--model", choices=tuple(MODEL_FAMILIES), default=None,
                        help="synthetic mode: time this model family with its experiment's "
                             "config (MODEL_FAMILIES) on random data, instead of --experiment")
    parser.add_argument("--compare", choices=("torch",), default=None,
                        help="also time the PyTorch twin of the step, alternating windows "
                             "(benchmarks/torch_reference.py; needs the 'bench' extra)")
    parser.add_argument("--no_torch_compile", action="store_true",
                        help="with --compare torch: time torch eager only")
    parser.add_argument("--torch_memory_format", choices=("contiguous", "channels_last"),
                        default=None, help="with --compare torch: override the reference's "
                                           "measured choice")
    parser.add_argument("--backend", choices=("pmap", "sharded"), default=None,
                        help="parallel backend (default: the experiment's)")
    parser.add_argument("--batch_size", type=int, default=0,
                        help="global batch size; 0 = keep config.data.batch_size")
    parser.add_argument("--steps", type=int, default=1500, help="timed steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timing windows the timed steps are split into")
    parser.add_argument("--batches", type=int, default=4,
                        help="distinct device batches pre-placed and cycled")
    parser.add_argument("--max_in_flight", type=int, default=None,
                        help="steps dispatched ahead of the device at most (0 = no bound; "
                             "default: the config's parallel.max_in_flight, as in training); "
                             "see the module doc: unbounded queues deadlock forced host devices")
    parser.add_argument("--warm_compile", action="store_true",
                        help="also time a warm compile: build the trainer twice with the "
                             "persistent compilation cache in a fresh temporary directory "
                             "(the first build fills it, the second reads it)")
    parser.add_argument("--json", default=None, help="append one JSON record (a line) here")
    parser.add_argument("--no_header", action="store_true",
                        help="print only the Markdown row, not the table header")
    args, rest = parser.parse_known_args(argv)
    for name in ("steps", "repeats", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if min(args.warmup, args.batch_size, args.max_in_flight or 0) < 0:
        parser.error("--warmup, --batch_size and --max_in_flight must be >= 0")
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.model:
        args.experiment = args.model
    if args.compare and args.model and args.model not in COMPARABLE:
        parser.error(f"--compare torch has references for --model {', '.join(COMPARABLE)} "
                     f"(and --experiment mnist_cnn), not {args.model!r}")
    if args.compare and args.warmup < 1:
        parser.error("--compare needs --warmup >= 1: the first step checks that both sides "
                     "start from the same loss")
    return args, rest


SYNTHETIC_SOURCE = "synthetic"


def register_synthetic_source() -> None:
    """`synthetic`: random data of a given shape, so any model family can be timed with no
    dataset file. Its loader takes `config.data.options` (see `_synthetic_data`): `kind`
    'images' = uniform [0, 1) float32 examples of `shape` with uniform labels in
    [0, num_classes); 'tokens' = windows of `shape[0]` uniform token ids of `vocabulary`,
    the targets the same stream one step later (as jaxdl.data.text cuts them). `examples`
    rows form the training pool and `validation_examples` more a predefined validation
    split (the checkpoint monitor needs one; it is never evaluated here). Seed 0."""
    from jaxdl import data as data_lib

    if SYNTHETIC_SOURCE in data_lib.source_names():
        return

    @data_lib.register_source(SYNTHETIC_SOURCE, locate=lambda: "generated (random)")
    def load_synthetic(*, kind: str, shape, num_classes: int, vocabulary: str, examples: int,
                       validation_examples: int) -> data_lib.Dataset:
        import numpy as np

        rng = np.random.default_rng(0)
        total, shape = examples + validation_examples, tuple(shape)
        if kind == "images":
            features = rng.random((total, *shape), dtype=np.float32)
            targets = rng.integers(0, num_classes, total).astype(np.int32)
            classes, metadata = num_classes, {}
        elif kind == "tokens":
            (window,) = shape
            stream = rng.integers(0, len(vocabulary), total * window + 1).astype(np.int32)
            features = stream[:-1].reshape(total, window)
            targets = stream[1:].reshape(total, window)
            classes, metadata = None, {"vocabulary": vocabulary,
                                       "vocabulary_size": len(vocabulary)}
        else:
            raise ValueError(f"synthetic data kind {kind!r}; valid: images, tokens")
        return data_lib.Dataset(
            name=SYNTHETIC_SOURCE, features=features[:examples], targets=targets[:examples],
            num_classes=classes, metadata=metadata,
            predefined_splits={"validation": (features[examples:], targets[examples:])},
            description=f"random {kind} of shape {shape} (benchmark timing only)")


def _synthetic_data(config, *, kind: str, shape: tuple[int, ...], num_classes: int = 0,
                    vocabulary: str = ""):
    """`config` with its data section replaced by the `synthetic` source of this shape:
    batch size and augmentation are the experiment's, the eval batch is the train batch
    (only compiled here), and the example counts are filled in by `load_config` from
    the batch size and `--batches`."""
    register_synthetic_source()
    data = config.data
    config.data = dict(
        name=SYNTHETIC_SOURCE, split_seed=0, validation_fraction=0.0, test_fraction=0.0,
        batch_size=data.batch_size, eval_batch_size=data.batch_size,
        augmentation=data.augmentation, data_dir="",
        options=dict(kind=kind, shape=tuple(shape), num_classes=num_classes,
                     vocabulary=vocabulary, examples=0, validation_examples=0))
    return config


def _experiment(name: str):
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"experiments.{name}")


def _image_family(experiment: str, shape, num_classes: int, model: dict | None = None,
                  monitor: str | None = None):
    def config():
        c = _experiment(experiment).get_config()
        if model is not None:
            c.model = model
        if monitor is not None:  # validation requires a metric this config reports
            c.checkpoint.monitor = monitor
        return _synthetic_data(c, kind="images", shape=shape, num_classes=num_classes)
    return config


def char_lstm_config():
    """experiments/shakespeare_char_lstm.py's CPU variant (1 layer of 256, embedding 32,
    batch 32, Adam, clip 1.0), on windows of 100 characters of a random text over a
    vocabulary as large as the corpus's (84 characters, the prompt's among them)."""
    module = _experiment("shakespeare_char_lstm")
    c = module.get_config("cpu")
    prompt = c.task.sample_prompt
    printable = "".join(chr(i) for i in range(32, 127)) + "\n"
    extra = [ch for ch in printable if ch not in prompt]
    vocabulary = "".join(sorted(set(prompt) | set(extra[:module.VOCABULARY - len(set(prompt))])))
    return _synthetic_data(c, kind="tokens", shape=(100,), vocabulary=vocabulary)


# ImageNet-shaped families without an experiment of their own take imagenet_resnet50's
# recipe (Nesterov SGD, label smoothing 0.1, warmup cosine, bf16, batch 1024) with the
# model swapped; model fields as torchvision's defaults.
IMAGENET = ("imagenet_resnet50", (224, 224, 3), 1000)
MODEL_FAMILIES = {
    "mlp": _image_family("digits_mlp", (8, 8, 1), 10),
    "mnist_cnn": _image_family("mnist_cnn", (28, 28, 1), 10),
    "cnn": _image_family("mnist_cnn", (28, 28, 1), 10),
    "resnet20": _image_family("cifar10_resnet20", (32, 32, 3), 10),
    "resnet56": _image_family("cifar10_resnet56", (32, 32, 3), 10),
    "resnet50": _image_family(*IMAGENET),
    "vgg16": _image_family(*IMAGENET, model=dict(name="vgg16", num_classes=1000,
                                                 dropout_rate=0.5)),
    "densenet121": _image_family(*IMAGENET, model=dict(name="densenet121", num_classes=1000,
                                                       bn_momentum=0.9, dropout_rate=0.0)),
    "lstm_lm": char_lstm_config,
    # mnist_dcgan monitors the Fréchet distance, which needs a classifier run (none here).
    "dcgan": _image_family("mnist_dcgan", (28, 28, 1), 10, monitor="validation/g_loss"),
    "vae": _image_family("mnist_vae", (28, 28, 1), 10),
}
# --model names with a PyTorch twin in benchmarks/torch_reference.py, and experiments
# whose configs it mirrors.
COMPARABLE = ("mnist_cnn", "cnn", "resnet20", "resnet56", "resnet50", "lstm_lm", "dcgan")


def load_config(args: argparse.Namespace, overrides: list[str]):
    """The experiment's validated config with `--config.*`, `--backend`, `--batch_size`."""
    from absl import flags
    from ml_collections import config_flags

    from jaxdl import config as config_lib

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if args.model:
        base = MODEL_FAMILIES[args.model]()
    else:
        base = importlib.import_module(f"experiments.{args.experiment}").get_config()
    flag_values = flags.FlagValues()
    argv = ["step_throughput", *overrides]  # not sys.argv: main(argv) may run in-process
    config_flags.DEFINE_config_dict("config", config_lib.with_defaults(base, overrides),
                                    "experiment config", flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    flag_values(argv)
    given = flag_values.config.to_dict()
    if args.backend:
        given["parallel"]["backend"] = args.backend
    if args.batch_size:
        given["data"]["batch_size"] = args.batch_size
    if given["data"]["name"] == SYNTHETIC_SOURCE:
        # as many rows as the distinct batches timed; the eval step is compiled, not run
        batch = given["data"]["batch_size"]
        given["data"]["eval_batch_size"] = batch
        given["data"]["options"].update(examples=batch * args.batches, validation_examples=1)
        if args.compare:  # the torch reference does not mirror on-device augmentation
            given["data"]["augmentation"] = "none"
    return config_lib.validate(given)


def set_host_devices(config) -> None:
    """Like `jaxdl.app`: XLA_FLAGS wins; otherwise config.parallel.host_devices, if set."""
    current = os.environ.get("XLA_FLAGS", "")
    if config.parallel.host_devices and f"--{HOST_DEVICE_FLAG}=" not in current:
        os.environ["XLA_FLAGS"] = (
            f"{current} --{HOST_DEVICE_FLAG}={config.parallel.host_devices}").strip()


def _split(total: int, parts: int) -> list[int]:
    parts = min(parts, total)
    return [total // parts + (i < total % parts) for i in range(parts)]


class JaxdlSteps:
    """Runs `trainer.train_step` over `batches` device batches pre-placed from the
    trainer's own host batches (`host_batches[i]` = `trainer.train_batch(i)`).

    At most `max_in_flight` steps (0 = no bound) are dispatched ahead of the device: before
    dispatching more, the metrics of the step that many steps back are waited for. Metrics
    are not donated, so waiting on them is safe while the state is donated. `run(count)`
    returns after the last of its steps finished (`jax.block_until_ready`).
    """

    def __init__(self, trainer, *, batches: int, max_in_flight: int):
        import jax

        self.trainer, self.max_in_flight = trainer, max_in_flight
        self.host_batches = [trainer.train_batch(i) for i in range(batches)]
        self.device_batches = [trainer.backend.put_batch(b) for b in self.host_batches]
        jax.block_until_ready(self.device_batches)
        self.state, self.metrics = trainer.state, None  # the state is donated: keep the new one
        self.pending: collections.deque = collections.deque()
        self.step_index = 0
        self.first_metrics = None  # of step 0, from the initial state (not donated)

    def run(self, count: int) -> None:
        import jax

        train_step, batches = self.trainer.train_step, self.device_batches
        for _ in range(count):
            self.state, self.metrics = train_step(self.state,
                                                  batches[self.step_index % len(batches)])
            if self.step_index == 0:
                self.first_metrics = self.metrics
            self.step_index += 1
            if self.max_in_flight:
                self.pending.append(self.metrics)
                if len(self.pending) > self.max_in_flight:
                    jax.block_until_ready(self.pending.popleft())
        jax.block_until_ready((self.state, self.metrics))
        self.pending.clear()

    def loss(self, metrics=None) -> float:
        """Mean train loss of the last step, or of `metrics` (waits for it)."""
        sums = self.trainer.backend.get_metrics(
            self.metrics if metrics is None else metrics)["sums"]
        return float(sums["loss"]) / float(sums["count"])

    def finish(self) -> None:
        self.trainer.state = self.state  # the old buffers were donated


def window_stats(window_seconds: list[float]) -> dict:
    import numpy as np

    per_step = np.asarray(window_seconds)
    return {
        "window_ms_per_step": [round(s * 1e3, 4) for s in window_seconds],
        "ms_per_step_median": float(np.median(per_step) * 1e3),
        "ms_per_step_p10": float(np.percentile(per_step, 10) * 1e3),
        "ms_per_step_p90": float(np.percentile(per_step, 90) * 1e3),
    }


def measure(trainer, *, steps: int, warmup: int, repeats: int, batches: int,
            max_in_flight: int) -> dict:
    """Times `trainer.train_step` (see `JaxdlSteps`); returns the per-window step times and
    the last loss."""
    runner = JaxdlSteps(trainer, batches=batches, max_in_flight=max_in_flight)
    runner.run(warmup)
    window_seconds = []
    sizes = _split(steps, repeats)
    for size in sizes:
        start = time.perf_counter()
        runner.run(size)
        window_seconds.append((time.perf_counter() - start) / size)
    loss = runner.loss()
    runner.finish()
    return {"window_steps": sizes, **window_stats(window_seconds), "last_train_loss": loss}


class TorchSteps:
    """Runs a `torch_reference.TorchStep` over the same host batches, pre-converted to
    torch tensors. CPU eager work is synchronous; `run` still ends by reading the loss."""

    def __init__(self, name: str, step, host_batches):
        self.name, self.step = name, step
        self.batches = [step.batch(b) for b in host_batches]
        self.index, self.last = 0, None

    def run(self, count: int) -> None:
        for _ in range(count):
            self.last = self.step(*self.batches[self.index % len(self.batches)])
            self.index += 1
        if self.last is not None:
            float(self.last)

    def loss(self) -> float:
        return float(self.last)


def gan_probe_loss(task, params, model_state, host_batch, latents) -> float:
    """Mean D loss + G loss of a real batch and G(`latents`) from the given weights, every
    net in training mode, computed with the GAN task's own functions (`task` built without
    the pmap axis, so it runs outside the step). The torch side computes the same
    (`GanStep.initial_loss`): a GAN's first-step loss draws latents from jaxdl's PRNG, so
    the check that both sides hold the same model uses given latents instead."""
    import jax
    import jax.numpy as jnp

    def probe(params, model_state, images, latents):
        real = task.to_model_range(images)
        fake, state = task.run_net("generator", params, model_state, latents, train=True)
        real_logits, _ = task.run_net("discriminator", params, state, real, train=True)
        fake_logits, _ = task.run_net("discriminator", params, state, fake, train=True)
        losses = task.discriminator_losses(real_logits, fake_logits) + \
            task.generator_losses(fake_logits)
        return jnp.mean(losses)

    return float(jax.jit(probe)(params, dict(model_state), host_batch["inputs"], latents))


def torch_device(trainer) -> str:
    """Torch runs where jaxdl runs: on a GPU when jaxdl's devices are GPUs (and torch sees
    one), else on the CPU."""
    import torch

    on_gpu = trainer.backend.devices[0].platform == "gpu"
    return "cuda" if on_gpu and torch.cuda.is_available() else "cpu"


def compare_torch(trainer, config, args: argparse.Namespace, max_in_flight: int) -> dict:
    """jaxdl's compiled step vs its PyTorch twin (eager, and torch.compile unless
    `--no_torch_compile` or it fails), in alternating windows in this one process."""
    import jax
    import numpy as np

    from jaxdl.training import environment

    try:
        from benchmarks import torch_reference as ref
    except ImportError as e:
        _fail(ImportError(f"--compare torch needs PyTorch: pip install -e '.[bench]' ({e})"))
    import torch

    threads = ref.set_threads()
    load_start = os.getloadavg()
    jaxdl_side = JaxdlSteps(trainer, batches=args.batches, max_in_flight=max_in_flight)
    host = jaxdl_side.host_batches
    initial = trainer.backend.get_state(trainer.state)  # before the first step donates it
    batch_stats = dict(initial.model_state).get("batch_stats")
    plan = trainer.plan
    variants = [("torch eager", False)] + ([] if args.no_torch_compile else
                                           [("torch.compile", True)])
    torch_sides, notes = [], []
    device = torch_device(trainer)
    for name, compiled in variants:
        try:
            step = ref.build_step(config, plan.total_updates, host[0]["inputs"].shape[1:],
                                  memory_format=args.torch_memory_format, compile=compiled,
                                  to_updates=plan.to_updates(config), device=device)
        except ref.UnsupportedConfig as e:
            _fail(e)
        torch_params = sum(p.numel() for p in step.model.parameters())
        jaxdl_params = sum(x.size for x in jax.tree.leaves(initial.params))
        if torch_params != jaxdl_params:
            _fail(RuntimeError(f"the torch {config.model.name} has {torch_params} parameters, "
                               f"jaxdl's {jaxdl_params}: not the same model"))
        ref.load_flax_params(step.model, initial.params, batch_stats)  # the same start
        torch_sides.append(TorchSteps(name, step, host))

    # Both sides' loss from the same weights and batch: the first step's (before its
    # update) or, for a GAN, the probe from fixed latents (`gan_probe_loss`).
    latents = None
    if config.task.name == "gan":
        latents = np.random.default_rng(config.seed).standard_normal(
            (config.data.batch_size, config.model.latent_dim)).astype(np.float32)
        from jaxdl import tasks

        probe_task = tasks.build_task(config, trainer.dataset, axis_name=None)
        first_loss = {"jaxdl": gan_probe_loss(probe_task, initial.params, initial.model_state,
                                              host[0], latents)}
    # Warm up each side; the first torch.compile call compiles (timed, reported).
    jaxdl_side.run(args.warmup)
    if latents is None:
        first_loss = {"jaxdl": jaxdl_side.loss(jaxdl_side.first_metrics)}
    first_step_seconds = {"jaxdl": None}
    for side in list(torch_sides):
        first_loss[side.name] = side.step.initial_loss(side.batches[0], latents)
        start = time.perf_counter()
        try:
            side.run(1)
        except Exception as e:  # noqa: BLE001 - inductor needs a compiler, may fail
            text = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            notes.append(f"{side.name} failed on its first step and is left out: {text}")
            torch_sides.remove(side)
            continue
        first_step_seconds[side.name] = time.perf_counter() - start
        side.run(max(0, args.warmup - 1))
    # bf16: both sides round differently (autocast's op list is not XLA's)
    tolerance = 2e-2 if config.precision == "bf16" else 1e-3
    for name, loss in first_loss.items():
        if not math.isclose(loss, first_loss["jaxdl"], rel_tol=tolerance, abs_tol=1e-4):
            raise RuntimeError(f"the first loss of {name} ({loss:.6f}) differs from jaxdl's "
                               f"({first_loss['jaxdl']:.6f}) from the same weights and batch: "
                               "the torch reference is not the same model")

    sides = [jaxdl_side, *torch_sides]
    names = ["jaxdl", *(side.name for side in torch_sides)]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    sizes = _split(args.steps, args.repeats)
    for window, size in enumerate(sizes):
        order = list(zip(names, sides))
        for name, side in (order if window % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            side.run(size)
            seconds[name].append((time.perf_counter() - start) / size)
    last_loss = {"jaxdl": jaxdl_side.loss(), **{s.name: s.loss() for s in torch_sides}}
    jaxdl_side.finish()
    for name, loss in last_loss.items():
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite train loss of {name}: {loss}")

    batch_size = config.data.batch_size
    backend = trainer.backend
    results = {}
    for name in names:
        stats = window_stats(seconds[name])
        eps = batch_size / (stats["ms_per_step_median"] / 1e3)
        results[name] = {**stats, "examples_per_second": eps,
                         "window_examples_per_second": [batch_size / t for t in seconds[name]],
                         "first_loss": first_loss[name], "last_train_loss": last_loss[name],
                         "first_step_seconds": first_step_seconds[name]}
    for name in names[1:]:
        # jaxdl examples/s over this side's, window by adjacent window
        per_window = [side_s / jaxdl_s for side_s, jaxdl_s in zip(seconds[name],
                                                                   seconds["jaxdl"])]
        results[name]["jaxdl_ratio"] = (results["jaxdl"]["examples_per_second"]
                                        / results[name]["examples_per_second"])
        results[name]["jaxdl_ratio_per_window"] = per_window
        results[name]["jaxdl_ratio_per_window_median"] = float(np.median(per_window))
    torch_step = torch_sides[0].step if torch_sides else None
    return {
        "benchmark": "step_throughput_compare",
        "mode": (RANDOM_MODE if args.model else MODE).replace(
            "on device", "on device / as torch tensors"),
        **_run_fields(args, trainer, sizes, max_in_flight),
        "compare": args.compare,
        "window_steps": sizes,
        "torch": {"version": torch.__version__, "threads": threads, "device": device,
                  "memory_format": torch_step.memory_format if torch_step else None},
        "precision": config.precision,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "sides": results,
        "notes": notes,
        "config_overrides": [],
        "env": environment.describe(backend.devices, backend.kind),
        "jax": jax.__version__,
    }


def _run_fields(args, trainer, window_steps, max_in_flight) -> dict:
    """What every record says about the run: when, what, on which devices, how timed."""
    backend, batch_size = trainer.backend, trainer.config.data.batch_size
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "experiment": args.experiment,
        "backend": backend.kind,
        "platform": backend.devices[0].platform,
        "device_kind": backend.devices[0].device_kind,
        "num_devices": backend.num_devices,
        "batch_size": batch_size,
        "per_device_batch": batch_size // backend.num_devices,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": len(window_steps),
        "distinct_batches": args.batches,
        "max_in_flight": max_in_flight,
        "compile_seconds": trainer.compile_seconds,
    }


def compare_markdown(record: dict) -> str:
    devices = f"{record['num_devices']} x {record['platform']}"
    lines = ["| side | setting | batch | compile s | first step s | ms/step median [p10, p90] | "
             "examples/s | jaxdl / side: medians (per window: median, range) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in record["sides"].items():
        if name == "jaxdl":
            setting = f"{record['backend']}, {devices}"
            compile_s, first, ratio = f"{record['compile_seconds']:.1f}", "-", "1"
        else:
            setting = (f"{record['torch']['device']}, {record['torch']['threads']} threads, "
                       f"{record['torch']['memory_format']}")
            compile_s, first = "-", f"{r['first_step_seconds']:.1f}"
            pw = r["jaxdl_ratio_per_window"]
            ratio = (f"{r['jaxdl_ratio']:.2f} ({r['jaxdl_ratio_per_window_median']:.2f}, "
                     f"{min(pw):.2f}-{max(pw):.2f})")
        lines.append(f"| {name} | {setting} | {record['batch_size']} | {compile_s} | {first} | "
                     f"{r['ms_per_step_median']:.2f} [{r['ms_per_step_p10']:.2f}, "
                     f"{r['ms_per_step_p90']:.2f}] | {r['examples_per_second']:.0f} | "
                     f"{ratio} |")
    return "\n".join(lines)


def markdown_row(record: dict) -> str:
    devices = f"{record['num_devices']} x {record['platform']} ({record['device_kind']})"
    return (f"| {record['experiment']} | {record['backend']} | {devices} | "
            f"{record['batch_size']} ({record['per_device_batch']}) | "
            f"{record['compile_seconds']:.2f} | {record['ms_per_step_median']:.3f} "
            f"[{record['ms_per_step_p10']:.3f}, {record['ms_per_step_p90']:.3f}] | "
            f"{record['examples_per_second']:.0f} | {record['flops_per_step'] / 1e9:.3g} | "
            f"{record['achieved_tflops']:.3g} | "
            f"{'n/a' if record['mfu'] is None else format(record['mfu'], '.1%')} | "
            f"{record['memory_bytes_per_device'] / 2**20:.0f} |")


def _fail(error: BaseException) -> None:
    text = str(error).strip()
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import config as config_lib

    try:  # bad input (unknown experiment or key, wrong type or value): one line, status 2
        config = load_config(args, overrides)
    except (KeyError, AttributeError):  # what config_flags raises for an unknown key
        _fail(ValueError(f"unknown config key in {' '.join(overrides)}"))
    except Exception as e:  # noqa: BLE001 - flags, ConfigError, ImportError, ...
        _fail(e)
    set_host_devices(config)  # before the first JAX operation starts the backend

    import jax

    from jaxdl.training import environment, loop, parallel

    try:
        devices = parallel.select_devices(config.parallel.num_devices)
        config_lib.check_devices(config, len(devices))
    except ValueError as e:  # ConfigError included
        _fail(e)
    if args.compare:
        from jaxdl import data as data_lib

        if importlib.util.find_spec("torch") is None:
            _fail(ImportError("--compare torch needs PyTorch, an optional extra: "
                              "pip install -e '.[bench]'"))
        if data_lib.source_location(config.data.name) is None:
            print(f"skipped: --compare {args.compare} for {args.experiment} needs the "
                  f"{config.data.name} files, which are not on this machine (see README.md, "
                  "Data: lookup order; `python -m jaxdl.data list`)", file=sys.stderr)
            return {}
    compile_fields = {}
    if args.warm_compile:
        import tempfile

        from jaxdl import app
        cache = app.enable_compilation_cache(jax, tempfile.mkdtemp(prefix="jaxdl-bench-cache-"))
    trainer = loop.build(config)
    if args.warm_compile:
        misses = cache.misses
        warm = loop.build(config)  # same programs: read back from the cache
        compile_fields = {"compile_seconds_cold": trainer.compile_seconds,
                          "compile_seconds_warm": warm.compile_seconds,
                          "warm_cache_hits": cache.hits, "warm_cache_misses": cache.misses - misses}
        del warm
        print(f"# compile (train + eval step): cold {trainer.compile_seconds:.2f} s, warm "
              f"{compile_fields['compile_seconds_warm']:.2f} s from the persistent cache "
              f"({cache.hits} hits, {compile_fields['warm_cache_misses']} misses on the warm "
              "build)")
    max_in_flight = (config.parallel.max_in_flight if args.max_in_flight is None
                     else args.max_in_flight)
    if args.compare:
        record = compare_torch(trainer, config, args, max_in_flight)
        record.update(compile_fields)
        record["config_overrides"] = overrides
        print(f"# {record['mode']}; {record['repeats']} alternating windows of "
              f"{args.steps} timed steps per side after {args.warmup} warmup; "
              f"{record['precision']}; "
              f"{args.experiment}, global batch {record['batch_size']}; jax {jax.__version__}, "
              f"torch {record['torch']['version']}; load average "
              f"{record['loadavg_start'][0]:.2f} at start, {record['loadavg_end'][0]:.2f} "
              "at end")
        print(compare_markdown(record), flush=True)
        for note in record["notes"]:
            print(f"note: {note}")
        _append_json(args.json, record)
        return record
    timing = measure(trainer, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                     batches=args.batches, max_in_flight=max_in_flight)
    if not math.isfinite(timing["last_train_loss"]):
        raise FloatingPointError(f"non-finite train loss {timing['last_train_loss']}")

    backend = trainer.backend
    batch_size = config.data.batch_size
    record = {
        "benchmark": "step_throughput",
        "mode": RANDOM_MODE if args.model else MODE,
        **_run_fields(args, trainer, timing["window_steps"], max_in_flight),
        **timing,
        "examples_per_second": batch_size / (timing["ms_per_step_median"] / 1e3),
        **efficiency(trainer, timing["ms_per_step_median"]),
        "precision": config.precision,
        "config_overrides": overrides,
        "env": environment.describe(backend.devices, backend.kind),
        **compile_fields,
    }
    if not args.no_header:
        print(f"# {record['mode']}; compile excluded (reported); {record['repeats']} windows over "
              f"{args.steps} steps after {args.warmup} warmup, at most "
              f"{max_in_flight or 'unbounded'} steps in flight; jax {jax.__version__}")
        print(HEADER)
        print(SEPARATOR)
    print(markdown_row(record), flush=True)
    _append_json(args.json, record)
    return record


def _append_json(path: str | None, record: dict) -> None:
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
