"""The classification task's end-of-run files: the confusion matrix (JSON and PNG) agrees
with the logged final test accuracy, and the misclassified-examples grid exists for images
only."""

import io
import json

import jax
import numpy as np
import pytest
from conftest import make_config

from jaxdl import plots
from jaxdl.plots import image_grid_png
from jaxdl.training import checkpoints, loop

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUIET = {"logging.tensorboard": False, "logging.progress": False}


def assert_png(path):
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        assert image.width > 100 and image.height > 100


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short digits_cnn run on the 4 forced devices. Its strong normalisation (inputs x10)
    makes the report wrong unless it feeds the model what the eval step feeds it."""
    workdir = tmp_path_factory.mktemp("digits_cnn")
    config = make_config("digits_cnn", **QUIET, **{
        "train.duration": "30 steps", "train.eval_every": "15 steps",
        "checkpoint.every": "0 steps", "task.misclassified_shown": 6,
        "data.augmentation": "normalize(mean=(0.5,),std=(0.1,))"})
    grids = []  # what misclassified.png draws: the images, their captions, the page title

    def spy(images, titles, path, *, title=""):
        grids.append({"images": np.asarray(images), "titles": list(titles), "path": path,
                      "title": title})
        return image_grid_png(images, titles, path, title=title)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "image_grid_png", spy)
        summary = loop.train_and_evaluate(config, workdir)
    RUN_GRIDS[workdir] = grids
    return workdir, summary, config


RUN_GRIDS = {}


def test_confusion_matrix_agrees_with_the_logged_test_accuracy(digits_run):
    workdir, summary, _ = digits_run
    report = json.loads((workdir / "confusion_matrix.json").read_text())
    counts = np.asarray(report["counts"])
    test = summary["final"]["test"]
    assert report["split"] == "test" and report["step"] == summary["steps"] == 30
    assert counts.shape == (10, 10)
    assert counts.sum() == test["examples"] == 361
    # Same examples, same model, same inputs: the same number right, not just close.
    assert np.trace(counts) == round(test["accuracy"] * test["examples"])
    assert np.trace(counts) / counts.sum() == pytest.approx(test["accuracy"], abs=1e-9)
    assert report["accuracy"] == pytest.approx(test["accuracy"], abs=1e-9)
    # Row i holds every test example of class i.
    _, splits = loop.load_splits(digits_run[2])
    np.testing.assert_array_equal(counts.sum(axis=1),
                                  np.bincount(splits["test"].targets, minlength=10))


def test_pngs_are_written_and_valid(digits_run):
    workdir, summary, _ = digits_run
    assert summary["final"]["test"]["accuracy"] < 1.0  # 30 steps: some digits are wrong
    assert_png(workdir / "confusion_matrix.png")
    assert_png(workdir / "misclassified.png")


def test_tabular_inputs_get_a_matrix_but_no_image_grid(tmp_path):
    config = make_config("digits_mlp", **QUIET, **{
        "data.name": "breast_cancer", "model.num_classes": 2, "train.duration": "3 steps",
        "train.eval_every": "3 steps", "checkpoint.every": "0 steps"})
    summary = loop.train_and_evaluate(config, tmp_path)
    counts = np.asarray(json.loads((tmp_path / "confusion_matrix.json").read_text())["counts"])
    assert counts.shape == (2, 2) and counts.sum() == summary["final"]["test"]["examples"]
    assert_png(tmp_path / "confusion_matrix.png")
    assert not (tmp_path / "misclassified.png").exists()


def test_plots_handle_no_images_and_many_classes(tmp_path):
    """A perfect classifier has nothing to show; 40 classes are drawn without numbers."""
    from jaxdl import plots

    assert_png(plots.image_grid_png(np.zeros((0, 8, 8, 1)), [], tmp_path / "none.png"))
    counts = np.diag(np.arange(1, 41))
    assert_png(plots.matrix_png(counts, tmp_path / "big.png", title="40 classes"))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        plots.image_grid_png(np.zeros((2, 8, 8, 2)), ["a", "b"], tmp_path / "bad.png")


def test_misclassified_png_shows_the_most_confident_mistakes(digits_run):
    """misclassified.png's tiles are test images the final model truly gets wrong, titled
    `true -> predicted (p)`, the most confident first, as many as task.misclassified_shown."""
    workdir, summary, config = digits_run
    (grid,) = RUN_GRIDS[workdir]
    assert grid["path"] == workdir / "misclassified.png"
    # The final weights' predictions on the test split, the eval step's normalisation by hand.
    _, splits = loop.load_splits(config)
    test = splits["test"]
    weights, step = checkpoints.read_weights(workdir)
    assert step == summary["steps"]
    trainer = loop.build(config)
    logits = trainer.task.model.apply(weights, (test.inputs - 0.5) / 0.1, train=False)
    probabilities = np.asarray(jax.nn.softmax(np.asarray(logits, np.float64)))
    predicted = probabilities.argmax(-1)
    wrong = np.flatnonzero(predicted != test.targets)
    assert len(wrong) == round((1 - summary["final"]["test"]["accuracy"]) * len(test))
    shown = config.task.misclassified_shown
    assert len(wrong) > shown, "too few mistakes to test the choice of the most confident"
    assert len(grid["images"]) == len(grid["titles"]) == shown
    assert grid["title"] == (f"test: the {shown} most confident of {len(wrong)} misclassified, "
                             "true -> predicted (p)")
    confidence = probabilities[wrong, predicted[wrong]]
    expected = wrong[np.argsort(-confidence, kind="stable")][:shown]
    for image, caption, index in zip(grid["images"], grid["titles"], expected):
        np.testing.assert_array_equal(image, test.inputs[index])  # the raw test image
        true, rest = caption.split(" -> ")
        guess, p = rest.split(" ")
        assert (int(true), int(guess)) == (test.targets[index], predicted[index])
        assert int(true) != int(guess)
        assert float(p.strip("()")) == pytest.approx(probabilities[index, predicted[index]],
                                                     abs=0.005 + 1e-4)
