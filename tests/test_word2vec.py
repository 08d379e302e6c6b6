"""word2vec (issue 20, item 1): tokenisation and skip-gram pairs, the two on-device draws
(unigram^0.75 negatives, subsampling of frequent words), the exported vectors, the
neighbours and analogies of an embedding, the `neighbours` analysis tool and its
out-of-vocabulary error, and the two backends on the same batch."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import DATA_DIR, make_config
from experiments import shakespeare_word2vec
from jaxdl import data
from jaxdl.analysis import __main__ as analysis_main
from jaxdl.data import words
from jaxdl.schema import ConfigError
from jaxdl.tasks import word2vec
from jaxdl.training import loop

# --- the host side: words, vocabulary, pairs ------------------------------------------------


def test_tokenize_lowers_case_and_keeps_inner_apostrophes():
    assert words.tokenize("KING. O'er the hill, 'tis--Night!") == ["king", "o'er", "the",
                                                                  "hill", "tis", "night"]


def test_vocabulary_drops_rare_words_and_orders_by_count():
    vocabulary, counts = words.build_vocabulary("b a b c a b d".split(), min_count=2)
    assert vocabulary == ["b", "a"] and counts.tolist() == [3, 2]


def test_skipgram_pairs_are_every_context_within_the_window():
    centers, contexts = words.skipgram_pairs(np.array([10, 11, 12, 13]), window=2)
    pairs = sorted(zip(centers.tolist(), contexts.tolist()))
    expected = sorted((a, b) for i, a in enumerate([10, 11, 12, 13])
                      for j, b in enumerate([10, 11, 12, 13]) if 0 < abs(i - j) <= 2)
    assert pairs == expected and len(pairs) == 10


def test_held_out_words_never_reach_the_training_pairs():
    dataset = words.make_dataset("toy", "a b a b a b c d c d".split(), window=1, min_count=1,
                                 validation_fraction=0.2, test_fraction=0.2)
    assert dataset.metadata["vocabulary"] == ("a", "b")  # c, d only in the held-out tail
    assert dataset.metadata["counts"].tolist() == [3, 3]
    assert "validation" not in (dataset.predefined_splits or {})  # c d: no known word


def test_synthetic_words_follow_zipf_and_cut_like_shakespeare():
    dataset = data.load_source("synthetic", kind="words", shape=(2,), num_classes=20,
                               examples=3000, validation_examples=500, seed=0)
    assert dataset.metadata["vocabulary"][:3] == ("w0", "w1", "w2")  # most frequent first
    counts = dataset.metadata["counts"]
    assert counts[0] / counts[1] == pytest.approx(2, rel=0.25)  # P(rank r) ~ 1 / (r + 1)
    assert len(dataset.features) == 4 * 3000 - 2 - 4  # every pair within 2 words
    with pytest.raises(ValueError, match=r"synthetic words need a shape \(window,\) and "
                                         r"num_classes >= 1, got shape \(2, 2\)"):
        data.load_source("synthetic", kind="words", shape=(2, 2), num_classes=5,
                         examples=10, validation_examples=2, seed=0)


@pytest.mark.skipif(DATA_DIR is None, reason="needs the Shakespeare texts ($JAXDL_DATA_DIR)")
def test_shakespeare_words_source():
    dataset = data.load_source("shakespeare_words", window=2, min_count=5,
                               validation_fraction=0.02, test_fraction=0.02)
    vocabulary = dataset.metadata["vocabulary"]
    assert len(vocabulary) == shakespeare_word2vec.VOCABULARY  # what the experiment pins
    assert vocabulary[:5] == ("the", "and", "i", "to", "of")
    assert dataset.metadata["words"] == {"train": 877_003, "validation": 18_271,
                                         "test": 18_271}
    assert len(dataset.features) == 3_392_254
    assert {name: len(split[0]) for name, split in dataset.predefined_splits.items()} == {
        "validation": 69_094, "test": 68_058}


# --- the device side: negatives and subsampling -------------------------------------------

COUNTS = np.array([4000, 1500, 600, 250, 100, 40, 10])
# Compiled once: op by op, the per-row key folding of 10,000 rows takes seconds.
draw_negatives = jax.jit(word2vec.draw_negatives, static_argnums=3)
draw_kept = jax.jit(word2vec.draw_kept)


def test_negatives_are_drawn_from_the_unigram_distribution_to_the_075():
    """A chi-square test on 70,000 draws of a fixed key: consistent with count^0.75,
    rejected for the plain unigram distribution (which the 0.75 flattens)."""
    cdf = jnp.asarray(word2vec.negative_cdf(COUNTS, 0.75))
    draws = draw_negatives(jax.random.PRNGKey(0), jnp.arange(10_000), cdf, 7)
    assert draws.shape == (10_000, 7) and draws.dtype == jnp.int32
    observed = np.bincount(np.asarray(draws).ravel(), minlength=len(COUNTS))
    for power, accepted in ((0.75, True), (1.0, False)):
        expected = COUNTS ** power / np.sum(COUNTS ** power) * observed.sum()
        p_value = stats.chisquare(observed, expected).pvalue
        assert (p_value > 0.01) == accepted, (power, p_value, observed)


def test_negatives_of_a_row_do_not_depend_on_the_rows_around_it():
    """Keyed by the example's row in the global batch: device i of a pmap sees rows
    [i * n, (i + 1) * n) and draws what one device drawing every row draws for them."""
    cdf = jnp.asarray(word2vec.negative_cdf(COUNTS, 0.75))
    key = jax.random.PRNGKey(3)
    whole = draw_negatives(key, jnp.arange(10_000), cdf, 7)
    shifted = draw_negatives(key, jnp.arange(5_000, 15_000), cdf, 7)  # the same compile
    np.testing.assert_array_equal(whole[5_000:], shifted[:5_000])
    assert not np.array_equal(whole[:5_000], whole[5_000:])


def test_subsampling_keeps_each_word_with_mikolovs_probability():
    """P(keep w) = sqrt(t / f(w)), capped at 1; a pair survives when both words do."""
    keep = word2vec.keep_probabilities(COUNTS, 1e-2)
    frequency = COUNTS / COUNTS.sum()
    np.testing.assert_allclose(keep, np.minimum(1, np.sqrt(1e-2 / frequency)), rtol=1e-6)
    assert keep[0] < 0.2 and keep[-1] == 1.0
    assert word2vec.keep_probabilities(COUNTS, 0.0).tolist() == [1.0] * len(COUNTS)
    # The fraction of a toy corpus's pairs kept, for (frequent, frequent), (frequent,
    # rare) and (rare, rare) pairs: 20,000 draws of each.
    n = 20_000
    for center, context in ((0, 1), (0, 6), (5, 6)):
        kept = draw_kept(jax.random.PRNGKey(1), jnp.arange(n), jnp.asarray(keep),
                                  jnp.full(n, center), jnp.full(n, context))
        want = keep[center] * keep[context]
        assert abs(float(kept.mean()) - want) < 4 * np.sqrt(want * (1 - want) / n) + 1e-9, \
            (center, context, float(kept.mean()), want)
    # A toy corpus (5,000 words of COUNTS' distribution, window 2): the share of its pairs
    # kept is the mean over its pairs of P(keep center) * P(keep context).
    names = [f"w{i}" for i in np.random.default_rng(0).choice(
        len(COUNTS), size=5_000, p=COUNTS / COUNTS.sum())]
    toy = words.make_dataset("toy", names, window=2, min_count=1, validation_fraction=0.0,
                             test_fraction=0.0)
    keep = word2vec.keep_probabilities(toy.metadata["counts"], 1e-2)
    kept = draw_kept(jax.random.PRNGKey(2), jnp.arange(len(toy.features)), jnp.asarray(keep),
                     jnp.asarray(toy.features), jnp.asarray(toy.targets))
    want = float(np.mean(keep[toy.features] * keep[toy.targets]))
    assert 0.01 < want < 0.5  # the frequent words are mostly dropped
    assert abs(float(kept.mean()) - want) < 4 * np.sqrt(want * (1 - want) / len(kept))


# --- what a trained embedding answers -----------------------------------------------------

WORDS = ["king", "queen", "man", "woman", "apple"]
# 2-D toy vectors: royal along x, female along y, apple far from both.
VECTORS = np.array([[1.0, 0.1], [1.0, 0.9], [0.1, 0.1], [0.1, 0.9], [-1.0, -0.2]], np.float32)


def test_neighbours_of_a_toy_embedding_are_the_closest_by_cosine():
    found = word2vec.neighbours(VECTORS, WORDS, "king", 4)
    assert [w for w, _ in found] == ["queen", "man", "woman", "apple"]
    cosine = VECTORS[1] @ VECTORS[0] / np.linalg.norm(VECTORS[1]) / np.linalg.norm(VECTORS[0])
    assert found[0][1] == pytest.approx(cosine, rel=1e-6)


def test_analogy_of_a_toy_embedding():
    # Unit vectors, so "queen" (royal and female) answers king - man + woman.
    vectors = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [-1, 0, 0]], np.float32)
    found = word2vec.analogy(vectors, WORDS, "king", "man", "woman", 2)
    assert found[0][0] == "queen"
    assert {w for w, _ in found}.isdisjoint({"king", "man", "woman"})


def test_vectors_round_trip_through_the_word2vec_text_format(tmp_path):
    path = word2vec.write_vectors(tmp_path / "vectors.txt", WORDS, VECTORS)
    lines = path.read_text().splitlines()
    assert lines[0] == "5 2" and lines[1].split() == ["king", "1", "0.1"]
    read_words, read_vectors = word2vec.read_vectors(path)
    assert read_words == WORDS
    np.testing.assert_allclose(read_vectors, VECTORS, rtol=1e-6)


def test_a_file_that_is_not_word2vec_text_is_one_line(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("2 3\nking 1 2 3\nqueen 1 2\n")
    with pytest.raises(ConfigError, match=r"not a word2vec text file \('queen' has 2 values, "
                                          r"not 3\)$"):
        word2vec.read_vectors(path)


def test_a_word_not_in_the_vocabulary_names_the_nearest_spellings():
    with pytest.raises(ConfigError, match=r"^'quen' is not in the vocabulary of the run; "
                                          r"nearest spellings: queen$"):
        word2vec.neighbours(VECTORS, WORDS, "quen", 3)
    with pytest.raises(ConfigError, match=r"'zzz' .*nearest spellings: none$"):
        word2vec.analogy(VECTORS, WORDS, "king", "zzz", "woman", 3)


def test_analysis_tool_prints_the_neighbours(tmp_path, capsys):
    word2vec.write_vectors(tmp_path / "vectors.txt", WORDS, VECTORS)
    status = analysis_main.main(["neighbours", f"--run={tmp_path}", "--word=king", "--top=2"])
    assert status == 0
    assert capsys.readouterr().out.splitlines() == ["queen\t0.8062", "man\t0.7740"]


@pytest.mark.parametrize("args, message", [
    (["--word=kinng"], r"^error: 'kinng' is not in the vocabulary of .*vectors\.txt; nearest "
                       r"spellings: king$"),
    (["--word=king", "--top=0"], r"^error: --top=0: must be >= 1$"),
], ids=["out-of-vocabulary", "top-0"])
def test_analysis_tool_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    word2vec.write_vectors(tmp_path / "vectors.txt", WORDS, VECTORS)
    status = analysis_main.main(["neighbours", f"--run={tmp_path}", *args])
    err = capsys.readouterr().err
    assert status == analysis_main.EXIT_BAD_INPUT
    assert len(err.strip().splitlines()) == 1
    assert re.match(message, err.strip()), err


def test_analysis_tool_refuses_a_workdir_without_vectors(tmp_path, capsys):
    status = analysis_main.main(["neighbours", f"--run={tmp_path}", "--word=king"])
    assert status == analysis_main.EXIT_BAD_INPUT
    assert "no vectors.txt (a word2vec run writes it" in capsys.readouterr().err


# --- the task in the engine ---------------------------------------------------------------

TOY = {"data.name": "synthetic", "data.eval_batch_size": 64, "data.batch_size": 32,
       "data.options": {"kind": "words", "shape": [2], "num_classes": 40, "examples": 1500,
                        "validation_examples": 300, "seed": 0},
       "model.vocab_size": 40, "model.embed_dim": 8, "task.probe_words": ["w0"],
       "task.analogies": ["w0 - w1 + w2"], "task.pca_words": 0, "task.subsample": 0.05,
       "optimizer.learning_rate": 0.05, "schedule.name": "constant",
       "schedule.warmup": "0 steps"}


def _toy(**overrides):
    return make_config("shakespeare_word2vec", **{**TOY, **overrides})


def test_pmap_and_sharded_give_the_same_numbers():
    """Negatives and subsampling are keyed per example, so pmap over 4 devices and the
    sharded backend on one agree on losses and embeddings."""
    results = {}
    for backend, devices in (("sharded", 1), ("pmap", 4)):
        trainer = loop.build(_toy(**{"parallel.backend": backend,
                                     "parallel.num_devices": devices}))
        state, losses = trainer.state, []
        for step in range(3):
            state, metrics = trainer.train_step(state, trainer.backend.put_batch(
                trainer.train_batch(step)))
            sums = trainer.backend.get_metrics(metrics)["sums"]
            losses.append([float(sums[k] / sums["count"]) for k in ("loss", "kept")])
        results[backend, devices] = (np.array(losses), trainer.backend.get_state(state).params)
    ref_losses, ref_params = results["sharded", 1]
    assert 0 < ref_losses[:, 1].min() and ref_losses[:, 1].max() < 1  # some pairs dropped
    for key, (losses, params) in results.items():
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6, err_msg=str(key))
        for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=str(key))


@pytest.mark.parametrize("overrides, message", [
    ({"task.probe_words": ["w0", "w00"]}, r"^'w00' is not in the vocabulary of dataset "
                                          r"'synthetic'; nearest spellings: w0, "),
    ({"task.analogies": ["w0 - w1 + zz"]}, r"^'zz' is not in the vocabulary"),
    ({"model.vocab_size": 41}, r"^config\.model\.vocab_size=41 but dataset 'synthetic' has "
                               r"40 words$"),
], ids=["probe-word", "analogy-word", "vocab-size"])
def test_bad_task_input_is_refused_before_anything_is_written(tmp_path, overrides, message):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        next(loop.run(_toy(**overrides), workdir))
    assert not workdir.exists()


def test_a_malformed_analogy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^config\.task\.analogies=\('king man woman',\): each "
                                         r"element must read 'a - b \+ c', got 'king man woman'$"):
        _toy(**{"task.analogies": ["king man woman"]})


@pytest.mark.slow
def test_a_run_exports_vectors_neighbours_and_the_pca_map(tmp_path):
    """The experiment's task end to end on synthetic words: the final evaluation writes
    vectors.txt (read back), neighbours.txt with every probe and analogy, words_pca.png."""
    from jaxdl import config as config_lib
    config = config_lib.fast_dev_run(_toy(**{"task.pca_words": 10,
                                             "task.probe_words": ["w0", "w3"]}), 2)
    list(loop.run(config, tmp_path / "run"))
    read_words, vectors = word2vec.read_vectors(tmp_path / "run" / "vectors.txt")
    assert read_words[:3] == ["w0", "w1", "w2"] and vectors.shape == (40, 8)
    lines = (tmp_path / "run" / "neighbours.txt").read_text().splitlines()
    assert lines[0] == "step 2: cosine neighbours of the center vectors"
    assert [line.split(":")[0] for line in lines[1:]] == ["w0", "w3", "w0 - w1 + w2"]
    assert all(len(line.split(", ")) == config.task.top_k for line in lines[1:])
    assert (tmp_path / "run" / "words_pca.png").stat().st_size > 0
