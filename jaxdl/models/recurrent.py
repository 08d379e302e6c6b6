"""Recurrent models: LSTM/GRU stacks scanned over time, and the models built on them.

Every recurrence is `flax.linen.RNN` (an `nn.scan` over one cell), never a Python loop over
steps, so a sequence of any length compiles to one loop. `seq_lengths` ([B] int) marks the
real steps of padded sequences: outputs at the real steps equal those of the unpadded
sequence, outputs past the end are zero, and the final state of a sequence is the state at
its last real step. The backward direction of a bidirectional layer starts at each
sequence's last real step (padding stays at the end).

Registered models: `lstm_lm` (character/word language model, with `sample_tokens` for
step-wise sampling that carries the state), `rnn_classifier` (token ids, padding id 0),
`rnn_regressor` (float sequences), `seq2seq` (encoder-decoder with teacher forcing, optional
additive or dot-product attention, `greedy_decode` and `beam_search`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.fields import COUNT, OPTIONAL_COUNT, RATE
from jaxdl.models.registry import register
from jaxdl.schema import Field, optional, positive

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
CELL = Field(str, choices=tuple(CELLS), help="the recurrent cell")
# The id that pads token sequences (rnn_classifier, seq2seq sources): lengths are counted
# as the tokens that differ from it.
PAD_ID = 0

Carry = Any  # LSTM: (c, h); GRU: h. A stack's carry is a tuple with one per layer.


def make_cell(cell: str, features: int, *, dtype, param_dtype,
              name: str | None = None) -> nn.RNNCellBase:
    if cell not in CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; valid: {', '.join(CELLS)}")
    return CELLS[cell](features=features, dtype=dtype, param_dtype=param_dtype, name=name)


def hidden_of(carry: Carry) -> jax.Array:
    """The hidden state h of one layer's carry (LSTM carries (c, h))."""
    return carry[1] if isinstance(carry, tuple) else carry


def zero_carry(cell: str, batch_size: int, hidden_size: int, num_layers: int,
               dtype=jnp.float32) -> tuple[Carry, ...]:
    """The all-zero state of a unidirectional stack, as its scan starts from."""
    zeros = jnp.zeros((batch_size, hidden_size), dtype)
    return tuple((zeros, zeros) if cell == "lstm" else zeros for _ in range(num_layers))


def lengths_from_padding(tokens: jax.Array) -> jax.Array:
    """[B] number of non-padding tokens (at least 1, so an empty sequence reads its first
    step instead of wrapping around to the last)."""
    return jnp.maximum(jnp.sum(tokens != PAD_ID, axis=-1), 1).astype(jnp.int32)


def _mask_padding(outputs: jax.Array, seq_lengths: jax.Array | None) -> jax.Array:
    if seq_lengths is None:
        return outputs
    real = jnp.arange(outputs.shape[1])[None, :] < seq_lengths[:, None]
    return jnp.where(real[..., None], outputs, jnp.zeros((), outputs.dtype))


class StackedRNN(nn.Module):
    """`num_layers` LSTM or GRU layers over [B, T, F] inputs, dropout between layers.

    Returns (carries, outputs): a tuple with each layer's final carry (a bidirectional
    layer's is (forward, backward)) and the last layer's outputs [B, T, H] ([B, T, 2H]
    bidirectional).
    """

    cell: str  # "lstm" | "gru"
    hidden_size: int
    num_layers: int
    dropout_rate: float
    bidirectional: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, seq_lengths: jax.Array | None = None,
                 initial_carry: tuple[Carry, ...] | None = None):
        def rnn(name):
            return nn.RNN(make_cell(self.cell, self.hidden_size, dtype=self.dtype,
                                    param_dtype=self.param_dtype, name=name))

        carries = []
        for layer in range(self.num_layers):
            if layer:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            start = None if initial_carry is None else initial_carry[layer]
            if self.bidirectional:
                carry, x = nn.Bidirectional(rnn(f"layer_{layer}_forward"),
                                            rnn(f"layer_{layer}_backward"))(
                    x, seq_lengths=seq_lengths, initial_carry=start, return_carry=True)
            else:
                carry, x = rnn(f"layer_{layer}")(
                    x, seq_lengths=seq_lengths, initial_carry=start, return_carry=True)
            x = _mask_padding(x, seq_lengths)
            carries.append(carry)
        return tuple(carries), x


