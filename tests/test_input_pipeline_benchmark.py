"""benchmarks.input_pipeline runs (a tiny config) and its stream path reads the split back."""

import numpy as np

from benchmarks import input_pipeline
from conftest import FORCED_DEVICES
from jaxdl import data as data_lib


def test_stream_split_reads_back_the_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    split = data_lib.ArraySplit(rng.uniform(size=(10, 5, 4, 1)).astype(np.float32),
                                rng.integers(0, 7, size=10))
    stream = input_pipeline.stream_split(split, tmp_path, workers=2)
    rows = np.array([9, 0, 3, 3])
    got = stream.take(rows)
    np.testing.assert_array_equal(got["targets"], split.targets[rows])
    # PNG keeps 8 bits: within half a grey level.
    np.testing.assert_allclose(got["inputs"], split.inputs[rows], atol=0.5 / 255 + 1e-7)


def test_benchmark_reports_every_path(tmp_path):
    out = tmp_path / "record.jsonl"
    record = input_pipeline.main(["--experiment", "digits_mlp", "--steps", "4",
                                  "--repeats", "2", "--warmup", "1", "--json", str(out)])
    assert [row["path"] for row in record["rows"]] == list(input_pipeline.PATHS)
    assert record["devices"] == FORCED_DEVICES
    for row in record["rows"]:
        assert row["feed_alone_examples_per_s"] > 0 and row["fed_ms_per_step"] > 0
        assert 0.0 <= row["blocked_share"] <= 1.0
    assert out.read_text().count("\n") == 1
