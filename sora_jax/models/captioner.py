"""The video captioner: a spacetime-patch video encoder and an autoregressive text decoder.

Video (pixels in [-1, 1], x_BxTxHxWx3, any T and H, W that are multiples of the patch) -> one
token per `patch` x `patch` pixel patch of every frame (spacetime patches one frame long, so cut
frames stay exact), linearly embedded -> a transformer encoder
-> states the decoder cross-attends to. The decoder is a pre-LN causal transformer over the
caption's tokens (its own byte-level BPE, `sora_jax.captioner_lib`).

Positions: sinusoids of the frame index and of the patch centre as a *fraction* of the frame's
height and width, so one model reads every resolution and aspect ratio, and "upper left" or
"near the right edge" mean the same at 64x64 and 48x80.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sinusoids(x_BxN: jax.Array, features: int, max_period: float) -> jax.Array:
    """[B, N] positions -> [B, N, features] sin/cos features at geometric frequencies."""
    half = features // 2
    freqs = jnp.exp(-np.log(max_period) * jnp.arange(half) / half)
    angles = x_BxN[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def attend(q_BxLxHxK, k_BxMxHxK, v_BxMxHxK, mask_BxLxM=None) -> jax.Array:
    """Softmax attention; `mask` (batch may be 1) True where a query may see a key."""
    mask = None if mask_BxLxM is None else mask_BxLxM[:, None]
    return jax.nn.dot_product_attention(q_BxLxHxK, k_BxMxHxK, v_BxMxHxK, mask=mask)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: full self-attention over the video tokens, then an MLP."""

    heads: int

    @nn.compact
    def __call__(self, x_BxNxD):
        d = x_BxNxD.shape[-1]
        h = nn.LayerNorm(name="ln_self")(x_BxNxD)
        q, k, v = jnp.split(nn.DenseGeneral((3, self.heads, d // self.heads), name="qkv")(h), 3, 2)
        o = attend(q[:, :, 0], k[:, :, 0], v[:, :, 0])
        x_BxNxD = x_BxNxD + nn.DenseGeneral(d, axis=(-2, -1), name="self_out")(o)
        h = nn.gelu(nn.Dense(4 * d, name="mlp_in")(nn.LayerNorm(name="ln_mlp")(x_BxNxD)))
        return x_BxNxD + nn.Dense(d, name="mlp_out")(h)


class DecoderBlock(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention to the video, MLP.

    Called on a whole caption (teacher forcing, `cache=None`) or on one position `index` with
    a key/value cache of the earlier positions (sampling); the video's keys and values are
    computed once per video (`cross_kv`).
    """

    width: int
    heads: int

    def setup(self):
        hk = (self.heads, self.width // self.heads)
        self.ln_self, self.ln_cross, self.ln_mlp = (nn.LayerNorm() for _ in range(3))
        self.qkv = nn.DenseGeneral((3, *hk))
        self.self_out = nn.DenseGeneral(self.width, axis=(-2, -1))
        self.cross_q = nn.DenseGeneral(hk)
        self.cross_kv_proj = nn.DenseGeneral((2, *hk))
        self.cross_out = nn.DenseGeneral(self.width, axis=(-2, -1))
        self.mlp_in = nn.Dense(4 * self.width)
        self.mlp_out = nn.Dense(self.width)

    def cross_kv(self, context_BxMxD):
        kv = self.cross_kv_proj(context_BxMxD)
        return kv[:, :, 0], kv[:, :, 1]

    def __call__(self, x_BxLxD, cross_kv, cache=None, index=None):
        """Returns (x, the keys/values of these positions for a cache)."""
        qkv = self.qkv(self.ln_self(x_BxLxD))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if cache is None:
            length = x_BxLxD.shape[1]
            mask = jnp.tril(jnp.ones((length, length), bool))[None]
            keys, values = k, v
        else:
            keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k, index, axis=1)
            values = jax.lax.dynamic_update_slice_in_dim(cache[1], v, index, axis=1)
            mask = (jnp.arange(keys.shape[1]) <= index)[None, None, :]
        x_BxLxD = x_BxLxD + self.self_out(attend(q, keys, values, mask))
        q = self.cross_q(self.ln_cross(x_BxLxD))
        x_BxLxD = x_BxLxD + self.cross_out(attend(q, *cross_kv))
        h = nn.gelu(self.mlp_in(self.ln_mlp(x_BxLxD)))
        return x_BxLxD + self.mlp_out(h), (keys, values)


def with_frame_differences(video_BxTxHxWx3: jax.Array) -> jax.Array:
    """Each frame with its change since the previous frame (zero for frame 0) as 3 more channels.

    The change is where motion shows locally: a moving object leaves a band of difference at its
    leading and trailing edges whose sides give the direction and whose width gives the speed;
    a cut lights up a whole frame.
    """
    previous = jnp.concatenate([video_BxTxHxWx3[:, :1], video_BxTxHxWx3[:, :-1]], axis=1)
    return jnp.concatenate([video_BxTxHxWx3, video_BxTxHxWx3 - previous], axis=-1)


# A pixel this far (in [-1, 1] units, largest channel) from the frame's background colour is
# fully inside a silhouette; nearer ones (anti-aliased edges) partly.
_SILHOUETTE_CONTRAST = 0.25


def silhouettes(video_BxTxHxWx3: jax.Array) -> jax.Array:
    """[B, T, H, W, 1]: where each frame differs from its background colour (the per-channel
    median of every 4th pixel of every 4th row), in [-1, 1] and the same for every object
    colour.

    A shape is a silhouette whatever its colour; RGB patches carry it multiplied by the colour,
    which lets a model tie shapes to the colours it saw them in.
    """
    background = jnp.median(video_BxTxHxWx3[:, :, ::4, ::4], axis=(2, 3), keepdims=True)
    contrast = jnp.max(jnp.abs(video_BxTxHxWx3 - background), axis=-1, keepdims=True)
    return jnp.clip(contrast / _SILHOUETTE_CONTRAST, 0.0, 1.0) * 2.0 - 1.0


class VideoEncoder(nn.Module):
    width: int
    depth: int
    heads: int
    patch: int  # pixels on a side of a patch; one frame deep
    frame_differences: bool  # patches also see the change since the previous frame
    silhouettes: bool = False  # patches also see each frame's colour-free silhouettes

    @nn.compact
    def __call__(self, video_BxTxHxWx3: jax.Array) -> jax.Array:
        b, t, h, w, _ = video_BxTxHxWx3.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"frame {h}x{w} is not a multiple of the {p}x{p} patch")
        pixels = video_BxTxHxWx3
        if self.frame_differences:
            video_BxTxHxWx3 = with_frame_differences(video_BxTxHxWx3)
        if self.silhouettes:
            video_BxTxHxWx3 = jnp.concatenate([video_BxTxHxWx3, silhouettes(pixels)], -1)
        c = video_BxTxHxWx3.shape[-1]
        gh, gw = h // p, w // p
        patches = video_BxTxHxWx3.reshape(b, t, gh, p, gw, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
        tokens_BxNxD = nn.Dense(self.width, name="patch")(patches.reshape(b, t * gh * gw, -1))
        tt, yy, xx = jnp.meshgrid(
            jnp.arange(t), (jnp.arange(gh) + 0.5) / gh, (jnp.arange(gw) + 0.5) / gw, indexing="ij"
        )
        quarter = self.width // 4
        pos = jnp.concatenate(
            [
                sinusoids(tt.reshape(1, -1), 2 * quarter, 1_000.0),
                sinusoids(yy.reshape(1, -1) * 100, quarter, 1_000.0),
                sinusoids(xx.reshape(1, -1) * 100, quarter, 1_000.0),
            ],
            axis=-1,
        )
        x = tokens_BxNxD + nn.Dense(self.width, name="pos")(pos)
        for i in range(self.depth):
            x = EncoderBlock(self.heads, name=f"block_{i}")(x)
        return nn.LayerNorm(name="ln_out")(x)


class CaptionDecoder(nn.Module):
    vocab_size: int
    max_length: int
    width: int
    depth: int
    heads: int

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.width)
        self.pos = self.param("pos", nn.initializers.normal(0.02), (self.max_length, self.width))
        self.blocks = [DecoderBlock(self.width, self.heads) for _ in range(self.depth)]
        self.ln_out = nn.LayerNorm()
        self.logits = nn.Dense(self.vocab_size)

    def cross_kv(self, context_BxMxD):
        return [block.cross_kv(context_BxMxD) for block in self.blocks]

    def __call__(self, ids_BxL, context_BxMxD):
        """Teacher-forced logits [B, L, V]: position i sees tokens 0..i."""
        x = self.embed(ids_BxL) + self.pos[: ids_BxL.shape[1]]
        for block, kv in zip(self.blocks, self.cross_kv(context_BxMxD), strict=True):
            x, _ = block(x, kv)
        return self.logits(self.ln_out(x))

    def step(self, ids_Bx1, index, cross_kvs, caches):
        """Logits [B, V] of the token after position `index`, and the updated caches."""
        x = self.embed(ids_Bx1) + jax.lax.dynamic_slice_in_dim(self.pos, index, 1)[None]
        new_caches = []
        for block, kv, cache in zip(self.blocks, cross_kvs, caches, strict=True):
            x, cache = block(x, kv, cache, index)
            new_caches.append(cache)
        return self.logits(self.ln_out(x))[:, 0], new_caches


class Captioner(nn.Module):
    """`__call__` = teacher-forced logits; `encode`, `cross_kv` and `step` for sampling."""

    vocab_size: int
    max_length: int
    width: int
    encoder_depth: int
    decoder_depth: int
    heads: int
    patch: int
    frame_differences: bool
    silhouettes: bool = False

    def setup(self):
        self.encoder = VideoEncoder(
            self.width,
            self.encoder_depth,
            self.heads,
            self.patch,
            self.frame_differences,
            self.silhouettes,
        )
        self.decoder = CaptionDecoder(
            self.vocab_size, self.max_length, self.width, self.decoder_depth, self.heads
        )

    def __call__(self, video_BxTxHxWx3, ids_BxL):
        return self.decoder(ids_BxL, self.encoder(video_BxTxHxWx3))

    def cross_kv(self, video_BxTxHxWx3):
        return self.decoder.cross_kv(self.encoder(video_BxTxHxWx3))

    def step(self, ids_Bx1, index, cross_kvs, caches):
        return self.decoder.step(ids_Bx1, index, cross_kvs, caches)

    def empty_caches(self, batch: int):
        """Zero key/value caches for `batch` captions, one (keys, values) pair a layer."""
        shape = (batch, self.max_length, self.heads, self.width // self.heads)
        return [(jnp.zeros(shape), jnp.zeros(shape)) for _ in range(self.decoder_depth)]