def _stack(module, *, bidirectional: bool = False, name: str | None = None) -> StackedRNN:
    return StackedRNN(cell=module.cell, hidden_size=module.hidden_size,
                      num_layers=module.num_layers, dropout_rate=module.dropout_rate,
                      bidirectional=bidirectional, dtype=module.dtype,
                      param_dtype=module.param_dtype, name=name)


@register("lstm_lm")
class RecurrentLM(nn.Module):
    """Embedding -> stacked LSTM/GRU -> Dense(vocab_size) next-token logits.

    `__call__(tokens [B, T] int, train)` -> logits [B, T, V]. `continue_from(tokens, carry)`
    runs the same network from a given state and returns (state, logits), which is what
    step-wise sampling needs (see `sample_tokens`).
    """

    vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    cell: str  # "lstm" | "gru"
    dropout_rate: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"vocab_size": COUNT, "embed_dim": COUNT, "hidden_size": COUNT, "num_layers": COUNT,
              "cell": CELL, "dropout_rate": RATE}

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                              param_dtype=self.param_dtype)
        self.rnn = _stack(self)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.logits = nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype)

    def __call__(self, tokens, *, train: bool):
        return self.continue_from(tokens, None, train=train)[1]

    def continue_from(self, tokens, carry: tuple[Carry, ...] | None, *, train: bool = False):
        """(final state, logits [B, T, V]) of `tokens` read from state `carry` (None: zeros)."""
        x = self.embed(tokens)
        carry, x = self.rnn(x, train=train, initial_carry=carry)
        x = self.dropout(x, deterministic=not train)
        return carry, self.logits(x).astype(jnp.float32)

    def initial_state(self, batch_size: int) -> tuple[Carry, ...]:
        return zero_carry(self.cell, batch_size, self.hidden_size, self.num_layers)


def sample_tokens(model: RecurrentLM, variables: Mapping[str, Any], prompt: jax.Array,
                  rng: jax.Array, *, length: int, temperature: float) -> jax.Array:
    """[B, length] tokens sampled after `prompt` [B, P] (P >= 1), one at a time, each fed
    back with the carried state; temperature 0 takes the most likely token. Deterministic
    for a given `rng`; jit-able (`length` and `temperature` static)."""
    carry, logits = model.apply(variables, prompt, None, method="continue_from")

    def pick(key, last_logits):
        if temperature == 0:
            return jnp.argmax(last_logits, axis=-1)
        return jax.random.categorical(key, last_logits / temperature, axis=-1)

    def step(state, key):
        carry, last_logits = state
        token = pick(key, last_logits).astype(prompt.dtype)
        carry, logits = model.apply(variables, token[:, None], carry,
                                    method="continue_from")
        return (carry, logits[:, -1]), token

    _, tokens = jax.lax.scan(step, (carry, logits[:, -1]), jax.random.split(rng, length))
    return tokens.T


@register("rnn_classifier")
class RNNClassifier(nn.Module):
    """Embedding -> (bidirectional) stacked LSTM/GRU over the non-padding tokens (id 0 pads)
    -> the last layer's final hidden state(s) -> Dropout -> Dense(num_classes) logits."""

    vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    cell: str  # "lstm" | "gru"
    bidirectional: bool
    dropout_rate: float
    num_classes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"vocab_size": COUNT, "embed_dim": COUNT, "hidden_size": COUNT, "num_layers": COUNT,
              "cell": CELL, "bidirectional": Field(
                  bool, help="read the sequence both ways; each layer's outputs are the two "
                             "directions side by side"), "dropout_rate": RATE, "num_classes": COUNT}

    @nn.compact
    def __call__(self, tokens, *, train: bool):
        lengths = lengths_from_padding(tokens)
        x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                     param_dtype=self.param_dtype)(tokens)
        carries, _ = _stack(self, bidirectional=self.bidirectional)(
            x, train=train, seq_lengths=lengths)
        last = carries[-1]
        if self.bidirectional:
            features = jnp.concatenate([hidden_of(last[0]), hidden_of(last[1])], axis=-1)
        else:
            features = hidden_of(last)
        features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        return nn.Dense(self.num_classes, dtype=self.dtype,
                        param_dtype=self.param_dtype)(features).astype(jnp.float32)


