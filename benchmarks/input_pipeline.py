"""Input-pipeline throughput, and how much of a training step waits for its input.

    python -m benchmarks.input_pipeline --experiment mnist_cnn [--steps 200] [--repeats 5] \
        [--workers N] [--paths device,host,stream] [--json FILE] [--config.KEY=VALUE ...]

Three paths feed the experiment's compiled train step (`jaxdl.training.loop.build`, the step
its runs use):
- `device`: the splits kept on the devices, each batch gathered there (`feeding.DeviceFeed`).
- `host`: numpy batches gathered on the host, placed on the devices by a prefetch thread
  (`feeding.HostFeed`, depth `config.data.prefetch`).
- `stream`: the training split written as PNG-encoded records to an ArrayRecord file, read
  back lazily by `streaming.RecordSplit` with `--workers` decoding threads, through the host
  feed. That is what a `tfds:` source with `streaming=True` does, minus TFDS's record
  parsing; Pillow decodes the PNGs.

For each path it measures (a) the feed alone: examples/s of batches made ready on the
devices, no step; (b) the step fed by it, against the same step on batches pre-placed before
timing (the mode of `benchmarks.step_throughput`). The input-wait share is
1 - t(pre-placed) / t(fed) of the median window times (negative = within noise, shown as
is), and `blocked` is the share of the fed loop's time spent blocked in `next(batches)`.
Windows of every path and of the pre-placed step alternate, round robin, so the drift of a
shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import step_throughput

PATHS = ("device", "host", "stream")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.input_pipeline",
                                     allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="digits_cnn")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per window set")
    parser.add_argument("--repeats", type=int, default=5, help="windows per path")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="stream: decoding threads")
    parser.add_argument("--json", default=None, help="append one JSON record (a line) here")
    args, rest = parser.parse_known_args(argv)
    paths = args.paths.split(",")
    if unknown := [p for p in paths if p not in PATHS]:
        parser.error(f"unknown --paths {unknown}; valid: {', '.join(PATHS)}")
    if min(args.steps, args.repeats, args.workers) < 1 or args.warmup < 0:
        parser.error("--steps, --repeats and --workers must be >= 1, --warmup >= 0")
    if bad := [a for a in rest if not a.startswith("--config.")]:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.paths = paths
    # What step_throughput.load_config reads of its own flags: none apply here.
    args.model, args.compare, args.backend, args.batch_size, args.batches = None, None, None, 0, 4
    return args, rest


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _decode(record: bytes):
    from PIL import Image

    label, png = int.from_bytes(record[:4], "little"), record[4:]
    image = np.asarray(Image.open(io.BytesIO(png)), np.float32) / 255.0
    return (image[..., None] if image.ndim == 2 else image), np.int64(label)


def stream_split(split, directory: Path, workers: int):
    """`split` (images in [0, 1], integer labels) as PNG records in one ArrayRecord file,
    read back by a `RecordSplit`."""
    from array_record.python import array_record_data_source, array_record_module

    from jaxdl.data import streaming

    path = directory / "train.array_record"
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for image, label in zip(split.inputs, split.targets):
        writer.write(int(label).to_bytes(4, "little") + _png(image))
    writer.close()
    records = array_record_data_source.ArrayRecordDataSource([str(path)])
    return streaming.RecordSplit(records, _decode, num_workers=workers, name="train")


class FedSteps:
    """The train step fed by one path's feed (or by pre-placed batches when `feed` is None),
    waiting on an older step every `max_in_flight` steps as the training loop does."""

    def __init__(self, trainer, feed, *, max_in_flight: int):
        import jax

        self.trainer, self.feed, self.max_in_flight = trainer, feed, max_in_flight
        if feed is None:
            placed = [trainer.backend.put_batch(trainer.train_batch(i)) for i in range(4)]
            jax.block_until_ready(placed)
            self.batches = (placed[i % len(placed)] for i in range(10**12))
        else:
            self.batches = feed.train("train", 0)
        # Each runner trains its own copy: the step donates the state it is given.
        self.state = trainer.backend.put_state(trainer.backend.get_state(trainer.state))

    def run(self, count: int) -> tuple[float, float]:
        """Seconds for `count` steps, and the part of them blocked on the next batch."""
        import jax

        waited = self.feed.wait_seconds if self.feed is not None else 0.0
        pending = []
        start = time.perf_counter()
        for _ in range(count):
            self.state, metrics = self.trainer.train_step(self.state, next(self.batches))
            pending.append(metrics)
            if len(pending) > self.max_in_flight:
                jax.block_until_ready(pending.pop(0))
        jax.block_until_ready((self.state, pending))
        seconds = time.perf_counter() - start
        blocked = (self.feed.wait_seconds - waited) if self.feed is not None else 0.0
        return seconds, blocked


def feed_alone(feed, steps: int) -> float:
    """Seconds per batch for the feed to make `steps` batches ready on the devices."""
    import jax

    batches = feed.train("train", 0)
    jax.block_until_ready(next(batches))  # compiles the device gather, starts the thread
    start = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(next(batches))
    seconds = (time.perf_counter() - start) / steps
    if hasattr(batches, "close"):
        batches.close()
    return seconds


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxdl import app

    try:  # bad input: one line, status 2
        config = step_throughput.load_config(args, overrides)
        app.prepare_process(config)  # the run's host-device split, before JAX starts
    except ValueError as e:  # ConfigError included
        step_throughput.fail(e)

    import jax

    from jaxdl.training import feeding, loop

    trainer = loop.build(config)
    batch = config.data.batch_size
    train = trainer.splits["train"]
    with tempfile.TemporaryDirectory() as scratch:
        splits = {"device": train, "host": train}
        if "stream" in args.paths:
            splits["stream"] = stream_split(train, Path(scratch), args.workers)
        feeds = {path: feeding.make_feed("device" if path == "device" else "host",
                                         trainer.backend, {"train": splits[path]},
                                         batch_size=batch,
                                         eval_batch_size=config.data.eval_batch_size,
                                         seed=config.seed, prefetch=config.data.prefetch)
                 for path in args.paths}
        alone = {path: feed_alone(feed, max(args.steps // 4, 1)) for path, feed in feeds.items()}
        runners = {"pre-placed": FedSteps(trainer, None,
                                          max_in_flight=config.parallel.max_in_flight)}
        runners.update({path: FedSteps(trainer, feeds[path],
                                       max_in_flight=config.parallel.max_in_flight)
                        for path in args.paths})
        windows = {name: [] for name in runners}
        blocked = {name: [] for name in runners}
        for runner in runners.values():
            runner.run(args.warmup)
        per_window = max(args.steps // args.repeats, 1)
        for _ in range(args.repeats):
            for name, runner in runners.items():
                seconds, waited = runner.run(per_window)
                windows[name].append(seconds / per_window)
                blocked[name].append(waited / seconds)
        for runner in runners.values():
            close = getattr(runner.batches, "close", None)
            if close is not None:
                close()
    pre = float(np.median(windows["pre-placed"]))
    rows = []
    for path in args.paths:
        fed = float(np.median(windows[path]))
        rows.append({"path": path, "feed_alone_examples_per_s": batch / alone[path],
                     "fed_ms_per_step": fed * 1e3, "pre_placed_ms_per_step": pre * 1e3,
                     "fed_examples_per_s": batch / fed,
                     "input_wait_share": 1.0 - pre / fed,
                     "blocked_share": float(np.median(blocked[path]))})
    record = {"benchmark": "input_pipeline", "experiment": args.experiment,
              "date": time.strftime("%Y-%m-%d"), "device_kind": jax.devices()[0].device_kind,
              "devices": trainer.backend.num_devices, "backend": trainer.backend.kind,
              "batch_size": batch, "steps_per_window": per_window, "repeats": args.repeats,
              "stream_workers": args.workers, "jax": jax.__version__, "rows": rows}
    print(f"{args.experiment}: batch {batch}, {trainer.backend.kind} over "
          f"{trainer.backend.num_devices} {jax.devices()[0].platform} device(s), "
          f"{args.repeats} windows of {per_window} steps per path")
    print("| path | feed alone examples/s | step fed ms | step pre-placed ms | "
          "fed examples/s | input-wait share | blocked in next() |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['path']} | {row['feed_alone_examples_per_s']:,.0f} | "
              f"{row['fed_ms_per_step']:.2f} | {row['pre_placed_ms_per_step']:.2f} | "
              f"{row['fed_examples_per_s']:,.0f} | {row['input_wait_share']:+.1%} | "
              f"{row['blocked_share']:.1%} |")
    step_throughput.append_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
