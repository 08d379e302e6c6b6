"""word2vec's skip-gram model (Mikolov et al. 2013): two embedding tables.

`center` holds the input vectors v_w (the word vectors one exports and compares) and
`context` the output vectors u_w. Initialised as the reference C code does: `center`
uniform in [-0.5 / D, 0.5 / D], `context` zero (so the first gradients move `context`
alone, and both tables leave zero together). What a pair's score means and how negatives
are drawn is the task's (`jaxdl.tasks.word2vec`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.fields import COUNT
from jaxdl.models.registry import register

CENTER, CONTEXT = "center", "context"


def _center_init(key, shape, dtype=jnp.float32):
    bound = 0.5 / shape[-1]
    return jax.random.uniform(key, shape, dtype, -bound, bound)


@register("word2vec")
class Word2Vec(nn.Module):
    """`model(centers [B])` -> the center vectors [B, D]; `model(centers, candidates
    [B, M])` -> the scores v_center . u_candidate [B, M] (float32): the logits of "this
    candidate is a context word of this center"."""

    vocab_size: int
    embed_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    FIELDS = {"vocab_size": COUNT, "embed_dim": COUNT}

    @nn.compact
    def __call__(self, centers, candidates=None, *, train: bool = False):
        del train  # no dropout, no state: the same in both modes
        shape = (self.vocab_size, self.embed_dim)
        center = self.param(CENTER, _center_init, shape, self.param_dtype)
        context = self.param(CONTEXT, nn.initializers.zeros, shape, self.param_dtype)
        v = jnp.take(center, centers, axis=0).astype(self.dtype)
        if candidates is None:
            return v
        u = jnp.take(context, candidates, axis=0).astype(self.dtype)
        return jnp.einsum("bd,bmd->bm", v, u).astype(jnp.float32)
