"""ResNet-56 on CIFAR-10: cifar10_resnet20's recipe (He et al. 2015) with 56 layers.

Command (CIFAR-10 prepared for TFDS first; README: Data):
    python -m experiments.cifar10_resnet56 --workdir=runs/cifar10_resnet56

Expected result: the paper reports 6.97% test error, i.e. 93.03% accuracy (its Table 6).
That is the paper's number, not one measured here: CIFAR-10 is not available offline on
the machine jaxdl is developed on, so this experiment has been run end to end only on
`tfds.testing.mock_data` (tests/test_tfds.py), which checks the wiring, not the accuracy.
"""

import ml_collections

from experiments import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
    c = cifar10_resnet20.get_config()  # the same recipe; only the depth differs
    c.model.name = "resnet56"
    return c


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
