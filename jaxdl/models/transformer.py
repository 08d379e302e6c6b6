"""A small decoder-only Transformer language model (GPT-style, pre-LayerNorm).

`transformer_lm`: token embedding (+ learned positions) -> `num_layers` blocks of
[LayerNorm -> causal multi-head self-attention -> dropout -> residual, LayerNorm -> MLP
(GELU) -> dropout -> residual] -> LayerNorm -> logits over the vocabulary (Radford et al.
2019's layout; Vaswani et al. 2017's blocks). Attention is Flax's
`MultiHeadDotProductAttention` under `nn.make_causal_mask`, with the softmax in float32
also under bf16 compute. Positions are either a learned table of `max_len` rows added to
the embeddings, or rotary (Su et al. 2021: queries and keys rotated by their position, so
attention sees relative offsets; no parameters).

Dropout is on the embeddings and on each residual branch, through `nn.Dropout`, so under
`jaxdl.models.layers.per_example_rngs` each example's mask depends only on its row in the
global batch. Dropout on the attention probabilities is not offered: Flax's attention draws
that mask from one key for the whole per-device batch, which would make the numbers depend
on the device count.

Sampling: `continue_from(tokens, carry)` has `lstm_lm`'s contract (see
`jaxdl.models.recurrent.sample_tokens`, which the language-model task calls), with a
carry that is the last `max_len` tokens read (a left-aligned window and how many of its
slots are filled). Past `max_len` tokens the window slides: the oldest token drops out,
so a prompt plus generation longer than the context window is sampled with the last
`max_len` tokens as context, as GPT-2 samples do.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.fields import COUNT, RATE
from jaxdl.models.registry import register
from jaxdl.schema import Field

POSITIONS = ("learned", "rotary")
POSITION = Field(str, choices=POSITIONS, help="'learned': a table of max_len position "
                                              "embeddings added to the tokens'; 'rotary': "
                                              "queries and keys rotated by position (RoPE)")
# RoFormer's base wavelength (Su et al. 2021), which GPT-NeoX and LLaMA keep: part of the
# method's definition, not a knob of an experiment.
ROTARY_BASE = 10_000.0


def rotate(x: jax.Array) -> jax.Array:
    """Rotary position embedding of `x` [B, T, heads, head_dim] (head_dim even): the pairs
    (x_i, x_{i + head_dim/2}) of position t turned by t * ROTARY_BASE^(-2i / head_dim)."""
    half = x.shape[-1] // 2
    frequencies = ROTARY_BASE ** (-np.arange(half, dtype=np.float32) / half)
    angles = np.arange(x.shape[1], dtype=np.float32)[:, None] * frequencies  # [T, half]
    cos = jnp.asarray(np.cos(angles))[None, :, None, :]
    sin = jnp.asarray(np.sin(angles))[None, :, None, :]
    first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    turned = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], -1)
    return turned.astype(x.dtype)


def rotary_attention(query, key, value, mask=None, dtype=None, precision=None,
                     force_fp32_for_softmax=False):
    """`nn.dot_product_attention` on rotated queries and keys (an `attention_fn` for
    `MultiHeadDotProductAttention`)."""
    return nn.dot_product_attention(rotate(query), rotate(key), value, mask=mask,
                                    deterministic=True, dtype=dtype, precision=precision,
                                    force_fp32_for_softmax=force_fp32_for_softmax)


class DecoderBlock(nn.Module):
    """Pre-LayerNorm block: x + Dropout(CausalAttention(LN(x))), then x + Dropout(MLP(LN(x)))."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float
    rotary: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))  # [B, 1, T, T]
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, force_fp32_for_softmax=True, deterministic=True,
            attention_fn=rotary_attention if self.rotary else nn.dot_product_attention,
            **kw)(nn.LayerNorm(**kw)(x), mask=mask)
        x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = nn.Dense(self.mlp_dim, **kw)(nn.LayerNorm(**kw)(x))
        h = nn.Dense(x.shape[-1], **kw)(nn.gelu(h))
        return x + nn.Dropout(self.dropout_rate, deterministic=not train)(h)