@register("rnn_regressor")
class RNNRegressor(nn.Module):
    """Float sequences [B, T, F] -> stacked LSTM/GRU -> Dropout -> Dense on the last step:
    [B] when `num_outputs` is None, else [B, num_outputs]."""

    hidden_size: int
    num_layers: int
    cell: str  # "lstm" | "gru"
    dropout_rate: float
    num_outputs: int | None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"hidden_size": COUNT, "num_layers": COUNT, "cell": CELL, "dropout_rate": RATE,
              "num_outputs": OPTIONAL_COUNT}

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = x.astype(self.dtype)
        if x.ndim == 2:  # [B, T]: one feature per step
            x = x[..., None]
        _, outputs = _stack(self)(x, train=train)
        last = nn.Dropout(self.dropout_rate, deterministic=not train)(outputs[:, -1])
        y = nn.Dense(self.num_outputs or 1, dtype=self.dtype,
                     param_dtype=self.param_dtype)(last).astype(jnp.float32)
        return y[:, 0] if self.num_outputs is None else y


@flax.struct.dataclass
class Memory:
    """The decoder's state and what it attends over: `carry` (per layer), and with
    attention the encoder outputs [B, S, H] and the real source positions [B, S]."""

    carry: tuple[Carry, ...]
    outputs: jax.Array | None = None
    source_mask: jax.Array | None = None

    def repeat(self, times: int) -> "Memory":
        """Each row `times` times in a row ([B, ...] -> [B * times, ...]): one per beam."""
        return jax.tree.map(lambda a: jnp.repeat(a, times, axis=0), self)

    def take(self, rows: jax.Array) -> "Memory":
        return jax.tree.map(lambda a: a[rows], self)


ATTENTIONS = ("none", "additive", "dot")


