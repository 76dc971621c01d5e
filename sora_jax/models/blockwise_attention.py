"""Memory-efficient exact attention: softmax attention computed block by block.

`jax.nn.dot_product_attention` by default lowers to XLA's plain attention (on GPU too, unless
asked for cuDNN), which holds the [B, H, N, M] score matrix: the 111,600 tokens of a 5 s 720p
clip need ~1 TiB of float32 scores for one 20-head layer.
Here queries are taken `block_q` at a time and keys `block_k` at a time, and the softmax is
accumulated online over key blocks (a running maximum and sum per query, the FlashAttention
recurrence of Dao et al. 2022, Rabe & Staats 2021), so memory grows with N x block instead of
N x M. The backward pass is written out (`jax.custom_vjp`): it keeps only the output and each
query's score maximum and softmax sum, recomputes each score block, and takes dq in one sweep
over key blocks and dk, dv in one sweep over query blocks. Plain JAX loops, no kernel: on
TPU/GPU a Pallas or cuDNN kernel would be faster; this is the portable, exact reference.

Masks are given as segment ids instead of a dense [B, 1, N, M] mask (which would itself be
quadratic): `segment_mask` is the one rule, shared with the dense path in `dit.py`. Results
match `jax.nn.dot_product_attention` with that mask, including rows with no visible key (both
average every value uniformly).

`partial_attention` also returns each query's score maximum and softmax sum (the sum
differentiably), so results over disjoint key sets merge exactly (`merge_partials`): ring
attention (`sequence_parallel.ring_attention`) is built on it. Maximum and sum are kept apart
rather than as one log-sum-exp: a row with no visible key has maximum -0.7 x float32 max, and
log(sum) added to that is lost to rounding.
"""

import functools
import math

import jax
import jax.numpy as jnp

# The masked-score value `jax.nn.dot_product_attention` uses (-0.7 x float32 max): finite, so a
# row with no visible key averages all values uniformly, as it does there.
MASKED_SCORE = -0.7 * float(jnp.finfo(jnp.float32).max)
# The segment of the keys added to fill the last block: excluded outright (score -inf), so that
# a query that sees no real key still averages the real values only.
_FILL = int(jnp.iinfo(jnp.int32).min)


def segment_mask(q_segments_BxN, kv_segments_BxM):
    """[B, N, M]: a query sees a key when both are in the same segment or either is global
    (segment -1: the text tokens of joint attention), and the key is not padding (0)."""
    q, k = q_segments_BxN[:, :, None], kv_segments_BxM[:, None, :]
    return ((q == k) | (q == -1) | (k == -1)) & (k != 0)


def blockwise_attention(
    q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, q_segments_BxN=None, kv_segments_BxM=None, **blocks
):
    """Equal to `jax.nn.dot_product_attention(q, k, v, mask=segment_mask(...)[:, None])`.

    Segments: both or neither (None: every query sees every key). `blocks`: block_q, block_k.
    """
    return partial_attention(
        q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, q_segments_BxN, kv_segments_BxM, **blocks
    )[0]


def partial_attention(
    q_BxNxHxK,
    k_BxMxHxK,
    v_BxMxHxK,
    q_segments_BxN=None,
    kv_segments_BxM=None,
    *,
    block_q: int = 512,
    block_k: int = 512,
):
    """(out [B, N, H, K] in q's dtype, each query's maximum scaled score and softmax sum
    sum_j exp(score_j - maximum), [B, N, H] float32). The maximum is only a shift that keeps
    exp in range: merging uses sum x exp(maximum), which does not depend on it, so it carries no
    gradient."""
    if block_q < 1 or block_k < 1:
        raise ValueError(f"attention blocks must be positive, got {block_q} x {block_k}")
    if (q_segments_BxN is None) != (kv_segments_BxM is None):
        raise ValueError("give segment ids for both queries and keys, or for neither")
    (b, n, _, _), m = q_BxNxHxK.shape, k_BxMxHxK.shape[1]
    if q_segments_BxN is None:
        q_segments_BxN = jnp.ones((b, n), jnp.int32)
        kv_segments_BxM = jnp.ones((b, m), jnp.int32)
    bq, bk = min(block_q, n), min(block_k, m)  # so every key block holds a real key

    def pad(x, size, value=0):  # to whole blocks; padded queries' rows are dropped after
        widths = [(0, 0), (0, -x.shape[1] % size)] + [(0, 0)] * (x.ndim - 2)
        return jnp.pad(x, widths, constant_values=value)

    out, row_max, row_sum = _attention(
        pad(q_BxNxHxK, bq),
        pad(k_BxMxHxK, bk),
        pad(v_BxMxHxK, bk),
        pad(q_segments_BxN.astype(jnp.int32), bq),
        pad(kv_segments_BxM.astype(jnp.int32), bk, _FILL),
        bq,
        bk,
    )
    return out[:, :n], jax.lax.stop_gradient(row_max[:, :n]), row_sum[:, :n]


def merge_partials(partial_a, partial_b):
    """Attention over keys A + B from `partial_attention` over A and over B (disjoint): each
    output weighted by its share of the total softmax mass. Returns the merged partial."""
    (out_a, max_a, sum_a), (out_b, max_b, sum_b) = partial_a, partial_b
    top = jnp.maximum(max_a, max_b)
    mass_a, mass_b = sum_a * jnp.exp(max_a - top), sum_b * jnp.exp(max_b - top)
    total = mass_a + mass_b
    out = (
        out_a.astype(jnp.float32) * mass_a[..., None]
        + out_b.astype(jnp.float32) * mass_b[..., None]
    )
    return (out / total[..., None]).astype(out_a.dtype), top, total


