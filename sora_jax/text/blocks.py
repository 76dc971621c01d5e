"""Transformer pieces shared by the text encoders: masked self-attention, feed-forward, LayerNorm.

Built from `sora_jax.models.layers.Dense`, so every weight carries the logical names of
`sharding.DIT_RULES`. Activations are constrained to `("batch", "text_length", "embed")`:
text tokens are few and are never split over the `sequence` mesh axis (that is for video tokens),
which is also why these blocks do not use `layers.Mlp` (it names its token axis `length`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.models.layers import Dense

ACT_AXES = ("batch", "text_length", "embed")


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps,
        # Two-pass variance (mean of squared deviations), as torch computes it: the fast
        # E[x^2] - E[x]^2 form loses digits the pretrained-weights parity test would notice.
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        name=name,
    )


def embed(num: int, features: int, axes: tuple[str | None, str], name: str) -> nn.Embed:
    return nn.Embed(
        num,
        features,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes),
        name=name,
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention on x_BxLxD in which no query attends to a padded key."""

    heads: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, mask_BxL: jax.Array) -> jax.Array:
        d = x_BxLxD.shape[-1]
        if d % self.heads:
            raise ValueError(f"width {d} is not divisible by {self.heads} heads")
        k = d // self.heads

        def proj(name):
            return Dense((self.heads, k), ("embed", "heads", "kv"), dtype=self.dtype, name=name)

        q_BxLxHxK = proj("query")(x_BxLxD)
        k_BxLxHxK = proj("key")(x_BxLxD)
        v_BxLxHxK = proj("value")(x_BxLxD)
        logits_BxHxLxL = jnp.einsum("blhk,bmhk->bhlm", q_BxLxHxK, k_BxLxHxK) / jnp.sqrt(k)
        # Softmax in float32 whatever the compute dtype; a masked key gets probability exactly
        # 0, so padded positions cannot leak into real ones. Every row keeps >= 1 key ([CLS]).
        logits_BxHxLxL = jnp.where(
            mask_BxL[:, None, None, :],
            logits_BxHxLxL.astype(jnp.float32),
            jnp.finfo(jnp.float32).min,
        )
        probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(v_BxLxHxK.dtype)
        o_BxLxHxK = jnp.einsum("bhlm,bmhk->blhk", probs_BxHxLxL, v_BxLxHxK)
        y_BxLxD = Dense(d, ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype, name="out")(
            o_BxLxHxK
        )
        return nn.with_logical_constraint(y_BxLxD, ACT_AXES)


class FeedForward(nn.Module):
    """Dense -> GELU -> Dense on x_BxLxD; `exact_gelu` (erf) is what BERT checkpoints expect."""

    hidden_dim: int
    exact_gelu: bool = False
    dtype: Any = None
    kernel_init: Any = nn.initializers.xavier_uniform()

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        dense = dict(dtype=self.dtype, kernel_init=self.kernel_init)
        # Same names as `layers.Mlp` ("wi", "wo"), so the param trees read alike.
        h_BxLxF = Dense(self.hidden_dim, ("embed", "mlp"), name="wi", **dense)(x_BxLxD)
        h_BxLxF = nn.gelu(h_BxLxF, approximate=not self.exact_gelu)
        h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("batch", "text_length", "mlp"))
        y_BxLxD = Dense(x_BxLxD.shape[-1], ("mlp", "embed"), name="wo", **dense)(h_BxLxF)
        return nn.with_logical_constraint(y_BxLxD, ACT_AXES)
