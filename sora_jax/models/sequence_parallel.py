"""Ulysses sequence parallelism: attention over a token axis sharded across devices.

With the logical `length` axis mapped onto a mesh axis (DIT_RULES: `sequence`), every device
holds N / s of the tokens. Attention needs all of them, so inside `shard_map` each of q, k, v
goes through one all-to-all that trades the token shard for a head shard ([B, N/s, H, K] ->
[B, N, H/s, K]); every device then runs ordinary attention over the whole sequence for its
heads, and a second all-to-all trades back (DeepSpeed-Ulysses). Communication per layer is four
all-to-alls of the activations, independent of N's quadratic attention cost.

The mesh axes come from the logical-axis rules in force (`sharding.mesh_context`), so models
still never name mesh axes. Without a mesh, or with the sequence axis of size 1, this is plain
`jax.nn.dot_product_attention`.
"""

import math

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P

# Logical names of q/k/v/out [B, N, H, K] and of the mask [B, 1, N, M] (as in DIT_RULES).
_QKV = ("batch", "length", "heads", "kv")
_MASK = ("batch", None, None, None)


def _mesh_axis_size(mesh, axes) -> int:
    """Devices along a partition-spec entry: one axis name, a tuple of them, or None."""
    names = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[name] for name in names if name is not None)


def ulysses_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, *, mask=None):
    """Self-attention equal to `jax.nn.dot_product_attention`, with tokens sharded on devices.

    Needs N and the heads on each tensor shard divisible by the sequence axis' size.
    """
    mesh = jax.sharding.get_abstract_mesh()
    spec = nn.logical_to_mesh_axes(_QKV)
    sequence = spec[1]
    if mesh.empty or sequence is None or _mesh_axis_size(mesh, sequence) == 1:
        return jax.nn.dot_product_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, mask=mask)
    if isinstance(sequence, tuple):
        raise ValueError(f"Ulysses attention shards tokens over one mesh axis, got {sequence}")
    size = mesh.shape[sequence]
    b, n, heads, _ = q_BxNxHxK.shape
    if b % _mesh_axis_size(mesh, spec[0]):
        # A batch the mesh cannot split (parameter init traces batch 1): GSPMD attention gives
        # the same result, only without the all-to-all schedule.
        return jax.nn.dot_product_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, mask=mask)
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
