"""transformer_lm (jaxdl/models/transformer.py): the causal mask, shapes and parameter count,
dropout only in training, sliding-window sampling, and the same numbers under both backends
and in bf16."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from benchmark_families import family_config, family_dataset
from conftest import make_config

from jaxdl import tasks
from jaxdl.data import text
from jaxdl.models.recurrent import RecurrentLM, sample_tokens
from jaxdl.models.transformer import TransformerLM
from jaxdl.schema import ConfigError

# One layer (each layer costs compile time, the expensive part here); the causal test has two.
TINY = dict(vocab_size=11, max_len=8, embed_dim=16, num_heads=2, num_layers=1, mlp_dim=24,
            dropout_rate=0.0, positions="rotary", tie_embeddings=False)
TOKENS = jnp.asarray(np.random.default_rng(1).integers(0, 11, (3, 8)), jnp.int32)


def _compiled(fn, **fields):
    """`tokens -> fn(model, variables, tokens)` as one compiled program that also
    initialises the model (fixed key): one compilation per test, the expensive part here."""
    model = TransformerLM(**{**TINY, **fields})

    def run(tokens):
        return fn(model, model.init(jax.random.key(0), tokens, train=False), tokens)
    return jax.jit(run)


def count(variables) -> int:
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_future_token_never_changes_an_earlier_output(positions):
    """Changing token t leaves the logits at 0..t-1 bitwise equal and changes every logit
    row from t on (those read it): the mask hides the future and nothing else, through two
    layers. The same compiled program reads both sequences."""
    logits = _compiled(lambda model, variables, tokens: model.apply(variables, tokens,
                                                                    train=False),
                       positions=positions, num_layers=2)
    before = np.asarray(logits(TOKENS))
    for t in (0, 3, 7):
        after = np.asarray(logits(TOKENS.at[:, t].set((TOKENS[:, t] + 1) % TINY["vocab_size"])))
        np.testing.assert_array_equal(after[:, :t], before[:, :t])
        assert (np.abs(after[:, t:] - before[:, t:]).max(axis=-1) > 0).all(), (positions, t)


def _shapes(fn, **fields):
    """The shapes `fn(model, variables)` returns, traced only (nothing runs)."""
    model = TransformerLM(**{**TINY, **fields})
    return jax.eval_shape(lambda: fn(model, model.init(jax.random.key(0), TOKENS, train=False)))


def test_shapes_and_parameter_count():
    d, m, v, n = TINY["embed_dim"], TINY["mlp_dim"], TINY["vocab_size"], TINY["max_len"]
    block = 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)  # 2 LayerNorms, q k v o, MLP
    assert _shapes(lambda model, variables: model.apply(
        variables, TOKENS[:, :5], train=False)).shape == (3, 5, v)

    def params(**fields):
        return count(_shapes(lambda model, variables: variables, **fields))

    assert params() == v * d + TINY["num_layers"] * block + 2 * d + (d * v + v)
    assert params(tie_embeddings=True) == params() - (d * v + v)
    assert params(positions="learned") == params() + n * d
    with pytest.raises(ValueError, match=r"^transformer_lm reads at most max_len=8 tokens, "
                                         r"got a sequence of 9"):
        _shapes(lambda model, variables: model.apply(
            variables, jnp.zeros((1, 9), jnp.int32), train=False))
    with pytest.raises(ValueError, match=r"embed_dim=16 must split into num_heads=3 heads"):
        _shapes(lambda model, variables: variables, num_heads=3)
    with pytest.raises(ValueError, match=r"num_heads=4 heads of an even width \(rotary"):
        _shapes(lambda model, variables: variables, num_heads=4, embed_dim=12)
    assert params(num_heads=4, embed_dim=12, positions="learned") > 0


def test_the_experiment_matches_the_lstm_parameter_count():
    """The pinned counts the experiment's docstring and README state."""
    def params(config):
        fields = {k: v for k, v in config.model.items() if k != "name"}
        cls = TransformerLM if config.model.name == "transformer_lm" else RecurrentLM
        shapes = jax.eval_shape(lambda: cls(**fields).init(
            jax.random.key(0), jnp.zeros((1, 64), jnp.int32), train=False))
        return count(shapes)

    assert params(make_config("shakespeare_char_transformer")) == 318_240
    assert params(make_config("shakespeare_char_lstm")) == 320_212


def test_dropout_only_in_training():
    def outputs(model, variables, tokens):
        def apply(key, train, module=model):
            return module.apply(variables, tokens, train=train,
                                rngs={"dropout": jax.random.key(key)})
        # Eval: as the same weights without dropout.
        return (apply(1, False), apply(1, False, TransformerLM(**TINY)), apply(1, True),
                apply(2, True))

    eval_1, no_dropout, train_1, train_2 = _compiled(outputs, dropout_rate=0.5)(TOKENS)
    np.testing.assert_array_equal(eval_1, no_dropout)
    assert not np.allclose(train_1, eval_1) and not np.allclose(train_1, train_2)


