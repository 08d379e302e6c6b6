"""Recurrent layers and models: padding, direction, the cell's equations, scan vs a loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import models
from jaxdl.models import recurrent

KEY = jax.random.key(0)
HIDDEN = 6


def _stack(cell="lstm", bidirectional=False, num_layers=2):
    return recurrent.StackedRNN(cell=cell, hidden_size=HIDDEN, num_layers=num_layers,
                                dropout_rate=0.0, bidirectional=bidirectional)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_padded_equals_unpadded_on_real_steps(cell="lstm", bidirectional=True):
    """Each sequence alone, unpadded, gives the outputs and final state its padded row gets
    (through two layers); the steps past its length (noise here) change nothing and output
    zeros."""
    lengths = [2, 5]
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))  # the noise past each length stays
    stack = _stack(cell, bidirectional)
    variables = stack.init(KEY, x, train=False)
    apply = jax.jit(functools.partial(stack.apply, train=False))
    carries, outputs = apply(variables, x, seq_lengths=jnp.array(lengths))
    for row, length in enumerate(lengths):
        alone_carries, alone = apply(variables, x[row:row + 1, :length])
        np.testing.assert_allclose(outputs[row, :length], alone[0], atol=1e-5)
        np.testing.assert_array_equal(outputs[row, length:], 0.0)
        padded_state = jax.tree.map(lambda a, r=row: a[r], carries)
        alone_state = jax.tree.map(lambda a: a[0], alone_carries)
        jax.tree.map(lambda p, a: np.testing.assert_allclose(p, a, atol=1e-5),
                     padded_state, alone_state)


def test_backward_direction_starts_at_last_real_step():
    """The backward half of a bidirectional output at the last real step has read only that
    step: it equals one cell step from zeros on it, whatever padding follows."""
    x = jax.random.normal(jax.random.key(2), (2, 6, 3))
    stack = _stack("gru", bidirectional=True, num_layers=1)
    variables = stack.init(KEY, x, train=False)
    lengths = jnp.array([4, 6])
    (carry,), outputs = stack.apply(variables, x, train=False, seq_lengths=lengths)
    cell = recurrent.make_cell("gru", HIDDEN, dtype=jnp.float32, param_dtype=jnp.float32)
    cell_params = {"params": variables["params"]["layer_0_backward"]}
    for row, length in enumerate([4, 6]):
        h, _ = cell.apply(cell_params, jnp.zeros((1, HIDDEN)), x[row:row + 1, length - 1])
        np.testing.assert_allclose(outputs[row, length - 1, HIDDEN:], h[0], atol=1e-5)
        # Its final state has read the whole real sequence, ending at step 0.
        np.testing.assert_allclose(carry[1][row], outputs[row, 0, HIDDEN:], atol=1e-5)
        # The forward final state is the output at the last real step.
        np.testing.assert_allclose(carry[0][row], outputs[row, length - 1, :HIDDEN], atol=1e-5)


def test_lstm_cell_matches_hand_computed_step():
    """One OptimizedLSTMCell step equals the textbook equations evaluated in numpy."""
    cell = recurrent.make_cell("lstm", HIDDEN, dtype=jnp.float32, param_dtype=jnp.float32)
    x = np.asarray(jax.random.normal(jax.random.key(3), (2, 4)))
    c0 = np.asarray(jax.random.normal(jax.random.key(4), (2, HIDDEN)))
    h0 = np.asarray(jax.random.normal(jax.random.key(5), (2, HIDDEN)))
    variables = cell.init(KEY, (c0, h0), x)
    p = jax.tree.map(np.asarray, variables["params"])
    p["hf"]["bias"] = p["hf"]["bias"] + 1.0  # non-zero biases, so they are exercised
    (c1, h1), out = cell.apply({"params": p}, (c0, h0), x)

    def gate(name):
        return x @ p["i" + name]["kernel"] + h0 @ p["h" + name]["kernel"] + p["h" + name]["bias"]

    i, f, o = _sigmoid(gate("i")), _sigmoid(gate("f")), _sigmoid(gate("o"))
    g = np.tanh(gate("g"))
    c_expected = f * c0 + i * g
    h_expected = o * np.tanh(c_expected)
    np.testing.assert_allclose(c1, c_expected, atol=1e-5)
    np.testing.assert_allclose(h1, h_expected, atol=1e-5)
    np.testing.assert_array_equal(out, h1)


def test_scan_equals_python_loop_over_the_cell(cell="lstm"):
    x = jax.random.normal(jax.random.key(6), (2, 5, 3))
    stack = _stack(cell, num_layers=1)
    variables = stack.init(KEY, x, train=False)
    (carry,), outputs = stack.apply(variables, x, train=False)
    one = recurrent.make_cell(cell, HIDDEN, dtype=jnp.float32, param_dtype=jnp.float32)
    state = recurrent.zero_carry(cell, 2, HIDDEN, 1)[0]
    cell_params = {"params": variables["params"]["layer_0"]}
    for t in range(x.shape[1]):
        state, y = one.apply(cell_params, state, x[:, t])
        np.testing.assert_allclose(outputs[:, t], y, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, state)


def _lm(cell):
    return models.build_model("lstm_lm", vocab_size=9, embed_dim=5, hidden_size=HIDDEN,
                              num_layers=1, cell=cell, dropout_rate=0.1)


def test_lm_shapes_and_state_carrying(cell="lstm"):
    """Logits [B, T, V]; reading a sequence in two pieces with the carried state equals
    reading it at once."""
    lm = _lm(cell)
    tokens = jax.random.randint(jax.random.key(7), (3, 8), 0, 9)
    variables = lm.init(KEY, tokens, train=False)
    logits = lm.apply(variables, tokens, train=False)
    assert logits.shape == (3, 8, 9)
    carry, first = lm.apply(variables, tokens[:, :5], None, method=lm.continue_from)
    _, second = lm.apply(variables, tokens[:, 5:], carry, method=lm.continue_from)
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), logits, atol=1e-5)


def test_sample_tokens_deterministic_per_key():
    lm = _lm("gru")
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
    variables = lm.init(KEY, prompt, train=False)
    sample = jax.jit(recurrent.sample_tokens, static_argnums=0,
                     static_argnames=("length", "temperature"))
    a = sample(lm, variables, prompt, jax.random.key(1), length=12, temperature=1.0)
    b = sample(lm, variables, prompt, jax.random.key(1), length=12, temperature=1.0)
    c = sample(lm, variables, prompt, jax.random.key(2), length=12, temperature=1.0)
    assert a.shape == (2, 12) and a.dtype == prompt.dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 9


def test_rnn_classifier_shapes_and_padding():
    clf = models.build_model("rnn_classifier", vocab_size=9, embed_dim=5, hidden_size=HIDDEN,
                             num_layers=1, cell="lstm", bidirectional=True,
                             dropout_rate=0.0, num_classes=3)
    tokens = jnp.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    variables = clf.init(KEY, tokens, train=False)
    logits = clf.apply(variables, tokens, train=False)
    assert logits.shape == (2, 3)
    # Extra padding changes nothing.
    longer = jnp.pad(tokens, ((0, 0), (0, 3)))
    np.testing.assert_allclose(clf.apply(variables, longer, train=False), logits, atol=1e-5)


def test_rnn_regressor_shapes():
    x = jax.random.normal(KEY, (4, 7, 2))
    for num_outputs, shape in [(None, (4,)), (3, (4, 3))]:
        reg = models.build_model("rnn_regressor", hidden_size=HIDDEN, num_layers=1, cell="gru",
                                 dropout_rate=0.2, num_outputs=num_outputs)
        variables = reg.init(KEY, x, train=False)
        assert reg.apply(variables, x, train=False).shape == shape


def test_seq2seq_teacher_forcing_and_greedy_decode():
    s2s = models.build_model("seq2seq", src_vocab_size=9, tgt_vocab_size=7, embed_dim=5,
                             hidden_size=HIDDEN, num_layers=1, cell="lstm", dropout_rate=0.0,
                             attention="none", max_source_length=None)
    source = jnp.array([[3, 4, 5, 0], [1, 2, 3, 4]])
    targets_in = jnp.array([[1, 2, 3], [1, 4, 5]])
    variables = s2s.init(KEY, {"source": source, "targets_in": targets_in}, train=False)
    logits = s2s.apply(variables, source, targets_in, train=False)
    assert logits.shape == (2, 3, 7)
    decode = jax.jit(recurrent.greedy_decode, static_argnums=0,
                     static_argnames=("bos_id", "length"))
    out = decode(s2s, variables, source, bos_id=1, length=5)
    assert out.shape == (2, 5)
    np.testing.assert_array_equal(out, decode(s2s, variables, source, bos_id=1, length=5))
    # Greedy decoding is teacher forcing on its own argmax outputs.
    forced = s2s.apply(variables, source, jnp.concatenate([jnp.ones((2, 1), out.dtype),
                                                           out[:, :-1]], axis=1), train=False)
    np.testing.assert_array_equal(jnp.argmax(forced, axis=-1), out)
