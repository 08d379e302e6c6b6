"""The encoder-decoder with attention: masking, decoding (greedy, beam), the seq2seq task's
loss and metrics, the `dates` source, and the attention heat map."""

import datetime
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_config
from jaxdl import models, plots, tasks
from jaxdl.data import dates, synthetic
from jaxdl.models import recurrent
from jaxdl.schema import ConfigError

KEY = jax.random.PRNGKey(0)
# Two sources, the first padded after 3 tokens, the second after 5 of 6.
SOURCE = jnp.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 6, 0]])
BOS, EOS = dates.BOS, dates.EOS


def tiny(attention: str, *, tgt_vocab_size: int = 7, max_source_length=None,
         cell: str = "lstm"):
    return models.build_model("seq2seq", src_vocab_size=9, tgt_vocab_size=tgt_vocab_size,
                              embed_dim=5, hidden_size=8, num_layers=1, cell=cell,
                              dropout_rate=0.0, attention=attention,
                              max_source_length=max_source_length)


# Jitted once per model (static): Linen's scans run op by op, and slowly, outside jit.
@functools.partial(jax.jit, static_argnums=0)
def _init(model, key, source):
    return model.init(key, {"source": source, "targets_in": source[:, :1]}, train=False)


def init(model, source=SOURCE, key=KEY):
    return _init(model, key, source)


@functools.partial(jax.jit, static_argnums=(0, 4))
def forward(model, variables, source, targets_in, method=None):
    if method is None:
        return model.apply(variables, source, targets_in, train=False)
    return model.apply(variables, source, targets_in, method=method)


@pytest.mark.parametrize("attention", [
    "additive", pytest.param("dot", marks=pytest.mark.slow)])  # the same masking: slow tier
def test_attention_weights_sum_to_one_and_padding_gets_exactly_zero(attention):
    model = tiny(attention)
    variables = init(model)
    targets_in = jnp.array([[1, 3, 4, 5], [1, 6, 5, 4]])
    weights = forward(model, variables, SOURCE, targets_in, recurrent.Seq2Seq.attention_weights)
    assert weights.shape == (2, 4, 6)
    real = np.asarray(SOURCE != 0)
    np.testing.assert_allclose(np.sum(np.where(real[:, None], weights, 0), axis=-1), 1.0,
                               rtol=1e-6)
    assert np.all(np.asarray(weights)[np.broadcast_to(~real[:, None], weights.shape)] == 0.0)
    assert np.all(np.asarray(weights)[np.broadcast_to(real[:, None], weights.shape)] > 0.0)
    # More padding changes nothing: the padded positions are invisible.
    wider = jnp.pad(SOURCE, ((0, 0), (0, 3)))
    np.testing.assert_allclose(forward(model, variables, wider, targets_in),
                               forward(model, variables, SOURCE, targets_in), atol=1e-6)


def test_attention_none_is_the_plain_encoder_decoder():
    """attention='none' keeps the parameters of the encoder-decoder it extends (so its
    checkpoints and numbers are unchanged); attention adds the scorer and the combination."""
    def paths(model):
        params = jax.eval_shape(lambda: init(model))["params"]  # traced, not compiled
        tree = jax.tree_util.tree_flatten_with_path(params)[0]
        return {"/".join(k.key for k in path): leaf.shape for path, leaf in tree}

    plain = paths(tiny("none"))
    assert plain == {
        "src_embed/embedding": (9, 5), "tgt_embed/embedding": (7, 5),
        **{f"{part}/layer_0/{name}": shape
           for part in ("encoder", "decoder") for gate in "ifgo"
           for name, shape in ((f"i{gate}/kernel", (5, 8)), (f"h{gate}/kernel", (8, 8)),
                               (f"h{gate}/bias", (8,)))},
        "logits/kernel": (8, 7), "logits/bias": (7,)}
    additive = paths(tiny("additive"))
    assert set(additive) - set(plain) == {
        "attend/query/kernel", "attend/query/bias", "attend/key/kernel",
        "attend/score/kernel", "combine/kernel"}
    assert set(paths(tiny("dot"))) - set(plain) == {"combine/kernel"}


