"""Causal 3D video autoencoder: the spacetime compressor in front of the diffusion transformer.

The design follows the causal video VAEs of CogVideoX (Yang et al. 2024), Wan 2.1 (2025) and
Open-Sora 2.0: every 3D convolution pads only the past in time, so frame 0 is encoded alone and an
image is simply a 1-frame video (images and videos share one latent space); clips of 1 + 4k frames
map to 1 + k latent frames. Normalisation is a per-pixel RMS norm over channels, which never mixes
information across time or space, so processing a long video chunk by chunk with a cache of the
frames each causal convolution still needs gives the same result as one pass (`encode_chunked`,
`decode_chunked`). The latent is a diagonal Gaussian.

Streaming uses Flax's mutable "cache" collection: a convolution that finds a cached tail of the
previous chunk's input continues from it instead of padding. Frames are [B, T, H, W, C].
"""

import dataclasses
import functools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.models.layers import RMSNorm

_CONV_AXES = (None, None, None, "conv_in", "conv_out")
_ACT_AXES = ("batch", "frames", "height", "width", "channels")
# Per-pixel RMS norm over channels: mixes nothing across frames or pixels.
NORMS = ("rms", "none")


def normalize(x, norm: str):
    """Per-pixel RMS norm over channels ("rms": mixes nothing across frames or pixels, so
    chunked and tiled processing stay exact), or nothing ("none")."""
    if norm == "rms":
        return RMSNorm(scale_axis="channels")(x)
    if norm == "none":
        return x
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


# Width presets. `patch_size` folds p x p pixels into channels first (pixel unshuffle, as in
# LTX-Video's VAE): convolutions then run at 1/p^2 of the pixels with wider channels, which is
# where XLA:CPU convolutions are efficient (measured 28 GF/s at 32 channels, 78 at 128).
# `channel_mults` has one entry per level; a level change is a 2x downsample in space and/or
# time (the deepest steps resample time).
WIDTHS = {
    "micro": dict(patch_size=4, base_channels=8, channel_mults=(1, 1, 1), num_res_blocks=1),
    "tiny": dict(patch_size=4, base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=1),
    "small": dict(patch_size=2, base_channels=64, channel_mults=(1, 2, 4, 4), num_res_blocks=2),
    "base": dict(patch_size=1, base_channels=128, channel_mults=(1, 2, 4, 4), num_res_blocks=2),
}


# "tiny/t4s8c16": width preset / temporal, spatial factors, latent channels.
VARIANT_PATTERN = r"(\w+)/t(\d+)s(\d+)c(\d+)"


