"""A small trainable text encoder, the ablation against the frozen pretrained MiniLM.

A few pre-LN transformer layers (Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture": stable to train from scratch without warm-up tricks) over the same WordPiece ids,
with learned token and position embeddings, trained jointly with the DiT. Shapes World captions
use a tiny vocabulary, so this tests whether a pretrained language prior matters there.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.text import blocks


class _PreLNLayer(nn.Module):
    heads: int
    mlp_dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, mask_BxL: jax.Array) -> jax.Array:
        h_BxLxD = blocks.layer_norm(1e-6, "attention_norm")(x_BxLxD)
        x_BxLxD = x_BxLxD + blocks.SelfAttention(self.heads, dtype=self.dtype, name="attention")(
            h_BxLxD, mask_BxL
        )
        h_BxLxD = blocks.layer_norm(1e-6, "mlp_norm")(x_BxLxD)
        return x_BxLxD + blocks.FeedForward(self.mlp_dim, dtype=self.dtype, name="mlp")(h_BxLxD)


class SmallTextEncoder(nn.Module):
    """ids_BxL int32, mask_BxL bool -> states [B, L, width] (0 at padded positions).

    `vocab_size` should be the tokenizer's vocabulary rounded up to a multiple of 128 so the
    `vocab` axis shards evenly (`encoders.make_text_encoder` does this).
    """

    vocab_size: int
    max_length: int = 32
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dtype: Any = None

    @nn.compact
    def __call__(self, ids_BxL: jax.Array, mask_BxL: jax.Array) -> jax.Array:
        length = ids_BxL.shape[1]
        if length > self.max_length:
            raise ValueError(f"{length} tokens exceed max_length {self.max_length}")
        tok = blocks.embed(self.vocab_size, self.width, ("vocab", "embed"), "token_embeddings")
        pos = blocks.embed(self.max_length, self.width, (None, "embed"), "position_embeddings")
        x_BxLxD = tok(ids_BxL) + pos(jnp.arange(length))[None]
        if self.dtype is not None:
            x_BxLxD = x_BxLxD.astype(self.dtype)
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, blocks.ACT_AXES)
        mlp_dim = int(round(self.mlp_ratio * self.width))
        for i in range(self.depth):
            x_BxLxD = _PreLNLayer(self.heads, mlp_dim, dtype=self.dtype, name=f"layer_{i}")(
                x_BxLxD, mask_BxL
            )
        # Pre-LN leaves the residual stream unnormalised; the final LN gives the DiT's
        # cross-attention inputs of a fixed scale, like the post-LN MiniLM's.
        x_BxLxD = blocks.layer_norm(1e-6, "final_norm")(x_BxLxD)
        return jnp.where(mask_BxL[..., None], x_BxLxD, 0)
