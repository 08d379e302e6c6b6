"""A trained run's outputs for new inputs:

    python -m jaxdl.predict --run DIR --input FILE.npy|IMAGES_DIR --output FILE.npy|FILE.csv
                            [--checkpoint best|latest|STEP] [--import MODULE]

The inputs are raw examples scaled like the run's data (the run's eval-time preprocessing,
such as `normalize`, applies): a .npy array [N, ...], or a folder of images (PNG, JPEG,
BMP, GIF; sorted by name) read as greyscale or RGB as the run's inputs have 1 or 3
channels, and scaled from 0..255 to the value range of the run's train split. No image is
resized: one of another size is refused, naming the size expected. `--output` gets the
model's outputs (logits for a classifier) as float32 .npy, or a .csv with one row per
input: its name (file or row index), for a classifier the predicted class, then each
output. Bad input (not a run, a checkpoint it lacks, inputs of the wrong shape, which the
message names with the expected shape and scale) is one `error:` line, exit status 2,
before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxdl.schema import ConfigError
from jaxdl.trained import ToolParser

EXIT_BAD_INPUT = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
OUTPUT_SUFFIXES = (".npy", ".csv")
PIXEL_MAX = 255.0  # 8-bit images


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = ToolParser(prog="python -m jaxdl.predict",
                        description="A trained run's outputs for new inputs.")
    parser.add_argument("--input", required=True, help="a .npy array [N, ...] or a folder "
                        "of images")
    parser.add_argument("--output", required=True, help="where the outputs go: .npy or .csv")
    return parser.parse_args(argv)


def read_images(folder: Path, spec: dict) -> tuple[np.ndarray, list[str]]:
    """The images of `folder` as the run's inputs ([N, H, W, C] in the train split's value
    range), and their file names."""
    from PIL import Image
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"--input={folder}: no images ({', '.join(IMAGE_SUFFIXES)}) "
                          "in it")
    shape = spec["shape"]
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise ConfigError(f"--input={folder}: this run takes inputs of shape "
                          f"{list(shape)}, not images; give a .npy array")
    low, high = spec["range"]
    images = []
    for path in files:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L" if shape[-1] == 1 else "RGB"), np.float32)
        pixels = pixels.reshape(*pixels.shape[:2], shape[-1])
        if pixels.shape != tuple(shape):
            raise ConfigError(f"--input={path}: an image of {pixels.shape[1]}x"
                              f"{pixels.shape[0]} pixels; this run takes {shape[1]}x{shape[0]} "
                              "(images are not resized)")
        images.append(low + pixels / PIXEL_MAX * (high - low))
    return np.stack(images).astype(spec["dtype"]), [p.name for p in files]


def read_inputs(path: Path, spec: dict) -> tuple[np.ndarray, list[str]]:
    if path.is_dir():
        return read_images(path, spec)
    if path.suffix != ".npy" or not path.is_file():
        raise ConfigError(f"--input={path}: give an existing .npy file or a folder of "
                          "images")
    try:
        inputs = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ConfigError(f"--input={path}: not a numpy array file ({e})") from None
    return inputs, [str(i) for i in range(len(inputs))] if inputs.ndim else []


def write_outputs(path: Path, outputs: np.ndarray, names: list[str], classes: bool) -> None:
    if path.suffix == ".npy":
        np.save(path, outputs)
        return
    flat = outputs.reshape(len(outputs), -1)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["input", *(["predicted"] if classes else []),
                         *(f"output_{i}" for i in range(flat.shape[1]))])
        for name, row in zip(names, flat):
            writer.writerow([name, *([int(row.argmax())] if classes else []),
                             *(f"{v:.6g}" for v in row)])


def main(argv: Sequence[str] | None = None) -> int:
    # orbax warns on every read-only checkpoint it opens; the one line that matters is ours.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
        output = Path(args.output)
        if output.suffix not in OUTPUT_SUFFIXES:
            raise ConfigError(f"--output={output}: give a .npy or .csv file name")
        if not output.parent.is_dir():
            raise ConfigError(f"--output={output}: its folder does not exist")
        from jaxdl import app, trained
        app.import_modules(args.imports)
        run = trained.load_run(args.run, args.checkpoint)
        inputs, names = read_inputs(Path(args.input), run.input_spec)
        outputs = run.apply(inputs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not isinstance(outputs, np.ndarray):
        print("error: this run's model returns several outputs; use jaxdl.api.predict",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    write_outputs(output, outputs, names, classes=run.config.task.name == "classification")
    print(f"{len(outputs)} outputs of shape {list(outputs.shape[1:])} from step {run.step} "
          f"({args.checkpoint}) in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