def _decoders():
    greedy = jax.jit(recurrent.greedy_decode, static_argnums=0,
                     static_argnames=("bos_id", "length", "eos_id"))
    beam = jax.jit(recurrent.beam_search, static_argnums=0,
                   static_argnames=("bos_id", "eos_id", "length", "beam_width",
                                    "length_penalty"))
    return greedy, beam


@pytest.mark.parametrize("attentions", [
    ("additive",), pytest.param(("none",), marks=pytest.mark.slow)])
def test_beam_search_of_width_one_is_greedy(attentions):
    greedy, beam = _decoders()
    source = jax.random.randint(jax.random.PRNGKey(1), (16, 6), 0, 9)
    outputs = []
    for attention in attentions:
        model = tiny(attention, tgt_vocab_size=4)  # a small vocabulary: ends come early
        for seed in range(3):
            variables = init(model, source, jax.random.PRNGKey(seed))
            want = greedy(model, variables, source, bos_id=BOS, length=7, eos_id=EOS)
            got = beam(model, variables, source, bos_id=BOS, eos_id=EOS, length=7,
                       beam_width=1, length_penalty=0.0)
            np.testing.assert_array_equal(got, want, err_msg=f"{attention}, seed {seed}")
            outputs.append(np.asarray(want))
    ended = np.concatenate(outputs) == EOS
    assert np.any(ended[:, :-1])  # some rows ended early (and were padded after it)


def _log_prob(model, variables, source, tokens):
    """log p(tokens | source) up to and including each row's end (teacher forced)."""
    targets_in = jnp.concatenate([jnp.full((len(tokens), 1), BOS), tokens[:, :-1]], axis=1)
    logp = jax.nn.log_softmax(forward(model, variables, source, targets_in))
    picked = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    ended = jnp.cumsum(tokens == EOS, axis=1) - (tokens == EOS) > 0
    return jnp.sum(jnp.where(ended, 0.0, picked), axis=1)


@pytest.mark.slow
def test_beam_search_as_wide_as_every_sequence_finds_the_most_likely_sequence():
    """Exhaustive check: with beam width V^L no hypothesis is ever pruned, so the result is
    the most likely of all V^L sequences (padding after an end), with and without GNMT's
    length normalisation."""
    vocab, length = 4, 3
    model = tiny("dot", tgt_vocab_size=vocab)
    source = SOURCE[:1]
    variables = init(model, source, jax.random.PRNGKey(3))
    every = {tuple(np.asarray(recurrent._until_end(jnp.array([seq]), EOS))[0])
             for seq in itertools.product(range(vocab), repeat=length)}
    every = jnp.array(sorted(every))
    scores = _log_prob(model, variables, jnp.repeat(source, len(every), 0), every)
    ends = jnp.where(jnp.any(every == EOS, axis=1), jnp.argmax(every == EOS, axis=1) + 1,
                     length)
    _, beam = _decoders()
    for penalty in (0.0, 1.0):
        best = every[jnp.argmax(scores / ((5.0 + ends) / 6.0) ** penalty)]
        got = beam(model, variables, source, bos_id=BOS, eos_id=EOS, length=length,
                   beam_width=vocab ** length, length_penalty=penalty)
        np.testing.assert_array_equal(got[0], best)


def test_a_source_longer_than_the_model_maximum_is_one_line():
    model = tiny("additive", max_source_length=4)
    with pytest.raises(ValueError, match=r"^source of length 6 is longer than the model's "
                                         r"max_source_length=4\n"):
        # Outside jit (which would append its traceback note): refused before any step.
        model.init(KEY, {"source": SOURCE, "targets_in": SOURCE[:, :1]}, train=False)


def _task_and_batch():
    config = make_config("dates_seq2seq", **{
        "model.hidden_size": 8, "model.embed_dim": 4, "data.options.examples": 64})
    dataset = dates.load_dates(examples=64, seed=0)
    task = tasks.build_task(config, dataset, axis_name=None)
    return task, dataset


