"""`--model NAME`: a model family timed with its experiment's config on random data of the
right shape (the `synthetic` source, jaxdl/data/synthetic.py), so no dataset file is
needed; the step is still the one the trainer compiles for that config.

    mlp          experiments/digits_mlp.py         8x8x1 images, 10 classes, batch 64
    mnist_cnn    experiments/mnist_cnn.py          28x28x1, 10 classes, batch 128 (alias: cnn)
    mnist_speedrun  experiments/mnist_speedrun.py  28x28x1, 10 classes, batch 128 (BatchNorm)
    resnet20/56  experiments/cifar10_resnet20/56   32x32x3, 10 classes, batch 128
    resnet50     experiments/imagenet_resnet50.py  224x224x3, 1000 classes, batch 1024, bf16
    vgg16        imagenet_resnet50's recipe, model vgg16 (dropout 0.5)
    densenet121  imagenet_resnet50's recipe, model densenet121
    lstm_lm      experiments/shakespeare_char_lstm.py (cpu): batch 32 x 100 characters,
                 1 LSTM layer of 256, vocabulary 84 (the corpus's), Adam, clip 1.0
    transformer_lm  experiments/shakespeare_char_transformer.py: batch 32 x 64 characters
                 (its context window), 4 pre-LN blocks of width 80, vocabulary 84
    dcgan        experiments/mnist_dcgan.py: batch 64, the GAN task's D + G step
    vae          experiments/mnist_vae.py          28x28x1 in [0, 1], batch 128
    seq2seq_attention  experiments/dates_seq2seq.py: batch 64 of sources as wide as the
                 experiment's (29 characters of 58) and targets of 11 tokens (14 ids),
                 LSTM 64 with additive attention; the eval step decodes greedily

Everything else (optimizer, schedule, precision, parallel settings, on-device
augmentation) is the experiment's; durations given in epochs count epochs of the small
synthetic set (`--batches` batches), which moves only where the schedule is, not the work
of a step. `--config.KEY=VALUE` shrinks a family (e.g. `--config.model.hidden_size=8
--config.data.options.shape="(6,)"` for lstm_lm; the data's shape is
`config.data.options.shape`). VGG-16, DenseNet-121 and ResNet-50 at their ImageNet shapes
were not compiled on the 2-core CPU dev machine (only shrunken smoke runs); they are meant
for an accelerator.
"""

from __future__ import annotations

import importlib

from jaxdl.data import synthetic

SYNTHETIC_SOURCE = synthetic.NAME
# The random rows are a pure function of this seed, the same for every family and run.
DATA_SEED = 0


def _experiment(name: str):
    return importlib.import_module(f"experiments.{name}")


def _synthetic_data(config, *, kind: str, shape: tuple[int, ...], num_classes: int = 0,
                    vocabulary: str = "", target_vocabulary: str = ""):
    """`config` with its data section replaced by the `synthetic` source of this shape:
    batch size and augmentation are the experiment's, the eval batch is the train batch
    (only compiled here), and the example counts are filled in by `cli.load_config` from
    the batch size and `--batches`."""
    data = config.data
    config.data = dict(
        name=SYNTHETIC_SOURCE, split_seed=0, validation_fraction=0.0, test_fraction=0.0,
        batch_size=data.batch_size, eval_batch_size=data.batch_size,
        augmentation=data.augmentation, data_dir="",
        options=dict(kind=kind, shape=tuple(shape), num_classes=num_classes,
                     vocabulary=vocabulary, examples=0, validation_examples=0,
                     seed=DATA_SEED, **({"target_vocabulary": target_vocabulary}
                                        if target_vocabulary else {})))
    return config


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


def _char_family(config, window: int):
    """`config` (a Shakespeare character experiment's) on windows of `window` characters of
    a random text over a vocabulary of the model's size (the corpus's 84 characters), the
    prompt's among them."""
    prompt = config.task.sample_prompt
    printable = "".join(chr(i) for i in range(32, 127)) + "\n"
    extra = [ch for ch in printable if ch not in prompt]
    vocabulary = "".join(sorted(set(prompt) | set(extra[:config.model.vocab_size
                                                         - len(set(prompt))])))
    return _synthetic_data(config, kind="tokens", shape=(window,), vocabulary=vocabulary)


def char_lstm_config():
    """experiments/shakespeare_char_lstm.py's CPU variant (1 layer of 256, embedding 32,
    batch 32, Adam, clip 1.0), on windows of 100 characters."""
    return _char_family(_experiment("shakespeare_char_lstm").get_config("cpu"), 100)


def char_transformer_config():
    """experiments/shakespeare_char_transformer.py (4 blocks of width 80, batch 32, Adam,
    clip 1.0), on windows of its context length (64 characters)."""
    config = _experiment("shakespeare_char_transformer").get_config()
    return _char_family(config, config.model.max_len)


def seq2seq_attention_config():
    """experiments/dates_seq2seq.py (additive attention, greedy decoding at evaluation) on
    random token pairs: sources as wide as the experiment's data and over as many
    characters, targets of its length and target vocabulary."""
    from jaxdl.data import dates

    c = _experiment("dates_seq2seq").get_config()
    width = dates.load_dates(**c.data.options).features.shape[1]
    return _synthetic_data(c, kind="pairs", shape=(width, dates.TARGET_LENGTH),
                           vocabulary="".join(dates.SOURCE_VOCABULARY[1:]),
                           target_vocabulary="".join(dates.TARGET_VOCABULARY[3:]))


# ImageNet-shaped families without an experiment of their own take imagenet_resnet50's
# recipe (Nesterov SGD, label smoothing 0.1, warmup cosine, bf16, batch 1024) with the
# model swapped; model fields as torchvision's defaults.
IMAGENET = ("imagenet_resnet50", (224, 224, 3), 1000)
MODEL_FAMILIES = {
    "mlp": _image_family("digits_mlp", (8, 8, 1), 10),
    "mnist_cnn": _image_family("mnist_cnn", (28, 28, 1), 10),
    "cnn": _image_family("mnist_cnn", (28, 28, 1), 10),
    "mnist_speedrun": _image_family("mnist_speedrun", (28, 28, 1), 10),
    "resnet20": _image_family("cifar10_resnet20", (32, 32, 3), 10),
    "resnet56": _image_family("cifar10_resnet56", (32, 32, 3), 10),
    "resnet50": _image_family(*IMAGENET),
    "vgg16": _image_family(*IMAGENET, model=dict(name="vgg16", num_classes=1000,
                                                 dropout_rate=0.5)),
    "densenet121": _image_family(*IMAGENET, model=dict(name="densenet121", num_classes=1000,
                                                       bn_momentum=0.9, dropout_rate=0.0)),
    "lstm_lm": char_lstm_config,
    "transformer_lm": char_transformer_config,
    # mnist_dcgan monitors the Fréchet distance, which needs a classifier run (none here).
    "dcgan": _image_family("mnist_dcgan", (28, 28, 1), 10, monitor="validation/g_loss"),
    "vae": _image_family("mnist_vae", (28, 28, 1), 10),
    "seq2seq_attention": seq2seq_attention_config,
}
# --model names with a PyTorch twin in benchmarks/torch_twins, and experiments whose
# configs it mirrors.
COMPARABLE = ("mnist_cnn", "cnn", "mnist_speedrun", "resnet20", "resnet56", "resnet50", "lstm_lm", "dcgan")
