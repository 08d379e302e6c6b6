"""Small shared pieces of the model files: activations and normalisation by name, the
convolution every model uses (`Conv`) and a transposed convolution, both with a kernel
gradient that avoids a slow XLA CPU path, max pooling with a fast gradient, and random draws
made per example (`per_example_rngs`, `ExampleKeys`) so that they do not depend on how a
batch is split over devices."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": nn.tanh,
    "gelu": nn.gelu,
    "leaky_relu": nn.leaky_relu,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def batch_norm(*, train: bool, momentum: float, axis_name: str | None, dtype, param_dtype,
               name: str | None = None, epsilon: float = 1e-5,
               scale_init: Callable = nn.initializers.ones) -> nn.BatchNorm:
    """BatchNorm whose statistics are averaged over `axis_name` (the pmap data axis) if set.

    Under the sharded backend the batch axis is global already, so axis_name stays None.
    `epsilon` and `scale_init` default to Flax's own defaults (1e-5, ones); a residual
    block passes `scale_init=nn.initializers.zeros` to zero-init its last BatchNorm.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, axis_name=axis_name,
                        epsilon=epsilon, scale_init=scale_init, dtype=dtype,
                        param_dtype=param_dtype, name=name)


def max_pool(x, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID"):
    """`nn.max_pool`, with non-overlapping windows (strides == window, 'VALID') taken as a
    reshape and a max: the same output, and a gradient XLA:CPU runs 8x faster than its
    select-and-scatter (28 ms vs 3 ms for 128x28x28x16, 2x2; 2-core CPU dev VM). Where a
    window holds tied maxima, the gradient is shared among them (jnp.max's rule) instead of
    going to the first; the total is the same. Other windows go to nn.max_pool."""
    window = tuple(window_shape)
    strides = (1,) * len(window) if strides is None else tuple(strides)  # flax's default
    spatial = x.shape[1:1 + len(window)]
    if strides != window or padding != "VALID" or x.ndim != len(window) + 2:
        return nn.max_pool(x, window, strides=strides, padding=padding)
    out = [size // k for size, k in zip(spatial, window)]
    x = x[(slice(None), *(slice(0, o * k) for o, k in zip(out, window)))]  # VALID drops the rest
    split = [x.shape[0]]
    for o, k in zip(out, window):
        split += [o, k]
    x = x.reshape(*split, x.shape[-1])
    return jnp.max(x, axis=tuple(2 + 2 * i for i in range(len(window))))


POOLS: dict[str, Callable] = {"max": max_pool, "avg": nn.avg_pool}


def pool(kind: str) -> Callable:
    if kind not in POOLS:
        raise ValueError(f"unknown pooling {kind!r}; valid: {', '.join(sorted(POOLS))}")
    return functools.partial(POOLS[kind], window_shape=(2, 2), strides=(2, 2))


def _adaptive_pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) averaging weights of PyTorch's adaptive average pool: output i
    averages inputs floor(i * in / out) .. ceil((i + 1) * in / out) - 1."""
    m = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -(-((i + 1) * size_in) // size_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jnp.ndarray, output_size: tuple[int, int]) -> jnp.ndarray:
    """PyTorch's AdaptiveAvgPool2d for NHWC `x` (static shapes), in x's dtype."""
    (h, w), (oh, ow) = x.shape[1:3], output_size
    if (h, w) == (oh, ow):
        return x
    if not h or not w:
        raise ValueError(f"adaptive_avg_pool: empty feature map {x.shape}; the input is too "
                         "small for this network")
    mh = jnp.asarray(_adaptive_pool_matrix(h, oh), x.dtype)
    mw = jnp.asarray(_adaptive_pool_matrix(w, ow), x.dtype)
    return jnp.einsum("nhwc,ih,jw->nijc", x, mh, mw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose(x, kernel, strides: tuple[int, ...], padding):
    """`lax.conv_transpose(x, kernel, strides, padding)` (channels last, kernel (..., in,
    out), not flipped), the same forward and input gradient, but a kernel gradient that
    XLA's CPU backend runs fast.

    Autodiff takes the kernel gradient of a transposed convolution as a convolution of the
    input-dilated x with the output gradient, which XLA on CPU runs on a generic path: at
    stride 2 with DCGAN's 7x7x64 -> 14x14x32 layer (batch 64) 63 ms against 4.8 ms here.
    Here it is the kernel gradient of the layer's adjoint instead: <g, T_k x> = <T_k* g, x>
    with T_k* g a strided convolution of g, whose kernel gradient XLA lowers to a
    window-dilated convolution, on its fast path."""
    return lax.conv_transpose(x, kernel, strides, padding)


def _conv_transpose_fwd(x, kernel, strides, padding):
    return lax.conv_transpose(x, kernel, strides, padding), (x, kernel)


def _conv_transpose_bwd(strides, padding, residuals, g):
    x, kernel = residuals

    def adjoint(g, kernel):  # T_k* g: the transposed convolution's input gradient
        _, input_vjp = jax.vjp(lambda x: lax.conv_transpose(x, kernel, strides, padding), x)
        return input_vjp(g)[0]

    _, kernel_vjp = jax.vjp(lambda kernel: adjoint(g, kernel), kernel)
    return adjoint(g, kernel), kernel_vjp(x)[0]


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class ConvTransposeFastGrad(nn.Module):
    """`nn.ConvTranspose` (same parameters `kernel` (*kernel_size, in, features) and `bias`,
    same initialisers and output) through `conv_transpose`, whose kernel gradient is fast on
    CPU. Covers what the models use: one batch axis, any strides, padding 'SAME', 'VALID' or
    (low, high) pairs; no kernel dilation, mask, circular padding or transposed kernel.
    Give it the name nn.ConvTranspose would get ('ConvTranspose_i') to keep checkpoints."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: str | Sequence[tuple[int, int]] = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, inputs):
        kernel_size, strides = tuple(self.kernel_size), tuple(self.strides)
        if inputs.ndim != len(kernel_size) + 2 or len(strides) != len(kernel_size):
            raise ValueError(f"ConvTransposeFastGrad: input {inputs.shape} needs one batch axis, "
                             f"{len(kernel_size)} spatial axes (kernel_size {kernel_size}, "
                             f"strides {strides}) and channels")
        padding = self.padding if isinstance(self.padding, str) else \
            tuple((int(low), int(high)) for low, high in self.padding)
        kernel = self.param("kernel", self.kernel_init,
                            (*kernel_size, inputs.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) \
            if self.use_bias else None
        inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = conv_transpose(inputs, kernel, strides, padding)
        return y if bias is None else y + bias


# --- convolution with a weight gradient fast on XLA:CPU ---------------------------------------
#
# XLA:CPU takes a convolution's weight gradient as a "backward filter" convolution that reads
# the layer's input through a transpose (batch to the minor axis). Its fusion pass folds the
# elementwise ops that produced that input (BatchNorm, ReLU, pooling, a residual sum, reaching
# back over several blocks) into the transpose, so they are recomputed in a cache-hostile
# order: in ResNet-20 the nine largest of those transposes were 36% of the op time
# (benchmarks/README.md, "The convolution weight gradient"). Handing the weight gradient the
# input as the output of a conditional, which XLA does not fuse through (XLA:CPU drops
# optimization barriers before it fuses), leaves XLA's own convolution reading a plain
# buffer: the same gradient, bitwise; ResNet-20's step 1.3-1.4x faster, the speedrun's CNN
# (max pooling then) 1.2-1.4x, mnist_cnn's and DCGAN's unchanged (2-core CPU dev VM with AVX-512).


def _own_buffer(x, kernel):
    """`x`, computed into its own buffer on XLA:CPU. The predicate is a replicated value
    (the kernel's first entry equals itself), so no device waits for another; the other
    branch (taken only when that entry is NaN) returns the same values through a select
    that XLA folds away, so that JAX, which prunes a conditional whose every branch only
    forwards its operand, keeps this one."""
    first = kernel.reshape(-1)[0]
    return lax.cond(first == first, lambda v: v,
                    lambda v: jnp.where(jnp.isnan(v), v, v), x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_own_buffer_grad(x, kernel, conv_kwargs):
    return lax.conv_general_dilated(x, kernel, **dict(conv_kwargs))


def _conv_own_buffer_grad_fwd(x, kernel, conv_kwargs):
    return _conv_own_buffer_grad(x, kernel, conv_kwargs), (x, kernel)


def _conv_own_buffer_grad_bwd(conv_kwargs, residuals, g):
    x, kernel = residuals
    kwargs = dict(conv_kwargs)
    input_grad = jax.vjp(lambda x: lax.conv_general_dilated(x, kernel, **kwargs), x)[1](g)[0]

    def kernel_grad(x, g):
        return jax.vjp(lambda k: lax.conv_general_dilated(x, k, **kwargs), kernel)[1](g)[0]

    # Chosen when lowering: the input in its own buffer on CPU; as lax has it elsewhere.
    return input_grad, lax.platform_dependent(
        x, g, cpu=lambda x, g: kernel_grad(_own_buffer(x, kernel), g), default=kernel_grad)


_conv_own_buffer_grad.defvjp(_conv_own_buffer_grad_fwd, _conv_own_buffer_grad_bwd)


def _hashable(value):
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):  # not a namedtuple
        return tuple(_hashable(v) for v in value)
    return value


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`: the same forward, input gradient and weight gradient
    (lax's own, as XLA computes them) on every platform; on CPU the weight gradient reads
    the input from its own buffer (see above). The platform is chosen in the backward pass
    only, so tools that intercept the forward convolution (Qwix) see lax's call."""
    kwargs = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                  feature_group_count=feature_group_count,
                  batch_group_count=batch_group_count, precision=precision,
                  preferred_element_type=preferred_element_type)
    return _conv_own_buffer_grad(lhs, rhs, tuple((k, _hashable(v)) for k, v in kwargs.items()))


class Conv(nn.Conv):
    """`nn.Conv` (same fields, parameters, names and forward) whose weight gradient is fast on
    XLA:CPU (`conv_general_dilated` above). Every model file uses it instead of nn.Conv."""

    conv_general_dilated: Callable = conv_general_dilated


def plain_convolutions():
    """A context in which every `Conv` traces with `lax.conv_general_dilated` itself, as
    nn.Conv does (XLA's weight gradient reading the input wherever XLA fuses it): the
    benchmarks' A/B of the weight gradient (`--conv_grad xla`). A Flax method interceptor,
    active only inside the `with` block."""

    def plain(next_fun, args, kwargs, context):
        if isinstance(context.module, Conv):  # a frozen dataclass: set the field underneath
            object.__setattr__(context.module, "conv_general_dilated", lax.conv_general_dilated)
        return next_fun(*args, **kwargs)
    return nn.intercept_methods(plain)


# --- random draws per example -----------------------------------------------------------------
#
# A stock `nn.Dropout` draws one mask for the batch it sees from one key: under pmap each
# device sees its own rows, so the mask of an example would depend on the device count.
# Inside `per_example_rngs(rows)` every dropout layer (and `ExampleKeys`) draws instead for
# each example from fold_in(the layer's key, the example's row in the global batch), so a
# row's mask is the same whether the batch sits on 1 device, on 4 under pmap or on a mesh.


class ExampleKeys(nn.Module):
    """`ExampleKeys(stream)(n)`: one key per example of a batch of `n`, from the model's
    rng stream `stream` (declared in the model's `rng_streams`). Inside
    `per_example_rngs(rows)` example i's key is fold_in(stream key, rows[i]) (its row in the
    global batch), elsewhere fold_in(stream key, i). Draw per example from these keys, e.g.
    `jax.vmap(lambda k: jax.random.normal(k, x.shape[1:]))(keys)`, and the draw does not
    depend on the device count."""

    stream: str

    def __call__(self, n: int, rows: jax.Array | None = None) -> jax.Array:
        rows = jnp.arange(n) if rows is None else rows
        return fold_rows(self.make_rng(self.stream), rows)


def fold_rows(key: jax.Array, rows: jax.Array) -> jax.Array:
    """[len(rows)] keys: fold_in(key, row) for each row (equal to split(key, n)[row])."""
    return jax.vmap(lambda row: jax.random.fold_in(key, row))(rows)


class BatchAxisError(ValueError):
    """A per-example draw whose input does not have the batch as its first axis."""


def _batch_rows(rows: jax.Array, size: int, module: nn.Module) -> jax.Array:
    if size != rows.shape[0]:
        path = "/".join(module.scope.path) if module.scope is not None else type(module).__name__
        raise BatchAxisError(f"{type(module).__name__} at {path!r} draws per example along "
                             f"the first axis, but its input's first axis has {size} entries "
                             f"and the batch {rows.shape[0]}: keep the batch axis first")
    return rows


def _dropout_per_example(module: nn.Dropout, rows, inputs, deterministic=None, rng=None):
    """`nn.Dropout.__call__` with the mask drawn per example (see above)."""
    deterministic = nn.merge_param("deterministic", module.deterministic, deterministic)
    if module.rate == 0.0 or deterministic:
        return inputs
    if module.rate == 1.0:  # as flax: no division by zero in the gradient
        return jnp.zeros_like(inputs)
    keep = 1.0 - module.rate
    if rng is None:
        rng = module.make_rng(module.rng_collection)
    shape = list(inputs.shape)
    for dim in module.broadcast_dims:
        shape[dim] = 1
    if inputs.ndim == 0 or 0 in {d % inputs.ndim for d in module.broadcast_dims}:
        # One mask shared by the whole batch: the same on every device already.
        mask = jax.random.bernoulli(rng, keep, shape)
    else:
        keys = fold_rows(rng, _batch_rows(rows, inputs.shape[0], module))
        mask = jax.vmap(lambda key: jax.random.bernoulli(key, keep, shape[1:]))(keys)
    mask = jnp.broadcast_to(mask, inputs.shape)
    return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


def per_example_rngs(rows: jax.Array):
    """Context manager: while it is open, every `nn.Dropout` (not a subclass with its own
    `__call__`) and every `ExampleKeys` draws per example, example i from its row `rows[i]`
    of the global batch. Apply the model inside it; tracing is what it affects."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__":
            if type(module).__call__ is nn.Dropout.__call__:
                return _dropout_per_example(module, rows, *args, **kwargs)
            if isinstance(module, ExampleKeys):
                n = args[0] if args else kwargs["n"]
                return next_fun(n, rows=_batch_rows(rows, n, module))
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)