@register("transformer_lm")
class TransformerLM(nn.Module):
    """Decoder-only Transformer: `__call__(tokens [B, T] int, train)` -> logits [B, T, V]
    (float32), T <= `max_len`; the logit at t depends on tokens 0..t only.

    `tie_embeddings`: the logits are the final features times the token embedding table,
    scaled by 1/sqrt(embed_dim) (the Flax lm1b example's tied decoder), instead of a
    separate Dense layer.
    """

    vocab_size: int
    max_len: int
    embed_dim: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    dropout_rate: float
    positions: str  # "learned" | "rotary"
    tie_embeddings: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"vocab_size": COUNT,
              "max_len": Field(int, check=COUNT.check, help="the context window in tokens: "
                                                            "the longest sequence it reads"),
              "embed_dim": Field(int, check=COUNT.check, help="the model width; a multiple "
                                                              "of num_heads"),
              "num_heads": COUNT, "num_layers": COUNT,
              "mlp_dim": Field(int, check=COUNT.check, help="the MLP's hidden width"),
              "dropout_rate": RATE, "positions": POSITION,
              "tie_embeddings": Field(bool, help="the logits reuse the token embedding table "
                                                 "instead of a Dense layer of their own")}

    def setup(self):
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; valid: "
                             f"{', '.join(POSITIONS)}")
        head_dim, rest = divmod(self.embed_dim, self.num_heads)
        if rest or (self.positions == "rotary" and head_dim % 2):
            raise ValueError(f"transformer_lm: embed_dim={self.embed_dim} must split into "
                             f"num_heads={self.num_heads} heads"
                             + (" of an even width (rotary positions turn pairs)"
                                if self.positions == "rotary" else ""))
        self.embed = nn.Embed(self.vocab_size, self.embed_dim, **kw)
        if self.positions == "learned":
            self.position_embed = nn.Embed(self.max_len, self.embed_dim, **kw)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.blocks = [DecoderBlock(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                                    dropout_rate=self.dropout_rate,
                                    rotary=self.positions == "rotary", **kw)
                       for _ in range(self.num_layers)]
        self.final_norm = nn.LayerNorm(**kw)
        if not self.tie_embeddings:
            self.logits = nn.Dense(self.vocab_size, **kw)

    def __call__(self, tokens, *, train: bool):
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"transformer_lm reads at most max_len={self.max_len} tokens, "
                             f"got a sequence of {length}")
        x = self.embed(tokens)
        if self.positions == "learned":
            x = x + self.position_embed(jnp.arange(length))[None]
        x = self.dropout(x, deterministic=not train)
        for block in self.blocks:
            x = block(x, train=train)
        x = self.final_norm(x)
        if self.tie_embeddings:
            logits = self.embed.attend(x) / jnp.sqrt(jnp.asarray(self.embed_dim, x.dtype))
        else:
            logits = self.logits(x)
        return logits.astype(jnp.float32)

    def initial_state(self, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """An empty context: (window [B, max_len] int32, filled slots 0)."""
        return jnp.zeros((batch_size, self.max_len), jnp.int32), jnp.zeros((), jnp.int32)

    def continue_from(self, tokens, carry, *, train: bool = False):
        """(context after `tokens`, their logits [B, T, V]) read after context `carry`
        (None: empty). Each chunk of at most `max_len` new tokens is read in one pass over
        the window of the last `max_len` tokens; causality makes the unfilled slots after
        them harmless. A token that slides the window sees the `max_len` tokens up to it
        when the chunk is one token (as in sampling), fewer inside a longer chunk."""
        if carry is None:
            carry = self.initial_state(tokens.shape[0])
        pieces = []
        for start in range(0, tokens.shape[1], self.max_len):
            carry, logits = self._read_chunk(tokens[:, start:start + self.max_len], carry,
                                             train=train)
            pieces.append(logits)
        return carry, jnp.concatenate(pieces, axis=1)

    def _read_chunk(self, tokens, carry, *, train: bool):
        window, filled = carry
        chunk, size = tokens.shape[1], self.max_len
        # Everything read so far (left-aligned) with the chunk after it, then the last
        # `size` of those tokens.
        joined = jax.lax.dynamic_update_slice(
            jnp.concatenate([window, jnp.zeros_like(window[:, :chunk])], axis=1),
            tokens.astype(window.dtype), (0, filled))
        drop = jnp.maximum(filled + chunk - size, 0)
        window = jax.lax.dynamic_slice_in_dim(joined, drop, size, axis=1)
        logits = self(window, train=train)
        logits = jax.lax.dynamic_slice_in_dim(logits, filled - drop, chunk, axis=1)
        return (window, jnp.minimum(filled + chunk, size)), logits

