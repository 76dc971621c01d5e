"""bfloat16 matmuls with float32 accumulation, forward and backward, on XLA:CPU's fast path.

On a CPU with AMX (or AVX-512 BF16) XLA hands a dot to YNNPACK in bfloat16 only in one form:
bf16 x bf16 -> f32, the left operand [.., M, K] and the right [.., K, N] in row-major order
(`IsDotSupportedByYnn` in XLA's `backends/cpu/ynn_support.cc`). Any other dot is computed in
float32. Three things keep a bfloat16 DiT off that path:

1. Flax's `dtype=bfloat16` asks for a bf16 result: bf16 x bf16 -> bf16 is not in the set, so
   the dot is upcast to f32 and run at f32 speed.
2. Autodiff's transposed dots (dx = g W^T, dW = x^T g) take a float32 cotangent: f32 again.
3. Even in bf16, those transposed dots contract over the right operand's last axis or the left
   one's first axis. XLA folds a plain transpose of an operand into the dot's dimension numbers
   (the operand stays in memory as it is), so the dot is rejected and run in f32, or in some
   programs not run at all ("Unsupported element type for DotThunk: BF16 x BF16 = F32").

`einsum` (and `dense`, built on it) fixes all three: inputs cast to bf16,
`preferred_element_type=f32`, and a hand-written backward pass whose dots also take bf16
inputs. For (3) the backward dots contract over TWO axes (the contracted axis split in two, a
free reshape): XLA's dot decomposer then canonicalises the dot with a real transpose into
[M, K] x [K, N], which YNNPACK takes. On this 2-core CPU a [2560, 384] x [384, 1536] product
runs at ~1,900 GFLOP/s in that form and ~250 in f32, and its two transposed forms at ~1,050
and ~1,550 with the split against ~250 without it (`benchmarks/train_step.py` measures the
whole step).

This is the precision policy of mixed-precision training (Micikevicius et al. 2018): bf16
matmul operands and layer outputs, f32 accumulation, and f32 parameters, residual stream, norms,
softmax and optimizer. Results are the products of the bf16-rounded operands summed in f32.
"""

import functools
import math

import jax
import jax.numpy as jnp

from sora_jax.models import blockwise_attention

F32 = jnp.float32
BF16 = jnp.bfloat16


def applies_to(dtype) -> bool:
    """Whether layers computing in `dtype` take this path: bfloat16 on the CPU backend. TPUs
    and GPUs run bf16 dots natively in any layout, and there the reshapes below would only
    cross sharded axes."""
    return dtype is not None and jnp.dtype(dtype) == BF16 and jax.default_backend() == "cpu"


def _dot(spec: str, a, b):
    return jnp.einsum(spec, a.astype(BF16), b.astype(BF16), preferred_element_type=F32)


def _split(n: int) -> int | None:
    """A factor s of n up to 7 (the contracted axis is split into (s, n / s)); None if n has
    none (n prime, or e.g. 121)."""
    return next((s for s in (2, 3, 5, 7) if n % s == 0 and n > s), None)


def _backward_dot(spec: str, a, b):
    """`_dot` for a backward-pass product, its one contracted axis split in two (see above);
    in float32 when the axis has no small factor (or more than one axis is contracted)."""
    inputs, out = spec.split("->")
    a_spec, b_spec = inputs.split(",")
    contracted = [c for c in a_spec if c in b_spec and c not in out]
    split = _split(a.shape[a_spec.index(contracted[0])]) if len(contracted) == 1 else None
    if split is None:
        # Left as it is, XLA:CPU may hand this bf16 dot to a kernel without bf16 support
        # ("Unsupported element type for DotThunk"): computed in f32 instead.
        return jnp.einsum(spec, a.astype(F32), b.astype(F32))
    axis, new = contracted[0], next(c for c in "zyxwvutsrq" if c not in spec)

    def split_axis(x, x_spec):
        i = x_spec.index(axis)
        shape = (*x.shape[:i], split, x.shape[i] // split, *x.shape[i + 1 :])
        return x.reshape(shape), x_spec[:i] + new + x_spec[i:]

    (a, a_spec), (b, b_spec) = split_axis(a, a_spec), split_axis(b, b_spec)
    return _dot(f"{a_spec},{b_spec}->{out}", a, b)


def dense(x, kernel, num_in: int):
    """Contracts x's last `num_in` axes with kernel's first `num_in` axes; float32 result.
    One [M, K] x [K, N] `einsum` on the flattened operands (the reshapes are free); the
    gradients come back in x's and kernel's dtypes."""
    k = math.prod(kernel.shape[:num_in])
    y_MxN = einsum("mk,kn->mn", x.reshape(-1, k), kernel.reshape(k, -1))
    return y_MxN.reshape(*x.shape[: x.ndim - num_in], *kernel.shape[num_in:])


def einsum(spec: str, a, b):
    """`jnp.einsum(spec, a, b)` of two operands in bf16 with an f32 result, both passes.

    Every index must appear in exactly two of the three terms, or in all three (a batch axis):
    the attention products 'bnhk,bmhk->bhnm' and 'bhnm,bmhk->bnhk' are of that kind. Their
    batch axes make XLA canonicalise every backward dot with real transposes.
    """
    return _einsum(spec, a.astype(BF16), b.astype(BF16))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _einsum(spec: str, a, b):
    return _dot(spec, a, b)


def _einsum_fwd(spec: str, a, b):
    return _dot(spec, a, b), (a, b)


def _einsum_bwd(spec: str, residuals, g):
    a, b = residuals
    inputs, out = spec.split("->")
    a_spec, b_spec = inputs.split(",")
    g = g.astype(BF16)
    da = _backward_dot(f"{out},{b_spec}->{a_spec}", g, b).astype(BF16)
    db = _backward_dot(f"{a_spec},{out}->{b_spec}", a, g).astype(BF16)
    return da, db


_einsum.defvjp(_einsum_fwd, _einsum_bwd)


def attention(q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, mask=None):
    """Softmax attention with bf16 products and f32 scores and softmax; `mask` as
    `jax.nn.dot_product_attention` takes it (True = visible, broadcast to [B, H, N, M]).
    Returns [B, N, H, K] in the queries' dtype."""
    # Scaled on the queries, not the [B, H, N, M] scores: XLA:CPU fuses the elementwise work
    # after a dot into its YNNPACK call, and a scalar there becomes a materialised
    # [B, H, N, M] operand in both passes.
    q_BxNxHxK = q_BxNxHxK * jnp.asarray(q_BxNxHxK.shape[-1] ** -0.5, q_BxNxHxK.dtype)
    scores = einsum("bnhk,bmhk->bhnm", q_BxNxHxK, k_BxMxHxK)
    if mask is not None:
        scores = jnp.where(mask, scores, blockwise_attention.MASKED_SCORE)
    probs = jax.nn.softmax(scores, axis=-1)
    return einsum("bhnm,bmhk->bnhk", probs, v_BxMxHxK).astype(q_BxNxHxK.dtype)
