"""The `synthetic` data source (jaxdl/data/synthetic.py): random rows of a given shape, a pure
function of its seed, for timing a model with no dataset file."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl import data


def _load(**options):
    return data.load_source("synthetic", **{"examples": 6, "validation_examples": 2, "seed": 0,
                                            **options})


def test_images_have_the_shape_classes_and_split_asked_for():
    dataset = _load(kind="images", shape=(5, 4, 3), num_classes=7)
    assert dataset.features.shape == (6, 5, 4, 3) and dataset.features.dtype == np.float32
    assert dataset.targets.shape == (6,) and dataset.num_classes == 7
    assert 0 <= dataset.targets.min() and dataset.targets.max() < 7
    features, targets = dataset.predefined_splits["validation"]
    assert features.shape == (2, 5, 4, 3) and targets.shape == (2,)
    np.testing.assert_array_equal(_load(kind="images", shape=(5, 4, 3), num_classes=7).features,
                                  dataset.features)  # the same seed, the same rows
    assert not np.array_equal(_load(kind="images", shape=(5, 4, 3), num_classes=7,
                                    seed=1).features, dataset.features)


def test_tokens_targets_are_the_stream_one_step_later():
    dataset = _load(kind="tokens", shape=(4,), vocabulary="abc")
    assert dataset.features.shape == dataset.targets.shape == (6, 4)
    np.testing.assert_array_equal(dataset.features.reshape(-1)[1:],
                                  dataset.targets.reshape(-1)[:-1])
    assert dataset.metadata == {"vocabulary": "abc", "vocabulary_size": 3}
    assert "synthetic" in data.source_names()


@pytest.mark.parametrize("options, match", [
    (dict(kind="audio", shape=(4,)),
     "synthetic data kind 'audio'; valid: images, tokens, words"),
    (dict(kind="images", shape=(4,)), "num_classes >= 1"),
    (dict(kind="tokens", shape=(2, 2), vocabulary="ab"), r"shape \(window,\)"),
])
def test_bad_options_are_refused_in_one_line(options, match):
    with pytest.raises(ValueError, match=match):
        _load(**options)