@pytest.mark.slow  # ~8 s of compiling; the fast tier samples past the window through the task
def test_continue_from_reads_in_chunks_and_slides_the_window():
    extra = TOKENS[:, :1]
    shifted = jnp.concatenate([TOKENS[:, 1:], extra], 1)

    def scenario(model, variables, tokens):
        def read(tokens, carry):
            return model.apply(variables, tokens, carry, method="continue_from")

        carry, head = read(tokens[:, :3], None)
        full_carry, tail = read(tokens[:, 3:], carry)
        slid_carry, slid = read(extra, full_carry)  # one more: the oldest token drops out
        _, long_prompt = read(jnp.concatenate([tokens, tokens[:, :5]], 1), None)
        return dict(
            chunked=jnp.concatenate([head, tail], 1),
            full=model.apply(variables, tokens, train=False), filled=full_carry[1],
            slid_window=slid_carry[0], slid=slid[:, 0],
            shifted=model.apply(variables, shifted, train=False)[:, -1],
            long_prompt=long_prompt,
            sampled=sample_tokens(model, variables, tokens[:, :3], jax.random.key(2),
                                  length=20, temperature=1.0))

    out = _compiled(scenario)(TOKENS)
    np.testing.assert_allclose(out["chunked"], out["full"], rtol=1e-5, atol=1e-6)
    assert int(out["filled"]) == 8  # the window is full
    np.testing.assert_array_equal(out["slid_window"], shifted)
    # The new token reads the 8 before it.
    np.testing.assert_allclose(out["slid"], out["shifted"], rtol=1e-5, atol=1e-6)
    # A prompt longer than the window, and a generation past it.
    assert out["long_prompt"].shape == (3, 13, TINY["vocab_size"])
    assert out["sampled"].shape == (3, 20) and int(out["sampled"].max()) < TINY["vocab_size"]


CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 4


def _lm_config(ds, **overrides):
    return make_config("shakespeare_char_transformer", **{
        "model.vocab_size": ds.metadata["vocabulary_size"], "model.embed_dim": 8,
        "model.num_heads": 2, "model.num_layers": 1, "model.mlp_dim": 8,
        "task.sample_length": 12, "task.sample_prompt": "To be", **overrides})


def test_the_language_model_task_samples_past_the_window_and_refuses_longer_windows():
    ds = text.make_dataset("tiny", CORPUS, window=8, stride=4, validation_fraction=0.1,
                           test_fraction=0.1)
    task = tasks.build_task(_lm_config(ds, **{"model.max_len": 8}), ds, axis_name=None)
    variables = jax.jit(task.init)(jax.random.key(0), ds.features[:2])
    sample = task.sample(variables, jax.random.key(1))  # 5 + 12 characters > 8
    assert len(sample) == 12 and set(sample) <= set(ds.metadata["vocabulary"])
    with pytest.raises(ConfigError, match=r"^config\.model\.max_len=6 but dataset 'tiny' has "
                                          r"windows of 8 tokens; raise max_len or shorten "
                                          r"the window$"):
        tasks.build_task(_lm_config(ds, **{"model.max_len": 6}), ds, axis_name=None)


TINY_FAMILY = ["--config.model.embed_dim=8", "--config.model.num_heads=2",
               "--config.model.num_layers=1", "--config.model.mlp_dim=8",
               "--config.model.max_len=6", "--config.data.options.shape=(6,)",
               "--config.model.dropout_rate=0.3", "--config.optimizer.learning_rate=0.01",
               "--config.schedule.name=constant", "--config.schedule.warmup=0 steps"]


def _losses(*extra, steps=3):
    from jaxdl.training import loop

    trainer = loop.build(family_config("transformer_lm", "--batch_size", "8", *TINY_FAMILY,
                                       *extra))
    state, losses = trainer.state, []
    for step in range(steps):
        state, metrics = trainer.train_step(state, trainer.backend.put_batch(
            trainer.train_batch(step)))
        sums = trainer.backend.get_metrics(metrics)["sums"]
        losses.append(float(sums["loss"] / sums["count"]))
    return np.array(losses)


@pytest.mark.slow
def test_both_backends_and_bf16_train_the_same_model():
    """With dropout on, pmap over 4 devices and the sharded mesh over 4 (and over 1) give
    the same losses to rounding; bf16 compute trains to within bf16's rounding of them."""
    reference = _losses("--config.parallel.backend=sharded", "--config.parallel.num_devices=1")
    assert np.isfinite(reference).all() and len(set(reference)) == len(reference)
    for backend in ("pmap", "sharded"):
        np.testing.assert_allclose(
            _losses(f"--config.parallel.backend={backend}", "--config.parallel.num_devices=4"),
            reference, rtol=1e-5, err_msg=backend)
    bf16 = _losses("--config.parallel.backend=sharded", "--config.parallel.num_devices=4",
                   "--config.precision=bf16")
    np.testing.assert_allclose(bf16, reference, rtol=2e-2)


def test_the_benchmark_family_builds_on_its_synthetic_windows():
    config = family_config("transformer_lm")
    assert (config.model.name, config.task.name) == ("transformer_lm", "language_model")
    assert config.data.options.shape == (config.model.max_len,) == (64,)
    assert config.data.batch_size == 32
    tasks.build_task(config, family_dataset(config), axis_name=None)


@pytest.mark.slow
def test_the_benchmark_harness_times_the_transformer(capsys):
    """`python -m benchmarks.step_throughput --model transformer_lm`, shrunken, 2 steps."""
    from benchmarks import step_throughput

    tiny = [arg for arg in TINY_FAMILY if "dropout" not in arg and "schedule" not in arg]
    record = step_throughput.main(
        ["--model", "transformer_lm", "--batch_size", "8", "--steps", "2", "--warmup", "1",
         "--repeats", "1", "--batches", "1", "--no_header", *tiny])
    out = capsys.readouterr().out
    assert record["experiment"] == "transformer_lm" and record["batch_size"] == 8
    assert math.isfinite(record["last_train_loss"]) and record["examples_per_second"] > 0
    assert len([line for line in out.splitlines()
                if line.startswith("| transformer_lm |")]) == 1, out
