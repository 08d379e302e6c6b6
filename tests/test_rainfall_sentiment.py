"""Rainfall-runoff windows and sentiment tokens: no leakage, aligned windows, train-only
statistics and vocabulary, NSE, and both experiments end to end through the CLI."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, data_path, make_config, run_cli, stderr_tail

from jaxdl import data
from jaxdl.data import files, mnist, rainfall, sentiment
from jaxdl.tasks import regression

SHARED = data_path()
HAS_RAINFALL = (SHARED / "rainfall-runoff" / rainfall.FILENAME).is_file()
HAS_SENTIMENT = (SHARED / "sentiment" / sentiment.CORPORA["movie_reviews"][0]).is_file()
needs_rainfall = pytest.mark.skipif(not HAS_RAINFALL,
                                    reason=f"{SHARED}/rainfall-runoff absent")
needs_sentiment = pytest.mark.skipif(not HAS_SENTIMENT,
                                     reason=f"{SHARED}/sentiment absent")

SPLIT_OPTIONS = {"validation_years": 1, "test_years": 2}


def _table(years=(2000, 2004), seed=0):
    """Synthetic daily table: dates of `years` (first..last inclusive), random columns."""
    dates = np.arange(np.datetime64(f"{years[0]}-01-01"), np.datetime64(f"{years[1] + 1}-01-01"))
    rng = np.random.default_rng(seed)
    columns = {name: rng.normal(size=len(dates)) for name in ("tmax", "tmin", "tmean", "Prec")}
    columns["Q"] = rng.gamma(2.0, size=len(dates))
    return dates, columns


def test_nse_perfect_mean_and_hand_computed():
    observed = np.array([1.0, 2.0, 3.0, 6.0])
    assert regression.nash_sutcliffe(observed, observed) == 1.0
    assert regression.nash_sutcliffe(np.full(4, observed.mean()), observed) == pytest.approx(0.0)
    simulated = np.array([2.0, 2.0, 2.0, 2.0])
    # sum((sim-obs)^2) = 1+0+1+16 = 18; mean 3, sum((obs-3)^2) = 4+1+0+9 = 14
    assert regression.nash_sutcliffe(simulated, observed) == pytest.approx(1 - 18 / 14)


def test_linear_baseline_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(50, 3, 2))
    targets = inputs.reshape(50, -1) @ np.arange(6.0) + 0.5
    weights = regression.fit_linear(inputs, targets)
    assert np.allclose(weights, [*np.arange(6.0), 0.5])
    assert regression.nash_sutcliffe(regression.predict_linear(weights, inputs),
                                     targets) == pytest.approx(1.0)


def test_discharge_is_never_an_input():
    dates, columns = _table()
    arrays, _ = rainfall.windows_from_table(dates, columns, window=7, **SPLIT_OPTIONS)
    changed = {**columns, "Q": np.random.default_rng(1).permutation(columns["Q"]) ** 2}
    arrays2, _ = rainfall.windows_from_table(dates, changed, window=7, **SPLIT_OPTIONS)
    for name in arrays:
        np.testing.assert_array_equal(arrays[name][0], arrays2[name][0])
        assert not np.allclose(arrays[name][1], arrays2[name][1])  # the targets saw it


def test_normalisation_uses_training_period_only():
    dates, columns = _table()
    arrays, meta = rainfall.windows_from_table(dates, columns, window=5, **SPLIT_OPTIONS)
    later = dates >= np.datetime64("2002-01-01")  # validation (2002) and test (2003-2004)
    changed = {name: np.where(later, values * 100 + 50, values)
               for name, values in columns.items()}
    arrays2, meta2 = rainfall.windows_from_table(dates, changed, window=5, **SPLIT_OPTIONS)
    np.testing.assert_array_equal(arrays["train"][0], arrays2["train"][0])
    np.testing.assert_array_equal(arrays["train"][1], arrays2["train"][1])
    assert meta["target_mean"] == meta2["target_mean"]
    np.testing.assert_array_equal(meta["input_std"], meta2["input_std"])
    # ...and they are the training days' statistics: the Prec column of the train period.
    train_days = ~later
    assert meta["input_mean"][0] == pytest.approx(columns["Prec"][train_days].mean())
    assert not np.array_equal(arrays["test"][0], arrays2["test"][0])


def test_windows_end_on_the_target_day():
    dates, columns = _table()
    day = np.arange(len(dates), dtype=np.float64)
    columns = {**columns, "Prec": day, "Q": day}  # both equal the day index
    window = 4
    arrays, meta = rainfall.windows_from_table(dates, columns, window=window, **SPLIT_OPTIONS)
    prec = rainfall.INPUT_COLUMNS.index("Prec")
    for name, (features, targets) in arrays.items():
        prec_days = features[..., prec] * meta["input_std"][prec] + meta["input_mean"][prec]
        target_days = targets * meta["target_std"] + meta["target_mean"]
        np.testing.assert_allclose(prec_days[:, -1], target_days, atol=1e-3)
        np.testing.assert_allclose(np.diff(prec_days, axis=1), 1.0, atol=1e-3)
        first = np.flatnonzero(dates == meta["dates"][name][0])[0]
        assert target_days[0] == pytest.approx(first, abs=1e-3)


def test_periods_are_contiguous_disjoint_and_ordered():
    dates, columns = _table()
    _, meta = rainfall.windows_from_table(dates, columns, window=10, **SPLIT_OPTIONS)
    periods = meta["dates"]
    for days in periods.values():
        assert np.all(np.diff(days) == np.timedelta64(1, "D"))
    assert periods["train"][-1] + 1 == periods["validation"][0]
    assert periods["validation"][-1] + 1 == periods["test"][0]
    assert periods["train"][0] == dates[9]  # the first day with a full window
    assert str(periods["validation"][0]) == "2002-01-01"
    assert str(periods["test"][0]) == "2003-01-01" and periods["test"][-1] == dates[-1]


def test_missing_files_error_names_places_and_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(files, "fixed_dirs", lambda fs: [])
    for name, options in [("fulda_rainfall_runoff", dict(window=3, **SPLIT_OPTIONS)),
                          ("sentiment_movie_reviews", {
                              "split_seed": 0, "validation_fraction": 0.1, "test_fraction": 0.1,
                              "max_len": 5, "min_count": 1, "max_vocab": 10})]:
        with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))) as info:
            data.load_source(name, data_dir=tmp_path, **options)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path) in message
        assert mnist.ENV_VAR in message and "data_dir" in message


@needs_rainfall
def test_fulda_file_loads_with_three_periods():
    ds = data.load_source("fulda_rainfall_runoff", window=30, **SPLIT_OPTIONS)
    assert ds.features.shape == (2557 - 29, 30, len(rainfall.INPUT_COLUMNS))  # 1979..1985
    assert {k: len(v[1]) for k, v in ds.predefined_splits.items()} == {"validation": 365,
                                                                       "test": 731}
    assert ds.features.dtype == np.float32 and ds.num_classes is None
    # Discharge is standardised with the statistics of 1979..1985 only.
    dates, columns = rainfall.read_table(SHARED / "rainfall-runoff" / rainfall.FILENAME)
    train_q = columns["Q"][dates < np.datetime64("1986-01-01")]
    assert ds.metadata["target_mean"] == pytest.approx(train_q.mean())
    assert ds.metadata["target_std"] == pytest.approx(train_q.std())


def _toy_dataset(texts, scores):
    return sentiment.make_dataset("toy", texts, scores, split_seed=0, validation_fraction=0.25,
                                  test_fraction=0.25, max_len=6, min_count=1, max_vocab=100)


def test_vocabulary_comes_from_training_rows_only():
    texts = [f"good film w{i}" for i in range(20)] + [f"bad film w{20 + i}" for i in range(20)]
    scores = np.array([1.5] * 20 + [-2.0] * 20)
    ds = _toy_dataset(texts + ["neutralword"], np.append(scores, 0.0))
    assert ds.metadata["dropped_neutral"] == 1 and "neutralword" not in ds.metadata["vocabulary"]
    assert len(ds) == 20 and len(ds.predefined_splits["test"][1]) == 10
    rows = sentiment.stratified_split((scores > 0).astype(np.int32),
                                      {"train": 0.5, "validation": 0.25, "test": 0.25}, 0)
    # Each row has its own word w<i>: only the training rows' words get an id.
    vocabulary = ds.metadata["vocabulary"]
    assert {w for w in vocabulary if w.startswith("w")} == {f"w{i}" for i in rows["train"]}
    test_ids = ds.predefined_splits["test"][0]
    assert np.all(test_ids[:, 2] == sentiment.UNKNOWN)  # "good/bad film w<i>": third token
    assert np.all(ds.features[:, 2] >= sentiment.RESERVED)


def test_tokenizer_and_padding():
    assert sentiment.tokenize("The Rock's NEW ''Conan'', 21st!") == ["the", "rock's", "new",
                                                                  "conan", "21st"]
    vocabulary = sentiment.build_vocabulary([["a", "b", "a"], ["c", "a", "b"], ["d"]],
                                            min_count=2, max_vocab=4)
    assert vocabulary == {"a": 2, "b": 3}
    ids = sentiment.encode([["a", "x"], ["b", "a", "b", "a"]], vocabulary, max_len=3)
    np.testing.assert_array_equal(ids, [[2, sentiment.UNKNOWN, sentiment.PAD], [3, 2, 3]])
    assert ids.dtype == np.int32


def _summary(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())


SHRINK = ["--config.train.duration=3 steps", "--config.train.log_every=3 steps",
          "--config.train.eval_every=3 steps", "--config.checkpoint.every=0 steps",
          "--config.parallel.host_devices=0", "--config.logging.tensorboard=False",
          "--config.logging.plot=False", "--config.logging.progress=False"]


@needs_rainfall
def test_fulda_experiment_end_to_end(tmp_path):
    # Two evaluations: the first sees validation only, the last the test split too (the
    # baseline of a split first asked for at the end once raised a KeyError).
    result = run_cli("experiments.fulda_rainfall_runoff_lstm", f"--workdir={tmp_path}",
                     *SHRINK, "--config.train.duration=4 steps",
                     "--config.train.eval_every=2 steps",
                     "--config.data.options.window=8", "--config.model.hidden_size=4",
                     "--config.model.num_layers=1", "--config.data.batch_size=32",
                     "--config.data.eval_batch_size=128")
    assert result.returncode == 0, stderr_tail(result.stderr)
    final = _summary(tmp_path)["final"]
    # The NSE of the predictions (task.on_eval, on the host) from the eval step's mean
    # squared error of the same predictions, in normalised units (the loss):
    # NSE = 1 - n * mse / sum((obs - mean(obs))^2), scale-free.
    from jaxdl.training import loop
    config = make_config("fulda_rainfall_runoff_lstm", **{"data.options.window": 8})
    _, splits = loop.load_splits(config)
    for split in ("validation", "test"):
        observed = np.asarray(splits[split].targets, np.float64)
        assert final[split]["examples"] == len(observed)
        spread = np.sum((observed - observed.mean()) ** 2)
        expected = 1.0 - len(observed) * final[split]["loss"] / spread
        assert final[split]["nse"] == pytest.approx(expected, rel=1e-4, abs=1e-5), split
        assert 0.0 < final[split]["baseline_nse"] <= 1.0  # 8 days of weather beat the mean
    assert (tmp_path / regression.HYDROGRAPH).stat().st_size > 0


@needs_sentiment
def test_sentiment_experiment_end_to_end(tmp_path):
    """150 steps of a small BiLSTM learn: the loss falls and validation beats the majority
    class (measured: 0.70 against 0.50)."""
    result = run_cli("experiments.sentiment_bilstm", f"--workdir={tmp_path}", *SHRINK,
                     "--config.train.duration=150 steps", "--config.train.log_every=50 steps",
                     "--config.train.eval_every=150 steps", "--config.data.options.max_len=24",
                     "--config.model.hidden_size=16", "--config.model.embed_dim=16",
                     "--config.model.dropout_rate=0.0", "--config.optimizer.learning_rate=0.01",
                     "--config.data.batch_size=32", "--config.data.eval_batch_size=512")
    assert result.returncode == 0, stderr_tail(result.stderr)
    final = _summary(tmp_path)["final"]
    assert final["test"]["examples"] == pytest.approx(0.1 * (10605 - 37), abs=1)
    from jaxdl.training.writers import read_metrics
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")
              if r["split"] == "train"]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.05, losses
    counts = json.loads((tmp_path / "config.json").read_text())["class_counts"]["validation"]
    assert final["validation"]["accuracy"] > max(counts) / sum(counts) + 0.1
