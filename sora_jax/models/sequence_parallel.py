"""Sequence parallelism: attention over a token axis sharded across devices (Ulysses or ring).

With the logical `length` axis mapped onto a mesh axis (DIT_RULES: `sequence`), every device
holds N / s of the tokens. Attention needs all of them, so inside `shard_map` each of q, k, v
goes through one all-to-all that trades the token shard for a head shard ([B, N/s, H, K] ->
[B, N, H/s, K]); every device then runs ordinary attention over the whole sequence for its
heads, and a second all-to-all trades back (DeepSpeed-Ulysses). Communication per layer is four
all-to-alls of the activations, independent of N's quadratic attention cost.

Ring attention (Liu et al. 2023) keeps the token shards where they are: each device attends its
queries to its own key/value shard, then passes that shard to the next device on the `sequence`
ring (`ppermute`) and merges the partial results (by their softmax mass), s - 1 times
(`blockwise_attention`, which also bounds each device's score memory). It needs neither heads
divisible by s nor the whole sequence on one device, at the price of s sequential exchanges;
the backward pass differentiates through the ring and keeps each step's key/value shard and
float32 merged output, so it holds O(N) keys, values and outputs per device (no N^2 scores).

The mesh axes come from the logical-axis rules in force (`sharding.mesh_context`), so models
still never name mesh axes. Without a mesh, or with the sequence axis of size 1, this is plain
`jax.nn.dot_product_attention` (Ulysses) or `blockwise_attention` (ring).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from sora_jax.models import blockwise_attention as blockwise

# Logical names of q/k/v/out [B, N, H, K] and of the mask [B, 1, N, M] (as in DIT_RULES).
_QKV = ("batch", "length", "heads", "kv")
_MASK = ("batch", None, None, None)
_SEGMENTS = ("batch", "length")


def _mesh_axis_size(mesh, axes) -> int:
    """Devices along a partition-spec entry: one axis name, a tuple of them, or None."""
    names = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[name] for name in names if name is not None)


def _sequence_sharding(kind: str, batch: int):
    """(mesh, mesh spec of q/k/v, the sequence mesh axis) in force for `batch` rows, or None
    where one device's math gives the same result: no mesh, no sequence axis of more than one
    device, or a batch the mesh cannot split (parameter init traces batch 1)."""
    mesh = jax.sharding.get_abstract_mesh()
    spec = nn.logical_to_mesh_axes(_QKV)
    sequence = spec[1]
    if mesh.empty or sequence is None or _mesh_axis_size(mesh, sequence) == 1:
        return None
    if isinstance(sequence, tuple):
        raise ValueError(f"{kind} attention shards tokens over one mesh axis, got {sequence}")
    if batch % _mesh_axis_size(mesh, spec[0]):
        return None
    return mesh, spec, sequence


def ulysses_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, *, mask=None):
    """Self-attention equal to `jax.nn.dot_product_attention`, with tokens sharded on devices.

    Needs N and the heads on each tensor shard divisible by the sequence axis' size.
    """
    sharded = _sequence_sharding("Ulysses", q_BxNxHxK.shape[0])
    if sharded is None:
        return jax.nn.dot_product_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, mask=mask)
    mesh, spec, sequence = sharded
    size = mesh.shape[sequence]
    n, heads = q_BxNxHxK.shape[1:3]
    local_heads = heads // _mesh_axis_size(mesh, spec[2])
    if n % size or local_heads % size:
        raise ValueError(
            f"Ulysses attention over {size} devices needs tokens ({n}) and heads per tensor shard "
            f"({local_heads}) divisible by {size}"
        )

    def local(q, k, v, *mask_Bx1xNxN):
        def to_heads(x):  # [B, N/s, H, K] -> [B, N, H/s, K]
            return jax.lax.all_to_all(x, sequence, split_axis=2, concat_axis=1, tiled=True)

        out = jax.nn.dot_product_attention(
            to_heads(q), to_heads(k), to_heads(v), mask=mask_Bx1xNxN[0] if mask_Bx1xNxN else None
        )
        return jax.lax.all_to_all(out, sequence, split_axis=1, concat_axis=2, tiled=True)

    qkv_spec = P(*spec)
    args, in_specs = (q_BxNxHxK, k_BxNxHxK, v_BxNxHxK), (qkv_spec,) * 3
    if mask is not None:
        args += (mask,)
        in_specs += (P(*nn.logical_to_mesh_axes(_MASK)),)
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=qkv_spec)(*args)


def ring_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segments=None, block: int = 512):
    """Self-attention equal to `blockwise_attention` (and so to `jax.nn.dot_product_attention`
    with `segment_mask`), with tokens sharded on devices. `segments`: (queries', keys' ids) or
    None; `block`: the blockwise block size. Needs N divisible by the sequence axis' size."""
    blocks = dict(block_q=block, block_k=block)
    sharded = _sequence_sharding("ring", q_BxNxHxK.shape[0])
    if sharded is None:
        return blockwise.blockwise_attention(
            q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, *(segments or ()), **blocks
        )
    mesh, spec, sequence = sharded
    size, (b, n) = mesh.shape[sequence], q_BxNxHxK.shape[:2]
    if n % size:
        raise ValueError(
            f"ring attention over {size} devices needs tokens ({n}) divisible by {size}"
        )
    if segments is None:
        segments = (jnp.ones((b, n), jnp.int32),) * 2
    ring = [(i, (i + 1) % size) for i in range(size)]

    def local(q, k, v, q_segments, kv_segments):
        out, row_max, row_sum = blockwise.partial_attention(
            q, k, v, q_segments, kv_segments, **blocks
        )

        @jax.checkpoint
        def next_shard(carry, _):
            merged, k, v, kv_segments = carry
            k, v, kv_segments = (jax.lax.ppermute(x, sequence, ring) for x in (k, v, kv_segments))
            partial = blockwise.partial_attention(q, k, v, q_segments, kv_segments, **blocks)
            return (blockwise.merge_partials(merged, partial), k, v, kv_segments), None

        carry = ((out.astype(jnp.float32), row_max, row_sum), k, v, kv_segments)
        ((out, _, _), *_), _ = jax.lax.scan(next_shard, carry, length=size - 1)
        return out.astype(q.dtype)

    qkv_spec, segment_spec = P(*spec), P(*nn.logical_to_mesh_axes(_SEGMENTS))
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(qkv_spec,) * 3 + (segment_spec,) * 2,
        out_specs=qkv_spec,
    )(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, *segments)