@pytest.mark.slow
def test_padded_targets_have_no_loss_and_eval_scores_the_decoded_output():
    """Training: teacher-forced loss and accuracy over the real target tokens only.
    Evaluation: the metrics of what the model decodes from the source alone."""
    task, dataset = _task_and_batch()
    variables = jax.jit(task.init)(KEY, jnp.asarray(dataset.features[:1]))
    # Targets of two lengths: the second ends 4 tokens early and is padded.
    targets = jnp.asarray(dataset.targets[:2]).at[1, 6].set(EOS).at[1, 7:].set(0)
    source = jnp.asarray(dataset.features[:2])
    values, _ = jax.jit(lambda v, b: task.apply(v, b, train=True, rng=KEY))(
        variables, {"inputs": source, "targets": targets})
    logits = forward(task.model, variables, source, task.shift(targets))
    nats = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(values["loss"], [nats[0].mean(), nats[1, :7].mean()],
                               rtol=1e-5)
    right = np.asarray(jnp.argmax(logits, -1) == targets)
    np.testing.assert_allclose(values["token_accuracy"], [right[0].mean(), right[1, :7].mean()])

    source, targets = jnp.asarray(dataset.features[:8]), jnp.asarray(dataset.targets[:8])
    decoded = jax.jit(task.decode, static_argnums=2)(variables, source, targets.shape[1])
    evaluate = jax.jit(lambda v, b: task.apply(v, b, train=False, rng=KEY)[0])
    # Score the decoded output against itself as the target: every metric is perfect.
    values = evaluate(variables, {"inputs": source, "targets": decoded})
    np.testing.assert_array_equal(values["sequence_accuracy"], 1.0)
    np.testing.assert_array_equal(values["token_accuracy"], 1.0)
    values = evaluate(variables, {"inputs": source, "targets": targets})
    right = np.asarray(decoded == targets)
    np.testing.assert_allclose(values["token_accuracy"], right.mean(axis=1))
    np.testing.assert_array_equal(values["sequence_accuracy"], right.all(axis=1))


def test_a_dataset_wider_than_the_model_maximum_is_refused():
    config = make_config("dates_seq2seq", **{"model.max_source_length": 10,
                                             "data.options.examples": 64})
    dataset = dates.load_dates(examples=64, seed=0)
    width = dataset.features.shape[1]
    with pytest.raises(ConfigError, match=rf"^dataset 'dates' has sources of length {width}, "
                                          r"longer than config.model.max_source_length=10$"):
        tasks.build_task(config, dataset, axis_name=None)


# What each format's writer is read back with (strptime ignores case and does not check
# the weekday: that is checked apart).
PARSE = {"day month year": "%d %B %Y", "month day, year": "%B %d, %Y",
         "weekday, day month year": "%A, %d %B %Y", "weekday, month day, year": "%A, %B %d, %Y",
         "dd.mm.yyyy": "%d.%m.%Y", "dd/mm/yyyy": "%d/%m/%Y", "yyyy/mm/dd": "%Y/%m/%d",
         "DD-MON-YYYY": "%d-%b-%Y", "mon dd yyyy": "%b %d %Y", "d mon yyyy": "%d %b %Y",
         "day month year (lower case)": "%d %B %Y"}


def _text(ids, vocabulary, first: int):
    return "".join(vocabulary[i] for i in ids if i >= first)


