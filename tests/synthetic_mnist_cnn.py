"""mnist_cnn's pinned config on MNIST-shaped random images, for tests that need its parallel
setting and step cost without the MNIST files: `python tests/synthetic_mnist_cnn.py --workdir=DIR`.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import mnist_cnn  # noqa: E402
from jaxdl import data as data_lib  # noqa: E402

EXAMPLES = 20_000


@data_lib.register_source("synthetic_mnist")
def load() -> data_lib.Dataset:
    """Random 28x28x1 images with labels that depend on them (a learnable task)."""
    rng = np.random.default_rng(0)
    images = rng.random((EXAMPLES, 28, 28, 1), dtype=np.float32)
    labels = (images[:, :14].mean(axis=(1, 2, 3)) * 40).astype(np.int32) % 10
    return data_lib.Dataset(name="synthetic_mnist", features=images, targets=labels,
                            num_classes=10, description="random MNIST-shaped images")


def get_config():
    config = mnist_cnn.get_config()
    config.data.name = "synthetic_mnist"
    config.data.validation_fraction = 0.25
    config.data.test_fraction = 0.0
    config.data.data_dir = ""
    return config


if __name__ == "__main__":
    from jaxdl import app

    app.run(get_config)
