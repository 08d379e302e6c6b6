"""ResNet-50 (v1.5) on ImageNet (ILSVRC-2012) with the standard large-batch recipe.

Data (once, about 150 GB): ImageNet cannot be downloaded by TFDS. Register at
https://image-net.org/download-images, put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar into D/downloads/manual (TFDS's manual_dir), then
    python -m jaxdl.data prepare imagenet2012 --data_dir D --file_format array_record
Command:
    python -m experiments.imagenet_resnet50 --workdir=runs/imagenet_resnet50 \\
        --config.data.data_dir=D

Recipe: SGD with Nesterov momentum 0.9, batch 1024, learning rate 0.1 x 1024/256 = 0.4 with
a 5-epoch linear warmup (Goyal et al. 2017, "Accurate, Large Minibatch SGD"), then cosine
decay to 0 at 90 epochs, label smoothing 0.1, zero-initialised last BatchNorm of each block
and no weight decay on biases and BatchNorm parameters (He et al. 2019, "Bag of Tricks");
weight decay 1e-4 (both papers; 5e-5 is the value used with LARS at larger batches); bfloat16
compute with float32 parameters. The ILSVRC validation set (50,000 images) is the test split;
1% of the training images are held out for validation (as big_vision's "minival").
Augmentation here is a horizontal flip and per-channel normalisation with the usual ImageNet
statistics; the Inception-style random-resized crop of the papers is not in jaxdl yet.

Data path: the splits are streamed (`options.streaming=True`): each batch's records are read
from the prepared ArrayRecord files and decoded (resize of the shorter side to 224, central
square) by host threads, prefetched onto the devices ahead of the step (the 'auto' pipeline
picks the host feed for streamed splits); each process reads only its own rows.

Status: NOT trained on ImageNet: the data is not available on the machine jaxdl is developed
on. This config has been run end to end only on `tfds.testing.mock_data` at a tiny image
size, read into memory (tests/test_tfds.py), and the streaming path on a tiny prepared
dataset (tests/test_streaming.py); both check the wiring, not the accuracy. No expected
accuracy is claimed here beyond the papers' (about 76-77% top-1 for this recipe).
"""

import ml_collections

BATCH_SIZE = 1024
BASE_LEARNING_RATE = 0.1  # per 256 examples (linear scaling rule)
# The usual per-channel statistics of ImageNet's training images (torchvision, big_vision).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="resnet50", num_classes=1000, bn_momentum=0.9, bn_epsilon=1e-5,
                   se_ratio=0.0, zero_init_last_bn=True)
    c.task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.1)
    c.data = dict(name="tfds:imagenet2012:5.1.0", split_seed=0, validation_fraction=0.0,
                  test_fraction=0.0, batch_size=BATCH_SIZE, eval_batch_size=1024,
                  augmentation="horizontal_flip(p=0.5)"
                               f"+normalize(mean={IMAGENET_MEAN},std={IMAGENET_STD})",
                  options=dict(train_split="train[1%:]", validation_split="train[:1%]",
                               test_split="validation", image_size=224, streaming=True,
                               num_workers=0))
    c.train = dict(duration="90 epochs", log_every="100 steps", eval_every="1 epoch")
    c.checkpoint = dict(every="1 epoch", keep_last=2, keep_best=1,
                        monitor="validation/accuracy", mode="max")
    c.optimizer = dict(name="nesterov", learning_rate=BASE_LEARNING_RATE * BATCH_SIZE / 256,
                       momentum=0.9, weight_decay=1e-4, weight_decay_mask="no_bias_no_norm")
    c.schedule = dict(name="warmup_cosine", warmup="5 epochs")
    c.precision = "bf16"
    c.parallel = dict(backend="sharded")
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
