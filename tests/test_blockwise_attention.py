"""Blockwise (memory-efficient) attention: equal to jax.nn.dot_product_attention, gradients too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_dit import _apply, _init, _inputs

from sora_jax.models import blockwise_attention as bw
from sora_jax.models import dit


def _qkv_and_segments(n=37, m=40, heads=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (
        jnp.asarray(rng.normal(size=(2, length, heads, dim)), jnp.float32) for length in (n, m, m)
    )
    # Segments 0 (padding), 1, 2 and -1 (global tokens; keys in the second example only: in the
    # first, padding queries see no key at all, and both implementations average every value).
    kv_segments = rng.integers(-1, 3, (2, m))
    kv_segments[0] = np.maximum(kv_segments[0], 0)
    return (q, k, v), (jnp.asarray(rng.integers(-1, 3, (2, n))), jnp.asarray(kv_segments))


def _dense(q, k, v, segments):
    return jax.nn.dot_product_attention(q, k, v, mask=bw.segment_mask(*segments)[:, None])


def _value_and_grads(attention, qkv):
    weights = jax.random.normal(jax.random.key(1), qkv[0].shape)
    loss = lambda *a: jnp.sum(attention(*a) * weights)  # noqa: E731
    return attention(*qkv), jax.grad(loss, argnums=(0, 1, 2))(*qkv)


@pytest.mark.parametrize("block_q, block_k", [(8, 16), (64, 7), (37, 40)])
def test_blockwise_equals_dense_attention(block_q, block_k):
    qkv, segments = _qkv_and_segments()
    want, want_grads = _value_and_grads(lambda *a: _dense(*a, segments), qkv)
    got, grads = _value_and_grads(
        lambda *a: bw.blockwise_attention(*a, *segments, block_q=block_q, block_k=block_k), qkv
    )
    np.testing.assert_allclose(got, want, atol=2e-6)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=5e-6)
    # Without segments every query sees every key.
    np.testing.assert_allclose(
        bw.blockwise_attention(*qkv, block_q=16, block_k=16),
        jax.nn.dot_product_attention(*qkv),
        atol=2e-6,
    )


def test_partials_over_disjoint_keys_merge_to_the_whole():
    """What ring attention relies on: partials carry their softmax mass exactly and
    differentiably, also for queries that see no key (unequal parts: 13 and 27 keys)."""
    qkv, (q_segments, kv_segments) = _qkv_and_segments()
    want, want_grads = _value_and_grads(lambda *a: _dense(*a, (q_segments, kv_segments)), qkv)

    def merged(q, k, v):
        part = lambda s: bw.partial_attention(  # noqa: E731
            q, k[:, s], v[:, s], q_segments, kv_segments[:, s], block_q=8, block_k=8
        )
        return bw.merge_partials(part(slice(0, 13)), part(slice(13, None)))[0]

    got, grads = _value_and_grads(merged, qkv)
    np.testing.assert_allclose(got, want, atol=2e-6)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=5e-6)


def test_blockwise_needs_segments_for_both_sides_or_neither():
    (q, k, v), (q_segments, _) = _qkv_and_segments()
    with pytest.raises(ValueError, match="both queries and keys, or for neither"):
        bw.blockwise_attention(q, k, v, q_segments)


@pytest.mark.parametrize("text_mode", ["cross", "joint"])
def test_dit_with_blockwise_attention_equals_xla(text_mode):
    """Forward only: gradients through the DiT are checked by the ring tests
    (test_sequence_parallel.py), whose per-device attention is this one."""
    inp = _inputs((2, 3, 4, 4, 8))
    segments = jnp.asarray([[1] * 7 + [2] * 5, [1] * 9 + [0] * 3])
    xla = dit.dit_from_variant("micro/1x2x2", text_mode=text_mode)
    params = _init(xla, inp)
    blockwise = xla.clone(attention_impl="blockwise", attention_block=8)  # 12 tokens: 2 blocks
    want, got = (_apply(m, params, inp, segments_BxN=segments) for m in (xla, blockwise))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
