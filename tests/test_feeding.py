"""The two feeds: batches kept on the devices, or gathered on the host and prefetched. They
must hand the step exactly the pipeline's batches, so the choice changes speed, never results."""

import threading

import jax
import numpy as np
import pytest

from conftest import make_config
from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl.data import pipeline
from jaxdl.training import feeding, loop, parallel
from jaxdl.training.writers import read_metrics


def _splits():
    rng = np.random.default_rng(0)
    return {"train": data_lib.ArraySplit(rng.normal(size=(50, 3, 3, 1)).astype(np.float32),
                                         np.arange(50) % 7),
            "validation": data_lib.ArraySplit(rng.normal(size=(13, 3, 3, 1)).astype(np.float32),
                                              np.arange(13) % 7)}


def _feeds(kind):
    backend = parallel.Backend(kind, jax.devices(), max_in_flight=8)
    splits = _splits()
    return splits, backend, [
        feeding.make_feed(pipeline_kind, backend, splits, batch_size=8, eval_batch_size=4,
                          seed=3, prefetch=2)
        for pipeline_kind in ("host", "device")]


@pytest.mark.parametrize("kind", parallel.BACKENDS)
@pytest.mark.parametrize("start", [0, 5])  # 6 steps an epoch: 5 crosses an epoch boundary
def test_device_and_host_feeds_give_the_pipelines_batches(kind, start):
    splits, backend, (host, device) = _feeds(kind)
    streams = [host.train("train", start), device.train("train", start)]
    for step in range(start, start + 8):
        want = backend.put_batch({**pipeline.train_batch(splits["train"], 8, 3, step),
                                  "mask": np.ones(8, np.float32)})
        for got in (next(stream) for stream in streams):
            assert got.keys() == want.keys()
            for key in want:
                assert got[key].sharding == want[key].sharding, key
                np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    streams[0].close()


@pytest.mark.parametrize("kind", parallel.BACKENDS)
def test_eval_batches_are_padded_and_masked_alike(kind):
    splits, backend, (host, device) = _feeds(kind)
    want = [backend.put_batch(b) for b in pipeline.eval_batches(splits["validation"], 4)]
    for feed in (host, device):
        got = list(feed.eval("validation"))
        assert len(got) == len(want) == 4
        for g, w in zip(got, want):
            for key in w:
                np.testing.assert_array_equal(np.asarray(g[key]), np.asarray(w[key]))
    # 13 examples in batches of 4: the last batch has one real row.
    np.testing.assert_array_equal(np.asarray(got[-1]["mask"]).reshape(-1), [1, 0, 0, 0])


def test_prefetcher_raises_the_producers_error_at_its_batch():
    def batches():
        yield 1
        yield 2
        raise OSError("disk gone")

    waits = []
    fetched = feeding._Prefetcher(batches(), depth=2, on_wait=waits.append)
    assert next(fetched) == 1 and next(fetched) == 2
    with pytest.raises(OSError, match="disk gone"):
        next(fetched)
    assert len(waits) == 3 and all(w >= 0 for w in waits)


def test_prefetcher_stays_at_most_depth_ahead_and_stops_on_close():
    produced = []
    more = threading.Event()

    def batches():
        for i in range(1000):
            produced.append(i)
            more.set()
            yield i

    fetched = feeding._Prefetcher(batches(), depth=2, on_wait=lambda s: None)
    assert next(fetched) == 0
    for _ in range(50):  # give the thread every chance to run ahead
        more.wait(0.01)
        more.clear()
    # One consumed, two queued, one produced and waiting for room: never more.
    assert len(produced) <= 4, produced
    fetched.close()
    fetched._thread.join(timeout=5)
    assert not fetched._thread.is_alive()


def test_device_feed_refuses_a_lazily_read_split():
    class Lazy:
        def __len__(self):
            return 8

        def take(self, indices):
            raise AssertionError("not read")

    backend = parallel.Backend("sharded", jax.devices(), max_in_flight=8)
    with pytest.raises(ValueError, match="pipeline='host'"):
        feeding.make_feed("device", backend, {"train": Lazy()}, batch_size=4,
                          eval_batch_size=4, seed=0, prefetch=2)
    lazy = feeding.make_feed("auto", backend, {"train": Lazy()}, batch_size=4,
                             eval_batch_size=4, seed=0, prefetch=2)
    in_memory = feeding.make_feed("auto", backend, _splits(), batch_size=4,
                                  eval_batch_size=4, seed=0, prefetch=2)
    assert isinstance(lazy, feeding.HostFeed) and isinstance(in_memory, feeding.DeviceFeed)


@pytest.mark.slow
def test_host_and_device_pipelines_train_the_same_run(tmp_path):
    shrink = {"train.duration": "12 steps", "train.eval_every": "6 steps",
              "train.log_every": "3 steps", "logging.progress": False,
              "logging.tensorboard": False, "logging.plot": False,
              "parallel.backend": "pmap"}
    records = {}
    for kind in ("host", "device"):
        config = make_config("digits_mlp", **shrink, **{"data.pipeline": kind,
                                                         "data.preview": kind == "device"})
        summary = loop.train_and_evaluate(config, tmp_path / kind)
        assert summary["segment_input_wait_seconds"] >= 0
        records[kind] = read_metrics(tmp_path / kind / "metrics.jsonl")
    # The preview (asked of one run) is a PNG; it changes nothing about training.
    assert (tmp_path / "device" / loop.PREVIEW_FILENAME).read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "host" / loop.PREVIEW_FILENAME).exists()
    assert len(records["host"]) == len(records["device"]) > 4
    for a, b in zip(records["host"], records["device"]):
        assert (a["step"], a["split"]) == (b["step"], b["split"])
        assert a["loss"] == b["loss"], (a, b)  # the same batches, the same program: bitwise


def test_preview_refuses_non_images_before_writing(tmp_path):
    config = make_config("digits_mlp", **{"data.preview": True, "data.name": "breast_cancer",
                                          "model.num_classes": 2})
    with pytest.raises(config_lib.ConfigError, match="needs float NHWC images"):
        loop.train_and_evaluate(config, tmp_path / "tabular")
    assert not (tmp_path / "tabular").exists()