def test_dates_are_deterministic_per_seed_and_their_answers_right():
    assert set(PARSE) == set(dates.FORMATS)
    first, again, other = (dates.load_dates(examples=400, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(first.features, again.features)
    np.testing.assert_array_equal(first.targets, again.targets)
    assert not np.array_equal(first.targets, other.targets)
    sources = [_text(row, dates.SOURCE_VOCABULARY, 1) for row in first.features]
    assert len(set(sources)) == len(sources)  # distinct (date, format) pairs
    assert np.all(first.targets[:, -1] == EOS) and first.targets.shape[1] == 11
    formats = set()
    for source, target in zip(sources, first.targets):
        answer = datetime.date.fromisoformat(_text(target, dates.TARGET_VOCABULARY, EOS + 1))
        readings = {}
        for name, pattern in PARSE.items():
            try:
                readings[name] = datetime.datetime.strptime(source, pattern).date()
            except ValueError:
                continue
        assert readings and set(readings.values()) == {answer}, (source, readings, answer)
        formats.update(readings)
        weekday = source.split(",")[0]
        if weekday in dates._DAYS:
            assert weekday == answer.strftime("%A"), source
    assert formats == set(PARSE)  # 400 draws show every format
    assert first.features.shape[1] == max(map(len, sources))


def test_synthetic_pairs_are_padded_and_ended():
    data = synthetic.load_synthetic(kind="pairs", shape=(6, 5), examples=50,
                                    validation_examples=2, seed=0, vocabulary="abcd")
    assert data.features.shape == (50, 6) and data.targets.shape == (50, 5)
    lengths = np.sum(data.targets != 0, axis=1)
    assert np.all(data.targets[np.arange(50), lengths - 1] == EOS)
    assert np.all((data.targets > EOS) == (np.arange(5)[None] < lengths[:, None] - 1))
    assert data.metadata["target_vocabulary"] == ("<pad>", "<s>", "</s>", "a", "b", "c", "d")


def test_attention_png(tmp_path):
    weights = np.full((3, 4), 0.25)
    path = plots.attention_png([(weights, list("ab c"), ["1", "2", "</s>"])] * 2,
                               tmp_path / "a.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"weights of shape \(3, 4\) for 3 output and 2 source"):
        plots.attention_png([(weights, ["a", "b"], ["1", "2", "3"])], tmp_path / "b.png",
                            title="t")


TINY_RUN = {"model.hidden_size": 8, "model.embed_dim": 4, "data.options.examples": 200,
            "data.batch_size": 16, "data.eval_batch_size": 32, "task.beam_width": 2}


@pytest.mark.slow
def test_both_backends_agree_and_bf16_runs():
    """The seq2seq step (teacher forcing) and eval step (beam search inside) on 4 devices,
    sharded and pmap: the same losses and eval metrics; bf16 computes and learns."""
    from jaxdl.training import loop

    results = {}
    for backend, devices in (("sharded", 4), ("pmap", 4)):
        trainer = loop.build(make_config("dates_seq2seq", **TINY_RUN, **{
            "parallel.backend": backend, "parallel.num_devices": devices}))
        state, losses = trainer.state, []
        for step in range(3):
            state, metrics = trainer.train_step(state, trainer.backend.put_batch(
                trainer.train_batch(step)))
            sums = trainer.backend.get_metrics(metrics)["sums"]
            losses.append(float(sums["loss"] / sums["count"]))
        evaluated = trainer.evaluate(state, "validation")
        assert evaluated["examples"] == len(trainer.splits["validation"]) == 20
        results[backend, devices] = (losses, evaluated)
    want_losses, want_eval = results["sharded", 4]
    for key, (losses, evaluated) in results.items():
        np.testing.assert_allclose(losses, want_losses, rtol=1e-4, err_msg=str(key))
        for metric in ("loss", "token_accuracy", "sequence_accuracy"):
            assert evaluated[metric] == pytest.approx(want_eval[metric], rel=1e-4), key

    trainer = loop.build(make_config("dates_seq2seq", **TINY_RUN, **{
        "precision": "bf16", "parallel.num_devices": 1, "optimizer.learning_rate": 0.03}))
    host = trainer.backend.get_state(trainer.state)
    assert {leaf.dtype for leaf in jax.tree.leaves(host.params)} == {np.dtype("float32")}
    assert trainer.task.model.dtype == jnp.bfloat16
    state, losses = trainer.state, []
    for step in range(12):
        state, metrics = trainer.train_step(state, trainer.backend.put_batch(
            trainer.train_batch(step)))
        sums = trainer.backend.get_metrics(metrics)["sums"]
        losses.append(float(sums["loss"] / sums["count"]))
    assert np.all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert np.isfinite(trainer.evaluate(state, "validation")["sequence_accuracy"])
