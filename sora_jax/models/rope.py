"""3D rotary position embedding over (t, h, w) token coordinates.

RoPE (Su et al. 2021) rotates query/key feature pairs by angles proportional to position, so
attention scores depend on relative offsets only. For video the head's pairs are split between
the three axes (as in Wan and HunyuanVideo): a quarter for time, the rest shared by rows and
columns. Coordinates are floats, so a caller may also pass scaled positions.
"""

import jax.numpy as jnp


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Features per axis (t, h, w), each even, summing to `head_dim`."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"3D RoPE needs an even head_dim >= 6, got {head_dim}")
    dt = 2 * max(1, head_dim // 8)
    dh = 2 * ((head_dim - dt) // 4)
    return dt, dh, head_dim - dt - dh


def rope_angles(coords_BxNx3, head_dim: int, theta: float = 10_000.0):
    """(cos, sin), each [B, N, 1, head_dim / 2], for `apply_rope` on [B, N, H, K] features."""
    angles = []
    for axis, dim in enumerate(axis_dims(head_dim)):
        inv_freq = theta ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
        angles.append(coords_BxNx3[..., axis : axis + 1] * inv_freq)
    angles_BxNxK2 = jnp.concatenate(angles, axis=-1)[:, :, None, :]
    return jnp.cos(angles_BxNxK2), jnp.sin(angles_BxNxK2)


def apply_rope(x_BxNxHxK, cos, sin):
    """Rotates the pairs (x[..., i], x[..., i + K/2]) by the angles; float32 math."""
    half = x_BxNxHxK.shape[-1] // 2
    x = x_BxNxHxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.astype(x_BxNxHxK.dtype)
