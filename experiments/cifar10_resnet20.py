"""ResNet-20 on CIFAR-10 with He et al.'s recipe (Deep Residual Learning, 2015, section 4.2).

Command (CIFAR-10 prepared for TFDS first, on a machine with network; README: Data):
    python -m jaxdl.data prepare cifar10 --data_dir ~/tensorflow_datasets
    python -m experiments.cifar10_resnet20 --workdir=runs/cifar10_resnet20

Recipe, as in the paper: SGD with momentum 0.9, batch 128, learning rate 0.1 divided by 10
at 32k and 48k iterations, 64k iterations in all, weight decay 1e-4 (on every weight, as in
the paper's Caffe/Torch setups), 4-pixel zero padding with a random 32x32 crop and a
horizontal flip; option-A (zero-padding) shortcuts. The paper chose this schedule on a
45k/5k train/validation split, which this config keeps (5,000 of the 50,000 training
images are held out; the 10,000 test images are the test split). It subtracted the
per-pixel mean; here each channel is normalised with the commonly published CIFAR-10
training-set mean and standard deviation.

Expected result: the paper reports 8.75% test error, i.e. 91.25% accuracy (its Table 6,
trained on all 50k images). That is the paper's number, not one measured here: CIFAR-10
cannot be downloaded on the machine jaxdl is developed on (no network), so this experiment
has been run end to end only on `tfds.testing.mock_data` (random images, a few steps;
tests/test_tfds.py), which checks the wiring, not the accuracy.
"""

import ml_collections

# Per-channel mean and standard deviation of the 50,000 CIFAR-10 training images, as
# commonly published (not computed here: the data is not available offline).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(name="resnet20", num_classes=10, bn_momentum=0.9, bn_epsilon=1e-5,
                   se_ratio=0.0, zero_init_last_bn=False)
    c.task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.0)
    c.data = dict(name="tfds:cifar10:3.0.2", split_seed=0, validation_fraction=5000 / 50000,
                  test_fraction=0.0, batch_size=128, eval_batch_size=1000,
                  augmentation="random_crop(pad=4,pad_mode=zeros)+horizontal_flip(p=0.5)"
                               f"+normalize(mean={CIFAR10_MEAN},std={CIFAR10_STD})",
                  options=dict(train_split="train", test_split="test", validation_split="",
                               image_size=0))
    c.train = dict(duration="64000 steps", log_every="100 steps", eval_every="2000 steps")
    c.checkpoint = dict(every="2000 steps", keep_last=2, keep_best=1,
                        monitor="validation/accuracy", mode="max")
    c.optimizer = dict(name="momentum", learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                       weight_decay_mask="all")
    c.schedule = dict(name="piecewise", boundaries="32000 steps, 48000 steps", decay_factor=0.1)
    c.precision = "fp32"
    c.parallel = dict(backend="sharded")
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