def decode_variant(variant: str) -> dict:
    """ "tiny/t4s8c16" -> VideoVAE fields: width preset / temporal, spatial, latent channels."""
    match = re.fullmatch(VARIANT_PATTERN, variant)
    if not match or match[1] not in WIDTHS:
        raise ValueError(
            f"bad VAE variant {variant!r}; expected e.g. 'tiny/t4s8c16' with width "
            f"in {sorted(WIDTHS)}"
        )
    temporal, spatial, latent = int(match[2]), int(match[3]), int(match[4])
    if temporal not in (1, 2, 4) or spatial not in (4, 8, 16):
        raise ValueError(
            f"compression t{temporal}s{spatial} unsupported: temporal 1/2/4, spatial 4/8/16"
        )
    width = dict(WIDTHS[match[1]])
    width["patch_size"] = min(width["patch_size"], spatial)
    steps = max(int(math.log2(spatial // width["patch_size"])), int(math.log2(temporal)))
    mults = width["channel_mults"]
    width["channel_mults"] = tuple(mults[: steps + 1]) + (mults[-1],) * max(
        0, steps + 1 - len(mults)
    )
    return dict(width, temporal_factor=temporal, spatial_factor=spatial, latent_channels=latent)


def resampling_schedule(num_steps: int, spatial_steps: int, temporal_steps: int):
    """(spatial, temporal) flags of each down step, top to bottom; time is resampled deepest."""
    return [(i < spatial_steps, i >= num_steps - temporal_steps) for i in range(num_steps)]


class CausalConv3d(nn.Module):
    """3D convolution that sees only the present and past frames.

    Without a cache the first frame is replicated `kt - 1` times in front (so frame 0 depends on
    itself alone). With a mutable "cache" collection, the unconsumed tail of this chunk's padded
    input is kept and prepended to the next chunk: chunked == one pass.
    """

    features: int
    kernel: tuple[int, int, int] = (3, 3, 3)
    strides: tuple[int, int, int] = (1, 1, 1)
    dtype: jnp.dtype = jnp.float32
    # "matmul": one matmul over gathered patches (1.9x faster training steps here, but a
    # kt*kh*kw-times larger transient buffer); "xla": lax.conv (less memory: inference).
    # Same parameters and outputs either way.
    conv_impl: str = "matmul"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x_BxTxHxWxC):
        kt, kh, kw = self.kernel
        st = self.strides[0]
        if self.has_variable("cache", "tail"):
            tail = self.get_variable("cache", "tail")
            padded = jnp.concatenate([tail.astype(x_BxTxHxWxC.dtype), x_BxTxHxWxC], axis=1)
        else:
            front = jnp.repeat(x_BxTxHxWxC[:, :1], kt - 1, axis=1)
            padded = jnp.concatenate([front, x_BxTxHxWxC], axis=1)
        num_out = (padded.shape[1] - kt) // st + 1
        if self.is_mutable_collection("cache"):
            self.put_variable("cache", "tail", padded[:, num_out * st :])
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, _CONV_AXES),
            (*self.kernel, x_BxTxHxWxC.shape[-1], self.features),
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(self.bias_init, ("conv_out",)),
            (self.features,),
        )
        padded = jnp.pad(padded, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        x, kernel = padded.astype(self.dtype), kernel.astype(self.dtype)
        if self.conv_impl == "matmul":
            out = conv3d_as_matmul(x, kernel, self.strides)
        elif self.conv_impl == "xla":
            out = jax.lax.conv_general_dilated(
                x, kernel, self.strides, "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
            )
        else:
            raise ValueError(f"conv_impl must be 'matmul' or 'xla', got {self.conv_impl!r}")
        return out + bias.astype(self.dtype)


def conv3d_as_matmul(x_BxTxHxWxC, kernel, strides):
    """A VALID 3D convolution as one matmul over gathered patches (im2col).

    XLA:CPU runs small-spatial 3D convolutions at 37-41 GFLOP/s here, but a matmul with the
    kt*kh*kw*C contraction at 63-116 (forward + backward, 64-128 channels, measured); the patch
    buffer is transient and kt*kh*kw times the input.
    """
    kt, kh, kw, c, o = kernel.shape
    st, sh, sw = strides
    _, t, h, w, _ = x_BxTxHxWxC.shape
    nt, nh, nw = (t - kt) // st + 1, (h - kh) // sh + 1, (w - kw) // sw + 1
    if kt * kh * kw == 1:
        patches = x_BxTxHxWxC[:, : (nt - 1) * st + 1 : st, : (nh - 1) * sh + 1 : sh]
        return patches[:, :, :, : (nw - 1) * sw + 1 : sw] @ kernel.reshape(c, o)
    patches = jnp.concatenate(
        [
            x_BxTxHxWxC[
                :,
                a : a + (nt - 1) * st + 1 : st,
                b : b + (nh - 1) * sh + 1 : sh,
                d : d + (nw - 1) * sw + 1 : sw,
            ]
            for a in range(kt)
            for b in range(kh)
            for d in range(kw)
        ],
        axis=-1,
    )
    return patches @ kernel.reshape(kt * kh * kw * c, o)


class ResBlock(nn.Module):
    """Pre-norm residual block: a spacetime (3,3,3) conv, then a spatial (1,3,3) conv.

    Without normalisation the branch's last conv starts at zero, so every block starts as the
    identity (SkipInit) and the residual stream cannot blow up with depth.
    """

    features: int
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "matmul"  # see CausalConv3d
    norm: str = "rms"

    @nn.compact
    def __call__(self, x):
        h = CausalConv3d(self.features, dtype=self.dtype, conv_impl=self.conv_impl)(
            nn.silu(normalize(x, self.norm))
        )
        h = CausalConv3d(
            self.features,
            kernel=(1, 3, 3),
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            kernel_init=(
                nn.initializers.zeros if self.norm == "none" else nn.initializers.lecun_normal()
            ),
        )(nn.silu(normalize(h, self.norm)))
        if x.shape[-1] != self.features:
            x = CausalConv3d(
                self.features, kernel=(1, 1, 1), dtype=self.dtype, conv_impl=self.conv_impl
            )(x)
        return nn.with_logical_constraint(x + h, _ACT_AXES)


class Downsample(nn.Module):
    """2x in space and/or in time (1 + 2k -> 1 + k frames): a strided causal conv."""

    features: int
    spatial: bool
    temporal: bool
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "matmul"  # see CausalConv3d

    @nn.compact
    def __call__(self, x):
        ss, st = (2 if self.spatial else 1), (2 if self.temporal else 1)
        return CausalConv3d(
            self.features,
            kernel=(3, 3, 3),
            strides=(st, ss, ss),
            dtype=self.dtype,
            conv_impl=self.conv_impl,
        )(x)


class Upsample(nn.Module):
    """2x in space (nearest) and/or in time: frame 0 stays one frame and every later frame
    becomes two (1 + k -> 1 + 2k), so the decoder mirrors the causal encoder."""

    features: int
    spatial: bool
    temporal: bool
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "matmul"  # see CausalConv3d

    @nn.compact
    def __call__(self, x):
        if self.temporal:
            x = jnp.repeat(x, 2, axis=1)
            if not self.has_variable("cache", "started"):
                x = x[:, 1:]  # the first chunk's frame 0 is not doubled
            if self.is_mutable_collection("cache"):
                self.put_variable("cache", "started", jnp.ones((), jnp.bool_))
        if self.spatial:
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        return CausalConv3d(self.features, dtype=self.dtype, conv_impl=self.conv_impl)(x)


def space_to_depth(x_BxTxHxWxC, p: int):
    b, t, h, w, c = x_BxTxHxWxC.shape
    x = x_BxTxHxWxC.reshape(b, t, h // p, p, w // p, p, c)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h // p, w // p, p * p * c)


def depth_to_space(x_BxTxHxWxC, p: int):
    b, t, h, w, c = x_BxTxHxWxC.shape
    x = x_BxTxHxWxC.reshape(b, t, h, w, p, p, c // (p * p))
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h * p, w * p, c // (p * p))


class _Coder(nn.Module):
    """Fields shared by the encoder and the decoder."""

    patch_size: int
    base_channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    temporal_factor: int
    spatial_factor: int
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "matmul"  # see CausalConv3d
    norm: str = "rms"

    @property
    def block_args(self) -> dict:
        return dict(dtype=self.dtype, conv_impl=self.conv_impl, norm=self.norm)

    def schedule(self):
        steps = len(self.channel_mults) - 1
        return resampling_schedule(
            steps,
            int(math.log2(self.spatial_factor // self.patch_size)),
            int(math.log2(self.temporal_factor)),
        )


class Encoder(_Coder):
    latent_channels: int = 16
    logvar_init: float = 0.0  # bias of the log-variance outputs at initialisation

    @nn.compact
    def __call__(self, x):
        schedule = self.schedule()
        h = space_to_depth(x, self.patch_size)
        h = CausalConv3d(self.base_channels, dtype=self.dtype, conv_impl=self.conv_impl)(h)
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.base_channels * mult, **self.block_args)(h)
            if level < len(schedule):
                spatial, temporal = schedule[level]
                h = Downsample(
                    self.base_channels * self.channel_mults[level + 1],
                    spatial,
                    temporal,
                    dtype=self.dtype,
                    conv_impl=self.conv_impl,
                )(h)
        h = ResBlock(h.shape[-1], **self.block_args)(h)
        h = nn.silu(normalize(h, self.norm))
        c = self.latent_channels

        def moments_bias(key, shape, dtype=jnp.float32):
            return jnp.concatenate([jnp.zeros(c, dtype), jnp.full(c, self.logvar_init, dtype)])

        return CausalConv3d(
            2 * c, dtype=self.dtype, conv_impl=self.conv_impl, bias_init=moments_bias
        )(h)


class Decoder(_Coder):
    pixel_head: int = 0  # channels of the full-resolution `PixelHead`; 0 = none

    @nn.compact
    def __call__(self, z):
        schedule = self.schedule()
        mults = self.channel_mults[::-1]
        h = CausalConv3d(self.base_channels * mults[0], dtype=self.dtype, conv_impl=self.conv_impl)(
            z
        )
        h = ResBlock(h.shape[-1], **self.block_args)(h)
        for level, mult in enumerate(mults):
            for _ in range(self.num_res_blocks + 1):
                h = ResBlock(self.base_channels * mult, **self.block_args)(h)
            if level < len(schedule):
                spatial, temporal = schedule[len(schedule) - 1 - level]
                h = Upsample(
                    self.base_channels * mults[level + 1],
                    spatial,
                    temporal,
                    dtype=self.dtype,
                    conv_impl=self.conv_impl,
                )(h)
        h = nn.silu(normalize(h, self.norm))
        rgb = CausalConv3d(3 * self.patch_size**2, dtype=self.dtype, conv_impl=self.conv_impl)(h)
        rgb = depth_to_space(rgb, self.patch_size)
        if self.pixel_head:
            head = PixelHead(
                features=self.pixel_head,
                patch_size=self.patch_size,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name="pixel_head",
            )
            rgb = head(h, rgb)
        return rgb


class PixelHead(nn.Module):
    """Convolutions at full resolution after the decoder's pixel shuffle, adding a correction
    to its frames.

    A `patch_size` > 1 decoder never runs a convolution at the output resolution: the last
    layer writes each p x p patch from one feature vector, and sharp edges at sub-patch
    positions (most of a trained tiny VAE's error) are what it draws worst. The head projects
    the decoder's last features to `features` x p x p channels, shuffles them to full
    resolution next to the frames, runs a 3x3x3 and a 1x3x3 convolution of `features`
    channels and adds a 1x3x3 convolution's 3 channels to the frames. Its last convolution
    starts at zero, so a trained decoder gains a head without changing its output
    (`vae_lib.warm_start`); every convolution is causal, so chunked decoding stays exact.
    """

    features: int
    patch_size: int
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "matmul"  # see CausalConv3d

    @nn.compact
    def __call__(self, h_BxTxhxwxC, rgb_BxTxHxWx3):
        conv = functools.partial(CausalConv3d, dtype=self.dtype, conv_impl=self.conv_impl)
        p = self.patch_size
        shuffled_BxTxHxWxF = depth_to_space(
            conv(self.features * p * p, kernel=(1, 1, 1))(h_BxTxhxwxC), p
        )
        both = jnp.concatenate([shuffled_BxTxHxWxF, rgb_BxTxHxWx3.astype(self.dtype)], axis=-1)
        h_BxTxHxWxF = conv(self.features)(nn.silu(both))
        h_BxTxHxWxF = conv(self.features, kernel=(1, 3, 3))(nn.silu(h_BxTxHxWxF))
        correction = conv(3, kernel=(1, 3, 3), kernel_init=nn.initializers.zeros)(
            nn.silu(h_BxTxHxWxF)
        )
        return rgb_BxTxHxWx3 + correction


class VideoVAE(nn.Module):
    """Video [B, 1+4k, H, W, 3] in [-1, 1] <-> latent [B, 1+k, H/8, W/8, C] (default factors)."""

    patch_size: int = 4
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    temporal_factor: int = 4
    spatial_factor: int = 8
    latent_channels: int = 16
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "matmul"  # see CausalConv3d
    norm: str = "rms"  # "rms" | "none" (see `normalize`)
    logvar_init: float = 0.0  # initial posterior log-variance; < 0 starts with little noise
    pixel_head: int = 0  # channels of the decoder's full-resolution `PixelHead`; 0 = none

    def setup(self):
        steps = len(self.channel_mults) - 1
        spatial_steps = math.log2(self.spatial_factor // self.patch_size)
        if spatial_steps > steps or math.log2(self.temporal_factor) > steps:
            raise ValueError(
                f"{steps} resampling steps cannot give spatial factor "
                f"{self.spatial_factor} (patch {self.patch_size}) and temporal "
                f"factor {self.temporal_factor}"
            )
        shared = dict(
            patch_size=self.patch_size,
            base_channels=self.base_channels,
            channel_mults=self.channel_mults,
            num_res_blocks=self.num_res_blocks,
            temporal_factor=self.temporal_factor,
            spatial_factor=self.spatial_factor,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            norm=self.norm,
        )
        self.encoder = Encoder(
            latent_channels=self.latent_channels, logvar_init=self.logvar_init, **shared
        )
        self.decoder = Decoder(pixel_head=self.pixel_head, **shared)

    def encode(self, video_BxTxHxWx3):
        """-> (mean, logvar), each [B, t, h, w, latent_channels]."""
        self.check_video_shape(video_BxTxHxWx3.shape)
        moments = self.encoder(video_BxTxHxWx3)
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z_BxTxHxWxC):
        return self.decoder(z_BxTxHxWxC.astype(self.dtype)).astype(jnp.float32)

    def __call__(self, video_BxTxHxWx3, rng=None):
        """Reconstruction, mean and logvar; samples the posterior when `rng` is given."""
        mean, logvar = self.encode(video_BxTxHxWx3)
        z = mean
        if rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        return self.decode(z), mean, logvar

    def latent_shape(self, video_shape: tuple[int, ...]) -> tuple[int, ...]:
        batch, frames, height, width, _ = self.check_video_shape(video_shape)
        return (
            batch,
            1 + (frames - 1) // self.temporal_factor,
            height // self.spatial_factor,
            width // self.spatial_factor,
            self.latent_channels,
        )

    def check_video_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Raises a clear ValueError unless `shape` is [B, 1 + k*tf, H, W, 3] with H, W % sf."""
        if len(shape) != 5 or shape[-1] != 3:
            raise ValueError(f"expected video [B, T, H, W, 3], got shape {tuple(shape)}")
        _, frames, height, width, _ = shape
        if (frames - 1) % self.temporal_factor:
            raise ValueError(
                f"frame count must be 1 + {self.temporal_factor}k for temporal "
                f"factor {self.temporal_factor}, got {frames}"
            )
        if height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(
                f"height and width must be multiples of {self.spatial_factor}, got {height}x{width}"
            )
        return tuple(shape)


def vae_from_variant(variant: str, **fields) -> VideoVAE:
    """The VideoVAE of a size string plus other fields (dtype, conv_impl, norm, ...)."""
    return VideoVAE(**decode_variant(variant), **fields)


@dataclasses.dataclass(frozen=True)
class ChunkedCodec:
    """Encodes/decodes videos of any length chunk by chunk in constant memory.

    The first chunk holds 1 + n*tf frames (1 + n latent frames), later chunks n*tf frames (n
    latent frames); each chunk runs one jitted call that carries the causal-conv cache along.
    """

    vae: VideoVAE
    latent_frames_per_chunk: int = 2

    def encode(self, params, video_BxTxHxWx3):
        """-> posterior mean [B, 1 + k, h, w, C], equal to `VideoVAE.encode`'s."""
        self.vae.check_video_shape(video_BxTxHxWx3.shape)
        n = self.latent_frames_per_chunk * self.vae.temporal_factor
        means, cache = [], {}
        for start, end in _chunk_bounds(video_BxTxHxWx3.shape[1], n):
            (mean, _), cache = _encode_step(self.vae, params, cache, video_BxTxHxWx3[:, start:end])
            means.append(mean)
        return jnp.concatenate(means, axis=1)

    def decode(self, params, z_BxTxHxWxC):
        frames, cache = [], {}
        for start, end in _chunk_bounds(z_BxTxHxWxC.shape[1], self.latent_frames_per_chunk):
            video, cache = _decode_step(self.vae, params, cache, z_BxTxHxWxC[:, start:end])
            frames.append(video)
        return jnp.concatenate(frames, axis=1)


def _chunk_bounds(length: int, n: int) -> list[tuple[int, int]]:
    """[0, 1 + n), then steps of n: the causal first frame rides with the first chunk."""
    starts = [0, *range(1 + n, length, n)]
    return [(s, min(1 + n if i == 0 else s + n, length)) for i, s in enumerate(starts)]


@functools.partial(jax.jit, static_argnums=0)
def _encode_step(vae, params, cache, chunk):
    return vae.apply(
        {"params": params, **_as_cache(cache)}, chunk, method=_encode_streaming, mutable=["cache"]
    )


@functools.partial(jax.jit, static_argnums=0)
def _decode_step(vae, params, cache, z):
    return vae.apply(
        {"params": params, **_as_cache(cache)}, z, method=_decode_streaming, mutable=["cache"]
    )


def _as_cache(cache):
    return {"cache": cache["cache"]} if cache else {}


def _encode_streaming(vae: VideoVAE, chunk):
    # Chunks after the first are not 1 + k*tf frames; the shape check applies to the whole video.
    moments = vae.encoder(chunk)
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, logvar


def _decode_streaming(vae: VideoVAE, z):
    return vae.decode(z)


@dataclasses.dataclass(frozen=True)
class TiledCodec:
    """Spatial tiling with overlap blending on top of chunked time: frames of any size.

    Each tile (`tile_latent` latent pixels, `overlap_latent` shared with its neighbours) is
    encoded/decoded chunk by chunk; overlapping outputs are blended with weights that ramp
    linearly across the overlap, so seams fade instead of showing. Exact away from tile borders;
    near them the result differs from one pass only by the convolutions' limited view.
    """

    codec: ChunkedCodec
    tile_latent: int = 16
    overlap_latent: int = 4

    def encode(self, params, video_BxTxHxWx3):
        sf = self.codec.vae.spatial_factor
        return _tiled(
            lambda v: self.codec.encode(params, v),
            video_BxTxHxWx3,
            self.tile_latent * sf,
            self.overlap_latent * sf,
            1 / sf,
        )

    def decode(self, params, z_BxTxHxWxC):
        sf = self.codec.vae.spatial_factor
        return _tiled(
            lambda z: self.codec.decode(params, z),
            z_BxTxHxWxC,
            self.tile_latent,
            self.overlap_latent,
            sf,
        )


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return starts + [size - tile]


def _ramp(size: int, ramp: float):
    """Blend weights along one tile axis: rising over `ramp` pixels at both ends, never 0."""
    x = jnp.arange(size) + 0.5
    return jnp.clip(jnp.minimum(x, size - x) / max(ramp, 1.0), 1e-3, 1.0)


def _tiled(fn, x_BxTxHxWxC, tile: int, overlap: int, scale: float):
    """Applies `fn` (which scales H and W by `scale`) tile by tile and blends the outputs."""
    _, _, height, width, _ = x_BxTxHxWxC.shape
    out, weight = None, None
    for top in _tile_starts(height, tile, overlap):
        for left in _tile_starts(width, tile, overlap):
            y = fn(x_BxTxHxWxC[:, :, top : top + tile, left : left + tile])
            th, tw = y.shape[2:4]
            w = _ramp(th, overlap * scale)[:, None] * _ramp(tw, overlap * scale)[None, :]
            w = w[None, None, :, :, None]
            if out is None:
                shape = (*y.shape[:2], int(height * scale), int(width * scale), y.shape[-1])
                out, weight = jnp.zeros(shape, y.dtype), jnp.zeros(shape[:4] + (1,), y.dtype)
            t0, l0 = int(top * scale), int(left * scale)
            out = out.at[:, :, t0 : t0 + th, l0 : l0 + tw].add(y * w)
            weight = weight.at[:, :, t0 : t0 + th, l0 : l0 + tw].add(w)
    return out / weight