# ------------------------------------------------------------------------------------------------
# The blocked computation. Arrays are split into [blocks, B, block, ...] so `lax.map` and
# `lax.scan` walk the blocks; every score block is [B, block_q, H, block_k] float32.
# ------------------------------------------------------------------------------------------------
def _blocks(x, size):
    return x.reshape(x.shape[0], x.shape[1] // size, size, *x.shape[2:]).swapaxes(0, 1)


def _unblock(x):
    x = x.swapaxes(0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])


def _scores(q_i, k_j, qs_i, ks_j):
    """Scaled, masked scores [B, bq, H, bk] float32."""
    s = jnp.einsum("bqhd,bkhd->bqhk", q_i, k_j, preferred_element_type=jnp.float32)
    s = s * (1.0 / math.sqrt(q_i.shape[-1]))
    s = jnp.where(segment_mask(qs_i, ks_j)[:, :, None, :], s, MASKED_SCORE)
    return jnp.where((ks_j == _FILL)[:, None, None, :], -jnp.inf, s)


def _forward(q, k, v, qs, ks, bq, bk):
    kv_blocks = (_blocks(k, bk), _blocks(v, bk), _blocks(ks, bk))

    def query_block(args):
        q_i, qs_i = args
        b, _, h, _ = q_i.shape

        def key_block(carry, kv):
            out, running_max, total = carry
            k_j, v_j, ks_j = kv
            s = _scores(q_i, k_j, qs_i, ks_j)
            new_max = jnp.maximum(running_max, s.max(-1))
            p = jnp.exp(s - new_max[..., None])
            decay = jnp.exp(running_max - new_max)
            total = total * decay + p.sum(-1)
            pv = jnp.einsum(
                "bqhk,bkhd->bqhd", p.astype(v_j.dtype), v_j, preferred_element_type=jnp.float32
            )
            return (out * decay[..., None] + pv, new_max, total), None

        init = (
            jnp.zeros_like(q_i, jnp.float32, shape=(b, bq, h, v.shape[-1])),
            jnp.full_like(q_i, -jnp.inf, jnp.float32, shape=(b, bq, h)),
            jnp.zeros_like(q_i, jnp.float32, shape=(b, bq, h)),
        )
        (out, running_max, total), _ = jax.lax.scan(key_block, init, kv_blocks)
        return (out / total[..., None]).astype(q.dtype), running_max, total

    blocked = jax.lax.map(query_block, (_blocks(q, bq), _blocks(qs, bq)))
    return tuple(_unblock(x) for x in blocked)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(q, k, v, qs, ks, bq, bk):
    return _forward(q, k, v, qs, ks, bq, bk)


def _attention_fwd(q, k, v, qs, ks, bq, bk):
    out, row_max, row_sum = _forward(q, k, v, qs, ks, bq, bk)
    return (out, row_max, row_sum), (q, k, v, qs, ks, out, row_max, row_sum)


def _attention_bwd(bq, bk, residuals, cotangents):
    q, k, v, qs, ks, out, row_max, row_sum = residuals
    d_out, _, d_sum = cotangents  # the maximum carries no gradient (see partial_attention)
    scale = 1.0 / math.sqrt(q.shape[-1])
    # ds = p * (dp - delta), delta = <d_out, out> - d_sum * sum per query: d sum / d s = p * sum.
    delta = jnp.einsum("bnhd,bnhd->bnh", d_out.astype(jnp.float32), out.astype(jnp.float32))
    delta = delta - d_sum * row_sum
    q_side = tuple(_blocks(x, bq) for x in (q, qs, d_out, row_max, 1.0 / row_sum, delta))
    k_side = tuple(_blocks(x, bk) for x in (k, v, ks))

    def probabilities_and_ds(q_i, qs_i, do_i, max_i, inv_sum_i, delta_i, k_j, v_j, ks_j):
        s = _scores(q_i, k_j, qs_i, ks_j)
        p = jnp.exp(s - max_i[..., None]) * inv_sum_i[..., None]
        dp = jnp.einsum("bqhd,bkhd->bqhk", do_i, v_j, preferred_element_type=jnp.float32)
        ds = jnp.where(segment_mask(qs_i, ks_j)[:, :, None, :], p * (dp - delta_i[..., None]), 0.0)
        return p, ds * scale

    def dq_block(q_args):
        def step(dq, kv):
            _, ds = probabilities_and_ds(*q_args, *kv)
            return dq + jnp.einsum("bqhk,bkhd->bqhd", ds, kv[0].astype(jnp.float32)), None

        dq, _ = jax.lax.scan(step, jnp.zeros_like(q_args[0], jnp.float32), k_side)
        return dq.astype(q.dtype)

    def dkv_block(kv):
        def step(carry, q_args):
            dk, dv = carry
            p, ds = probabilities_and_ds(*q_args, *kv)
            dk = dk + jnp.einsum("bqhk,bqhd->bkhd", ds, q_args[0].astype(jnp.float32))
            dv = dv + jnp.einsum("bqhk,bqhd->bkhd", p, q_args[2].astype(jnp.float32))
            return (dk, dv), None

        zeros = (jnp.zeros_like(kv[0], jnp.float32), jnp.zeros_like(kv[1], jnp.float32))
        (dk, dv), _ = jax.lax.scan(step, zeros, q_side)
        return dk.astype(k.dtype), dv.astype(v.dtype)

    dq = _unblock(jax.lax.map(dq_block, q_side))
    dk, dv = jax.lax.map(dkv_block, k_side)
    return dq, _unblock(dk), _unblock(dv), None, None


_attention.defvjp(_attention_fwd, _attention_bwd)