class Attention(nn.Module):
    """Weights [B, T, S] of each decoder output over the encoder outputs, and the context
    vectors [B, T, H] they average. `additive`: Bahdanau et al. 2015's score
    v^T tanh(W_q q + W_k k); `dot`: Luong et al. 2015's q . k. Scores at padded source
    positions are -inf before the softmax, so their weights are exactly 0; the softmax is
    taken in float32 (bf16 weights would not sum to 1)."""

    kind: str  # "additive" | "dot"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, queries, keys, source_mask):
        if self.kind == "additive":
            dense = functools.partial(nn.Dense, keys.shape[-1], dtype=self.dtype,
                                      param_dtype=self.param_dtype)
            hidden = jnp.tanh(dense(name="query")(queries)[:, :, None]
                              + dense(use_bias=False, name="key")(keys)[:, None])
            scores = nn.Dense(1, use_bias=False, dtype=self.dtype,
                              param_dtype=self.param_dtype, name="score")(hidden)[..., 0]
        elif self.kind == "dot":
            scores = jnp.einsum("bth,bsh->bts", queries, keys)
        else:
            raise ValueError(f"unknown attention {self.kind!r}; valid: "
                             f"{', '.join(a for a in ATTENTIONS if a != 'none')}")
        scores = jnp.where(source_mask[:, None, :], scores.astype(jnp.float32), -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bts,bsh->bth", weights.astype(keys.dtype), keys)
        return weights, context


@register("seq2seq")
class Seq2Seq(nn.Module):
    """Encoder-decoder: the encoder's final states (at each source's last real token; id 0
    pads) start the decoder, which reads the shifted target (teacher forcing).

    With `attention` 'additive' or 'dot', each decoder output also attends over the
    encoder's outputs at the real source positions, and the logits are read from
    tanh(W [decoder output; context]) (Luong et al. 2015's attentional hidden state, no
    input feeding, so teacher forcing stays one scan over the target). With 'none' the
    network, its parameters and its numbers are the plain encoder-decoder's.

    `__call__(inputs, targets_in=None, *, train)` -> logits [B, T, tgt_vocab_size]. The
    decoder input comes either as `targets_in`, or, so the model fits the one-input
    `Task.init`/`run_model` contract, inside `inputs` as a dict
    `{"source": [B, S] int, "targets_in": [B, T] int}`. A source wider than
    `max_source_length` (None: any) is refused with a ValueError. `greedy_decode` and
    `beam_search` generate without targets; `attention_weights` gives the weights [B, T, S].
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    cell: str  # "lstm" | "gru"
    dropout_rate: float
    attention: str  # "none" | "additive" | "dot"
    max_source_length: int | None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"src_vocab_size": COUNT, "tgt_vocab_size": COUNT, "embed_dim": COUNT,
              "hidden_size": COUNT, "num_layers": COUNT, "cell": CELL, "dropout_rate": RATE,
              "attention": Field(str, choices=ATTENTIONS,
                                 help="how the decoder reads the encoder: 'none' (its final "
                                      "state only), 'additive' (Bahdanau) or 'dot' (Luong) "
                                      "attention over every real source position"),
              "max_source_length": Field((int, type(None)), check=optional(positive),
                                         help="the widest source [B, S] the model accepts "
                                              "(a wider one is an error); None = any")}

    def setup(self):
        dense_kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        self.src_embed = nn.Embed(self.src_vocab_size, self.embed_dim, **dense_kw)
        self.tgt_embed = nn.Embed(self.tgt_vocab_size, self.embed_dim, **dense_kw)
        self.encoder = _stack(self)
        self.decoder = _stack(self)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.logits = nn.Dense(self.tgt_vocab_size, **dense_kw)
        if self.attention != "none":
            self.attend = Attention(self.attention, **dense_kw)
            self.combine = nn.Dense(self.hidden_size, use_bias=False, **dense_kw)

    def __call__(self, inputs, targets_in=None, *, train: bool):
        if targets_in is None:
            inputs, targets_in = inputs["source"], inputs["targets_in"]
        memory = self.encode(inputs, train=train)
        return self.decode(targets_in, memory, train=train)[1]

    def encode(self, source, *, train: bool = False) -> Memory:
        """What the decoder starts from: the encoder's per-layer final states, taken at each
        source's last real token, and (with attention) its outputs and the real positions."""
        if self.max_source_length is not None and source.shape[1] > self.max_source_length:
            raise ValueError(f"source of length {source.shape[1]} is longer than the model's "
                             f"max_source_length={self.max_source_length}")
        lengths = lengths_from_padding(source)
        carry, outputs = self.encoder(self.src_embed(source), train=train, seq_lengths=lengths)
        if self.attention == "none":
            return Memory(carry)
        real = jnp.arange(source.shape[1])[None, :] < lengths[:, None]
        return Memory(carry, outputs, real)

    def decode(self, targets_in, memory: Memory, *, train: bool = False):
        """(the memory with the decoder's state, logits [B, T, V]) of reading `targets_in`
        from `memory` (`encode`'s, or one a previous `decode` returned)."""
        carry, logits, _ = self._decode(targets_in, memory, train=train)
        return memory.replace(carry=carry), logits

    def attention_weights(self, source, targets_in) -> jax.Array:
        """[B, T, S] attention weights of each target step over the source (teacher forced:
        pass the decoded tokens to see what a decoding attended to)."""
        if self.attention == "none":
            raise ValueError("attention_weights needs a model with attention; this one has "
                             "attention='none'")
        return self._decode(targets_in, self.encode(source))[2]

    def _decode(self, targets_in, memory: Memory, *, train: bool = False):
        carry, x = self.decoder(self.tgt_embed(targets_in), train=train,
                                initial_carry=memory.carry)
        weights = None
        if self.attention != "none":
            weights, context = self.attend(x, memory.outputs, memory.source_mask)
            x = jnp.tanh(self.combine(jnp.concatenate([x, context.astype(x.dtype)], axis=-1)))
        x = self.dropout(x, deterministic=not train)
        return carry, self.logits(x).astype(jnp.float32), weights


def _until_end(tokens: jax.Array, eos_id: int, pad_id: int = PAD_ID) -> jax.Array:
    """`tokens` [B, L] with everything after each row's first `eos_id` set to `pad_id`."""
    ended = jnp.cumsum(tokens == eos_id, axis=1) - (tokens == eos_id) > 0
    return jnp.where(ended, jnp.asarray(pad_id, tokens.dtype), tokens)


def greedy_decode(model: Seq2Seq, variables: Mapping[str, Any], source: jax.Array, *,
                  bos_id: int, length: int, eos_id: int | None = None) -> jax.Array:
    """[B, length] target tokens: from `bos_id`, each step feeds back the most likely
    token; with `eos_id`, the tokens after each row's first `eos_id` are padding (0).
    jit-able (`bos_id`, `length`, `eos_id` static)."""
    memory = model.apply(variables, source, method=Seq2Seq.encode)
    first = jnp.full((source.shape[0],), bos_id, dtype=source.dtype)

    def step(state, _):
        memory, token = state
        memory, logits = model.apply(variables, token[:, None], memory, method=Seq2Seq.decode)
        token = jnp.argmax(logits[:, -1], axis=-1).astype(source.dtype)
        return (memory, token), token

    _, tokens = jax.lax.scan(step, (memory, first), None, length=length)
    tokens = tokens.T
    return tokens if eos_id is None else _until_end(tokens, eos_id)


def beam_search(model: Seq2Seq, variables: Mapping[str, Any], source: jax.Array, *,
                bos_id: int, eos_id: int, length: int, beam_width: int,
                length_penalty: float) -> jax.Array:
    """[B, length] target tokens: the most likely of `beam_width` hypotheses kept at every
    step (log-probability sums; a hypothesis that has emitted `eos_id` is finished and
    extends only with padding at no cost), chosen at the end by score / lp, with GNMT's
    lp = ((5 + |y|) / 6) ** length_penalty (Wu et al. 2016; 0 = no normalisation), |y|
    the tokens up to and including the end. Tokens after the end are padding (0). With
    `beam_width` 1 this is `greedy_decode(..., eos_id=eos_id)`. jit-able (all keyword
    arguments static)."""
    batch, k = source.shape[0], beam_width
    memory = model.apply(variables, source, method=Seq2Seq.encode).repeat(k)
    # Only the first beam is live at the start, so the first step does not pick k copies.
    scores = jnp.tile(jnp.asarray([0.0] + [-jnp.inf] * (k - 1), jnp.float32), (batch, 1))
    tokens = jnp.zeros((batch, k, length), source.dtype)
    last = jnp.full((batch, k), bos_id, source.dtype)
    finished = jnp.zeros((batch, k), bool)

    def step(state, t):
        memory, scores, tokens, last, finished = state
        memory, logits = model.apply(variables, last.reshape(-1, 1), memory,
                                     method=Seq2Seq.decode)
        logp = jax.nn.log_softmax(logits[:, -1]).reshape(batch, k, -1)
        vocab = logp.shape[-1]
        pad_only = jnp.where(jnp.arange(vocab) == PAD_ID, 0.0, -jnp.inf)
        logp = jnp.where(finished[..., None], pad_only, logp)
        best, flat = jax.lax.top_k((scores[..., None] + logp).reshape(batch, k * vocab), k)
        beam, token = flat // vocab, (flat % vocab).astype(source.dtype)
        rows = (jnp.arange(batch)[:, None] * k + beam).reshape(-1)
        tokens = jnp.take_along_axis(tokens, beam[..., None], axis=1).at[:, :, t].set(token)
        finished = jnp.take_along_axis(finished, beam, axis=1) | (token == eos_id)
        return (memory.take(rows), best, tokens, token, finished), None

    (_, scores, tokens, _, _), _ = jax.lax.scan(
        step, (memory, scores, tokens, last, finished), jnp.arange(length))
    ends = jnp.where(jnp.any(tokens == eos_id, axis=-1),
                     jnp.argmax(tokens == eos_id, axis=-1) + 1, length)
    normalised = scores / ((5.0 + ends) / 6.0) ** length_penalty
    chosen = jnp.argmax(normalised, axis=1)
    return jnp.take_along_axis(tokens, chosen[:, None, None], axis=1)[:, 0]
