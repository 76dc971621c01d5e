"""Diffusion transformer over spacetime patches (the denoiser Sora describes).

DiT blocks (Peebles & Xie 2023) with adaLN-Zero modulation, QK RMS-norm (as in SD3 and Wan),
3D RoPE over (t, h, w) token coordinates (optionally also each token's absolute, fractional
place in its clip, `clip_fractions`), and text injected either by cross-attention (PixArt,
Wan; the default) or by MM-DiT joint attention over [text; video] with a separate text stream
(SD3, Esser et al. 2024). Self-attention is full 3D (default) or factorized into spatial then
temporal attention (Latte, Ma et al. 2024) for ablations.

Every token carries its own timestep (`t_BxN`): the timestep embedding is per token, so clean
conditioning tokens (t = 0: a still image, frames to extend from, both ends to interpolate
between) sit in the same sequence as noisy ones (the LTX-Video / Wan 2.2 scheme in DESIGN.md).
To keep that cheap, the six modulation vectors come from ONE projection shared by all blocks
plus a learned per-block offset (as in Wan 2.1), not a per-block projection of every token.

Layers are `nn.scan`ned (compile time flat in depth) under `nn.remat`; `scan_layers=False` runs
the same blocks unrolled (params `blocks_0..`), tested equal. Tokens are x_BxNxP (patchified
latents, see `patching.py`); segment ids (0 = padding) block attention across packed clips.
"""

import dataclasses
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.models import blockwise_attention, mixed_precision, rope, sequence_parallel
from sora_jax.models.layers import Dense, Mlp, RMSNorm

# (width, depth, heads). tiny/micro run on a CPU; S..XL follow DiT's sizes; the multi-billion
# presets (Wan-/Open-Sora-2.0-like widths) are for `sora-jax plan` lowering only.
PRESETS = {
    "micro": (64, 2, 2),
    "tiny": (256, 6, 4),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
    "1B": (1536, 32, 24),
    "3B": (2560, 32, 20),
    "14B": (5120, 40, 40),
}

REMAT_POLICIES = {
    "none": None,  # no remat: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}

_TOKENS = ("batch", "length", "embed")
_MODULATION = ("batch", "length", None, "embed")


def decode_variant(variant: str) -> dict:
    """ "S/1x2x2" -> DiT fields: width preset / spacetime patch (t x h x w)."""
    match = re.fullmatch(r"(\w+)/(\d+)x(\d+)x(\d+)", variant)
    if not match or match[1] not in PRESETS:
        raise ValueError(
            f"bad DiT variant {variant!r}; expected e.g. 'S/1x2x2' with a size in {list(PRESETS)}"
        )
    width, depth, heads = PRESETS[match[1]]
    patch = tuple(int(match[i]) for i in (2, 3, 4))
    return dict(width=width, depth=depth, num_heads=heads, patch_size=patch)


def timestep_features(t, dim: int = 256, max_period: float = 10_000.0):
    """Sinusoidal features of t in [0, 1] (scaled by 1000, as in DiT), [..., dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = 1000.0 * t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def clip_fractions(coords_BxNx3, segments_BxN=None):
    """Each token's place within its own clip along (t, h, w) [B, N, 3]: 0 at the clip's first
    frame / row / column, 1 at its last, 0 along an axis the clip is one token deep. A clip is a
    row's tokens of one segment id (`segments_BxN`), or the whole row without segments."""
    if segments_BxN is None:
        lo = coords_BxNx3.min(axis=1, keepdims=True)
        hi = coords_BxNx3.max(axis=1, keepdims=True)
    else:
        n = coords_BxNx3.shape[1]  # segment ids are at most n: every segment has a token

        def extent(coords_Nx3, segments_N):
            first = jax.ops.segment_min(coords_Nx3, segments_N, num_segments=n + 1)
            last = jax.ops.segment_max(coords_Nx3, segments_N, num_segments=n + 1)
            return first[segments_N], last[segments_N]

        lo, hi = jax.vmap(extent)(coords_BxNx3, segments_BxN)
    return (coords_BxNx3 - lo) / jnp.maximum(hi - lo, 1.0)


def fraction_features(fractions_BxNx3, num_freqs: int = 8):
    """cos and sin of pi k f, k = 1..num_freqs, for each of the fractions f: [B, N, 6 num_freqs]."""
    args = jnp.pi * fractions_BxNx3[..., None] * jnp.arange(1, num_freqs + 1, dtype=jnp.float32)
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1).reshape(
        *fractions_BxNx3.shape[:-1], -1
    )


def modulate(x, shift, scale):
    return x * (1.0 + scale) + shift


def _layer_norm(x):
    """Affine-free LayerNorm in float32 (adaLN supplies the scale and shift)."""
    return nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6, dtype=jnp.float32)(x)


# How attention is computed (`attend`): the first two on one device's tokens, the last two over
# tokens sharded on the mesh's `sequence` axis (sequence_parallel.py).
ATTENTION_IMPLS = ("xla", "blockwise", "ulysses", "ring")


def attend(impl: str, q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, segments=None, block: int = 512):
    """Softmax attention; `segments` (queries', keys' ids, see `blockwise_attention.
    segment_mask`) or None: every query sees every key. `block`: blockwise/ring block size.

    "xla": `jax.nn.dot_product_attention` (its default: XLA's plain attention, which holds the
    [B, H, N, M] scores), or in bfloat16 on a CPU the same math with f32 accumulation in both
    passes (`mixed_precision.attention`); "blockwise": exact attention in key and query blocks,
    memory N x block; "ulysses" / "ring": sequence parallelism (Ulysses runs
    `jax.nn.dot_product_attention` on each device, in any dtype).
    """
    if impl == "blockwise":
        return blockwise_attention.blockwise_attention(
            q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, *(segments or ()), block_q=block, block_k=block
        )
    if impl == "ring":
        return sequence_parallel.ring_attention(q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, segments, block)
    if impl not in ("xla", "ulysses"):
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLS}, got {impl!r}")
    mask = None if segments is None else blockwise_attention.segment_mask(*segments)[:, None]
    if impl == "ulysses":
        return sequence_parallel.ulysses_attention(q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, mask=mask)
    if mixed_precision.applies_to(q_BxNxHxK.dtype):
        return mixed_precision.attention(q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, mask)
    return jax.nn.dot_product_attention(q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, mask=mask)


class Attention(nn.Module):
    """Multi-head attention with QK RMS-norm; `attend` does the math."""

    num_heads: int
    head_dim: int
    kv_axis: str = "embed"  # "text_embed" when keys/values come from the text encoder
    dtype: Any = jnp.float32
    impl: str = "xla"  # see ATTENTION_IMPLS
    block: int = 512  # blockwise/ring query and key block

    @nn.compact
    def __call__(self, x_BxNxD, kv_BxMxE, segments=None, rope_qk=None):
        """`segments`: (queries', keys' segment ids) or None; `rope_qk`: (cos, sin) rotating
        both queries and keys (self-attention only)."""
        hk = (self.num_heads, self.head_dim)
        dense = dict(dtype=self.dtype, use_bias=False)
        q_BxNxHxK = Dense(hk, ("embed", "heads", "kv"), name="query", **dense)(x_BxNxD)
        k_BxMxHxK = Dense(hk, (self.kv_axis, "heads", "kv"), name="key", **dense)(kv_BxMxE)
        v_BxMxHxK = Dense(hk, (self.kv_axis, "heads", "kv"), name="value", **dense)(kv_BxMxE)
        q_BxNxHxK = RMSNorm(name="query_norm")(q_BxNxHxK)
        k_BxMxHxK = RMSNorm(name="key_norm")(k_BxMxHxK)
        if rope_qk is not None:
            q_BxNxHxK = rope.apply_rope(q_BxNxHxK, *rope_qk)
            k_BxMxHxK = rope.apply_rope(k_BxMxHxK, *rope_qk)
        out_BxNxHxK = attend(self.impl, q_BxNxHxK, k_BxMxHxK, v_BxMxHxK, segments, self.block)
        d = x_BxNxD.shape[-1]
        return Dense(d, ("heads", "kv", "embed"), axis=(-2, -1), name="out", dtype=self.dtype)(
            out_BxNxHxK
        )


@dataclasses.dataclass(frozen=True)
class BlockContext:
    """What every block reads and none changes (broadcast through the layer scan)."""

    mod_BxNx6xD: jax.Array  # shared timestep modulation (per token)
    # Segment ids (queries', keys') of self-attention, None for one whole clip; of the text:
    # ([B, N], [B, L]) for cross-attention, ([B, L+N],) * 2 for joint attention.
    self_segments: tuple[jax.Array, jax.Array] | None
    text_segments: tuple[jax.Array, jax.Array]
    rope_video: tuple[jax.Array, jax.Array]
    rope_joint: tuple[jax.Array, jax.Array] | None


jax.tree_util.register_dataclass(
    BlockContext,
    data_fields=["mod_BxNx6xD", "self_segments", "text_segments", "rope_video", "rope_joint"],
    meta_fields=[],
)


class DiTBlock(nn.Module):
    """One adaLN-Zero block: (self- or joint) attention, [cross-attention], MLP."""

    num_heads: int
    mlp_ratio: float = 4.0
    activation: str = "gelu"
    text_mode: str = "cross"  # "cross" | "joint"
    attention: str = "full"  # "full" | "factorized"
    grid: tuple[int, int, int] | None = None  # the token grid, for factorized attention
    attention_impl: str = "xla"  # "xla" | "blockwise": attention math on one device's tokens
    attention_block: int = 512
    sequence_parallel: str = "none"  # "none" (GSPMD) | "ulysses" | "ring" (shard_map)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, ctx: BlockContext):
        x_BxNxD, txt_BxLxE = carry
        d = x_BxNxD.shape[-1]
        head_dim = d // self.num_heads
        table_6xD = self.param(
            "modulation",
            nn.with_logical_partitioning(nn.initializers.zeros, (None, "embed")),
            (6, d),
        )
        # Sliced below: without this constraint XLA's SPMD partitioner (jax 0.10.2, GSPMD and
        # Shardy alike) miscomputes the block on meshes with data, fsdp and tensor all > 1
        # (experiments/xla_spmd_modulation_bug/repro.py).
        mod = nn.with_logical_constraint(ctx.mod_BxNx6xD + table_6xD, _MODULATION)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (mod[:, :, i] for i in range(6))
        attn = dict(
            num_heads=self.num_heads,
            head_dim=head_dim,
            block=self.attention_block,
            dtype=self.dtype,
        )
        if self.attention_impl not in ("xla", "blockwise"):
            raise ValueError(
                f"attention_impl must be 'xla' or 'blockwise', got {self.attention_impl!r}"
            )

        h_BxNxD = modulate(_layer_norm(x_BxNxD), shift_a, scale_a).astype(self.dtype)
        if self.text_mode == "joint":
            a_BxNxD, txt_BxLxE = self._joint_attention(h_BxNxD, txt_BxLxE, ctx, attn)
        else:
            a_BxNxD = self._self_attention(h_BxNxD, ctx, attn)
        x_BxNxD = x_BxNxD + gate_a * a_BxNxD
        x_BxNxD = nn.with_logical_constraint(x_BxNxD, _TOKENS)

        if self.text_mode == "cross":
            h_BxNxD = nn.LayerNorm(dtype=jnp.float32, name="cross_norm")(x_BxNxD)
            cross = Attention(
                kv_axis="text_embed", impl=self.attention_impl, name="cross_attention", **attn
            )
            x_BxNxD = x_BxNxD + cross(h_BxNxD.astype(self.dtype), txt_BxLxE, ctx.text_segments)

        h_BxNxD = modulate(_layer_norm(x_BxNxD), shift_m, scale_m).astype(self.dtype)
        mlp = dict(mlp_ratio=self.mlp_ratio, activation=self.activation, dtype=self.dtype)
        x_BxNxD = x_BxNxD + gate_m * Mlp(name="mlp", **mlp)(h_BxNxD)
        x_BxNxD = nn.with_logical_constraint(x_BxNxD, _TOKENS)
        if self.text_mode == "joint":
            t_BxLxE = _layer_norm(txt_BxLxE).astype(self.dtype)
            txt_BxLxE = txt_BxLxE + Mlp(name="text_mlp", **mlp)(t_BxLxE)
        return (x_BxNxD, txt_BxLxE), None

    def _self_attention(self, h_BxNxD, ctx: BlockContext, attn: dict):
        if self.attention == "full":
            layer = Attention(name="self_attention", impl=self._self_impl(), **attn)
            return layer(h_BxNxD, h_BxNxD, ctx.self_segments, ctx.rope_video)
        if self.attention != "factorized":
            raise ValueError(f"attention must be 'full' or 'factorized', got {self.attention!r}")
        if self._self_impl() != self.attention_impl:
            raise ValueError(f"sequence_parallel={self.sequence_parallel!r} needs attention='full'")
        attn = dict(attn, impl=self.attention_impl)
        layer = Attention(name="self_attention", **attn)
        # Spatial attention within each frame, then temporal attention at each position: the
        # token axis is reshaped, so this needs a whole, unpacked clip on a known grid.
        b, n, d = h_BxNxD.shape
        gt, gs = self.grid[0], self.grid[1] * self.grid[2]
        cos, sin = ctx.rope_video
        frames = lambda a: a.reshape(b * gt, gs, *a.shape[2:])  # noqa: E731
        h = layer(frames(h_BxNxD), frames(h_BxNxD), None, (frames(cos), frames(sin)))
        h = h.reshape(b, n, d)
        temporal = Attention(name="temporal_attention", **attn)

        def positions(a):
            return (
                a.reshape(b, gt, gs, *a.shape[2:]).swapaxes(1, 2).reshape(b * gs, gt, *a.shape[2:])
            )

        h = temporal(positions(h), positions(h), None, (positions(cos), positions(sin)))
        return h.reshape(b, gs, gt, d).swapaxes(1, 2).reshape(b, n, d)

    def _self_impl(self) -> str:
        """Self-/joint attention's implementation: the sequence-parallel one, if any."""
        if self.sequence_parallel not in ("none", "ulysses", "ring"):
            raise ValueError(
                "sequence_parallel must be 'none', 'ulysses' or 'ring', "
                f"got {self.sequence_parallel!r}"
            )
        if self.sequence_parallel == "ulysses" and self.attention_impl == "blockwise":
            raise ValueError(
                "sequence_parallel='ulysses' attends with XLA's attention on each device; "
                "attention_impl='blockwise' goes with sequence_parallel 'none' or 'ring'"
            )
        return self.attention_impl if self.sequence_parallel == "none" else self.sequence_parallel

    def _joint_attention(self, h_BxNxD, txt_BxLxD, ctx: BlockContext, attn: dict):
        if self.attention != "full":
            raise ValueError("joint text attention supports attention='full' only")
        t_BxLxD = _layer_norm(txt_BxLxD).astype(self.dtype)
        joint = JointAttention(name="joint_attention", impl=self._self_impl(), **attn)
        out_t, out_x = joint(t_BxLxD, h_BxNxD, ctx.text_segments, ctx.rope_joint)
        return out_x, txt_BxLxD + out_t


class JointAttention(nn.Module):
    """MM-DiT attention: text and video tokens have their own q/k/v/out weights and attend to
    each other as one sequence [text; video]."""

    num_heads: int
    head_dim: int
    dtype: Any = jnp.float32
    impl: str = "xla"  # see ATTENTION_IMPLS
    block: int = 512

    @nn.compact
    def __call__(self, txt_BxLxD, x_BxNxD, segments, rope_joint):
        hk = (self.num_heads, self.head_dim)

        def qkv(x, stream):
            proj = lambda name: Dense(  # noqa: E731
                hk, ("embed", "heads", "kv"), use_bias=False, dtype=self.dtype, name=stream + name
            )(x)
            q = RMSNorm(name=f"{stream}query_norm")(proj("query"))
            k = RMSNorm(name=f"{stream}key_norm")(proj("key"))
            return q, k, proj("value")

        length, d = txt_BxLxD.shape[1], x_BxNxD.shape[-1]
        (qt, kt, vt), (qx, kx, vx) = qkv(txt_BxLxD, "text_"), qkv(x_BxNxD, "")
        q_BxMxHxK = rope.apply_rope(jnp.concatenate([qt, qx], axis=1), *rope_joint)
        k_BxMxHxK = rope.apply_rope(jnp.concatenate([kt, kx], axis=1), *rope_joint)
        v_BxMxHxK = jnp.concatenate([vt, vx], axis=1)
        o_BxMxHxK = attend(self.impl, q_BxMxHxK, k_BxMxHxK, v_BxMxHxK, segments, self.block)
        out = lambda o, name: Dense(  # noqa: E731
            d, ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype, name=name
        )(o)
        return out(o_BxMxHxK[:, :length], "text_out"), out(o_BxMxHxK[:, length:], "out")


# x-prediction's velocity (x_t - x0) / t divides by at least this t (JiT's clip, Li & He 2025).
DATA_PREDICTION_T_FLOOR = 0.05


class DiT(nn.Module):
    """Velocity model v(x_t, t, text) over spacetime-patch tokens.

    `prediction` is what the last layer outputs: "velocity" (v itself) or "data" (the clean
    tokens x0, returned as the velocity they imply). Li & He (2025, "Back to Basics: Let
    Denoising Generative Models Denoise") show that a network whose patches are as wide as
    itself (here 1x4x4 patches of 16 latent channels, 256 numbers, into width 256) can fail to
    output the full-rank noise a velocity contains, while clean data lies on a low-dimensional
    manifold it can reach.
    """

    width: int
    depth: int
    num_heads: int
    patch_size: tuple[int, int, int] = (1, 2, 2)
    mlp_ratio: float = 4.0
    activation: str = "gelu"
    text_mode: str = "cross"
    attention: str = "full"
    attention_impl: str = "xla"  # "blockwise": memory-efficient exact attention
    attention_block: int = 512  # its query and key block (and ring attention's)
    sequence_parallel: str = "none"  # "ulysses" | "ring": attention over sharded tokens
    scan_layers: bool = True
    remat_policy: str = "none"
    prediction: str = "velocity"  # | "data"
    # Also feed the caption's mean text state into every token's adaLN modulation (through a
    # zero-initialised projection), next to the per-token states cross/joint attention reads.
    pooled_text: bool = False
    # Multiplies the time coordinate before RoPE: > 1 turns each latent-frame step into a larger
    # angle on the head's time pairs (experiments/noise_level/position_use.py measures time's use).
    rope_time_scale: float = 1.0
    # Also add each token's place within its own clip, (t, h, w) as fractions from its first
    # frame / row / column (0) to its last (1), through a zero-initialised projection: an
    # absolute position signal beside RoPE's relative one (`clip_fractions`).
    absolute_position: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_BxNxP,
        t_BxN,
        coords_BxNx3,
        text_BxLxE,
        text_mask_BxL,
        *,
        segments_BxN=None,
        text_segments_BxL=None,
        drop_text_B=None,
        grid=None,
    ):
        """Returns the velocity [B, N, P].

        Args:
          x_BxNxP: noisy tokens (conditioning tokens clean, with t = 0).
          t_BxN: each token's timestep in [0, 1].
          coords_BxNx3: (t, h, w) token coordinates for RoPE (and, with `absolute_position`,
            each token's place in its clip: `clip_fractions`).
          text_BxLxE, text_mask_BxL: per-token text-encoder states and their padding mask.
          segments_BxN: packed-clip ids, 0 = padding (None: every token is one clip).
          text_segments_BxL: with packed clips of different captions, the clip each text
            position belongs to (each caption a contiguous block, its padding included); tokens
            then attend to their own clip's text only. None: one text for all tokens.
          drop_text_B: True replaces the text by the learned null text (classifier-free
            guidance's unconditional branch); [B], or [B, S] per packed clip 1..S with
            `text_segments_BxL`.
          grid: the (t, h, w) token grid; needed by factorized attention.
        """
        if self.text_mode not in ("cross", "joint"):
            raise ValueError(f"text_mode must be 'cross' or 'joint', got {self.text_mode!r}")
        if self.prediction not in ("velocity", "data"):
            raise ValueError(f"prediction must be 'velocity' or 'data', got {self.prediction!r}")
        if self.attention == "factorized" and (grid is None or segments_BxN is not None):
            raise ValueError("factorized attention needs the token grid of one unpacked clip")
        b, n, p = x_BxNxP.shape
        d = self.width
        text_BxLxE, text_mask_BxL = self._null_text(
            text_BxLxE, text_mask_BxL, drop_text_B, text_segments_BxL
        )

        x_BxNxD = Dense(d, ("patch", "embed"), name="patch_embed")(x_BxNxP.astype(jnp.float32))
        if self.absolute_position:
            x_BxNxD = x_BxNxD + Dense(
                d, ("freq", "embed"), kernel_init=nn.initializers.zeros, name="position_embed"
            )(fraction_features(clip_fractions(coords_BxNx3, segments_BxN)))
        x_BxNxD = nn.with_logical_constraint(x_BxNxD, _TOKENS)
        temb_BxNxD = Mlp(hidden_dim=d, activation="gelu", name="time_mlp")(
            Dense(d, ("freq", "embed"), name="time_in")(timestep_features(t_BxN))
        )
        segments = jnp.ones((b, n), jnp.int32) if segments_BxN is None else segments_BxN
        if self.pooled_text:  # each clip's caption -> added to its tokens' timestep embedding
            pooled_BxSxE = pool_text(text_BxLxE, text_mask_BxL, text_segments_BxL)
            pooled_BxSxD = Dense(
                d, ("text_embed", "embed"), kernel_init=nn.initializers.zeros, name="text_pool"
            )(pooled_BxSxE)
            clips = None if text_segments_BxL is None else segments
            temb_BxNxD = temb_BxNxD + per_token(pooled_BxSxD, clips)
        # adaLN-Zero: zero-initialised modulation, so every block starts as the identity.
        mod_BxNx6xD = Dense(
            (6, d), ("embed", None, "adaln"), kernel_init=nn.initializers.zeros, name="adaln"
        )(nn.silu(temb_BxNxD))

        head_dim = d // self.num_heads
        coords_BxNx3 = coords_BxNx3 * jnp.array([self.rope_time_scale, 1.0, 1.0], jnp.float32)
        rope_video = rope.rope_angles(coords_BxNx3, head_dim)
        rope_joint = None
        self_segments = None if segments_BxN is None else (segments, segments)
        if self.text_mode == "cross":
            if text_segments_BxL is None:
                # 1 = real token, 0 = padding
                text_segments = (jnp.ones_like(segments), text_mask_BxL.astype(jnp.int32))
            else:
                text_segments = (segments, jnp.where(text_mask_BxL, text_segments_BxL, 0))
            txt = text_BxLxE.astype(self.dtype)
        else:
            txt = Dense(d, ("text_embed", "embed"), name="text_in")(text_BxLxE)
            length = text_BxLxE.shape[1]
            # Text tokens (segment -1) join every segment: they see and are seen by all tokens;
            # packed captions (`text_segments_BxL`) join their own clip's segment only.
            own = -1 if text_segments_BxL is None else text_segments_BxL
            text_ids_BxL = jnp.where(text_mask_BxL, own, 0).astype(jnp.int32)
            text_segments = (jnp.concatenate([text_ids_BxL, segments], axis=1),) * 2
            zeros = jnp.zeros((b, length, 3), jnp.float32)
            rope_joint = rope.rope_angles(jnp.concatenate([zeros, coords_BxNx3], 1), head_dim)
        ctx = BlockContext(mod_BxNx6xD, self_segments, text_segments, rope_video, rope_joint)

        block_fields = dict(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            activation=self.activation,
            text_mode=self.text_mode,
            attention=self.attention,
            attention_impl=self.attention_impl,
            attention_block=self.attention_block,
            sequence_parallel=self.sequence_parallel,
            grid=None if grid is None else tuple(grid),
            dtype=self.dtype,
        )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy must be one of {list(REMAT_POLICIES)}")
        block = DiTBlock
        if self.remat_policy != "none":
            block = nn.remat(
                DiTBlock, prevent_cse=not self.scan_layers, policy=REMAT_POLICIES[self.remat_policy]
            )
        carry = (x_BxNxD, txt)
        if self.scan_layers:
            carry, _ = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast,),
                length=self.depth,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(name="blocks", **block_fields)(carry, ctx)
        else:
            for i in range(self.depth):
                carry, _ = block(name=f"blocks_{i}", **block_fields)(carry, ctx)
        x_BxNxD = carry[0]

        mod_BxNx2D = Dense(
            2 * d, ("embed", "adaln"), kernel_init=nn.initializers.zeros, name="final_adaln"
        )(nn.silu(temb_BxNxD))
        # Sliced below, so constrained like the blocks' modulation (see DiTBlock): without it
        # this layer's kernel gradient is wrong on data x fsdp x tensor meshes.
        mod_BxNx2xD = nn.with_logical_constraint(mod_BxNx2D.reshape(b, n, 2, d), _MODULATION)
        shift_BxNxD, scale_BxNxD = mod_BxNx2xD[:, :, 0], mod_BxNx2xD[:, :, 1]
        h_BxNxD = modulate(_layer_norm(x_BxNxD), shift_BxNxD, scale_BxNxD)
        out_BxNxP = Dense(p, ("embed", "patch"), kernel_init=nn.initializers.zeros, name="final")(
            h_BxNxD
        )
        if self.prediction == "velocity":
            return out_BxNxP
        # On x_t = (1 - t) x0 + t eps the velocity eps - x0 is (x_t - x0) / t. Conditioning
        # tokens (t = 0) are neither scored nor updated, so their floored value is never used.
        t_BxNx1 = jnp.maximum(t_BxN.astype(jnp.float32), DATA_PREDICTION_T_FLOOR)[..., None]
        return (x_BxNxP.astype(jnp.float32) - out_BxNxP) / t_BxNx1

    def _null_text(self, text_BxLxE, text_mask_BxL, drop_text_B, text_segments_BxL=None):
        """Swaps dropped texts for one learned null token each (and masks the rest): whole
        examples, or with `text_segments_BxL` the caption blocks of dropped packed clips."""
        if drop_text_B is None:
            return text_BxLxE, text_mask_BxL
        b, length, e = text_BxLxE.shape
        null_E = self.param(
            "null_text",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("text_embed",)),
            (e,),
        )
        if text_segments_BxL is None:
            first_BxL = jnp.broadcast_to(jnp.arange(length) == 0, (b, length))
            drop_BxL = jnp.broadcast_to(drop_text_B[:, None], (b, length))
        else:
            previous = jnp.pad(text_segments_BxL[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
            first_BxL = text_segments_BxL != previous  # the first position of each block
            index = jnp.clip(text_segments_BxL - 1, 0, drop_text_B.shape[1] - 1)
            drop_BxL = jnp.take_along_axis(drop_text_B, index, axis=1)
        null_BxLxE = jnp.where(first_BxL[..., None], null_E, 0.0)
        text = jnp.where(drop_BxL[..., None], null_BxLxE, text_BxLxE)
        mask = jnp.where(drop_BxL, first_BxL, text_mask_BxL)
        return text, mask


def pool_text(text_BxLxE, text_mask_BxL, text_segments_BxL=None):
    """Each caption as the mean of its real (unmasked) text states: [B, 1, E] for one caption
    per example, or [B, S, E] with `text_segments_BxL` (S = L slots; slot s-1 holds packed
    clip s's caption, empty slots are zero)."""
    text_BxLxE = text_BxLxE.astype(jnp.float32)
    if text_segments_BxL is None:
        mask_BxLx1 = text_mask_BxL[..., None].astype(jnp.float32)
        sums_Bx1xE = jnp.sum(text_BxLxE * mask_BxLx1, axis=1, keepdims=True)
        return sums_Bx1xE / jnp.maximum(jnp.sum(mask_BxLx1, axis=1, keepdims=True), 1.0)
    clips = jnp.arange(1, text_BxLxE.shape[1] + 1)  # at most one packed clip per text position
    member_BxLxS = (text_segments_BxL[..., None] == clips) & text_mask_BxL[..., None]
    sums_BxSxE = jnp.einsum("bls,ble->bse", member_BxLxS.astype(jnp.float32), text_BxLxE)
    return sums_BxSxE / jnp.maximum(member_BxLxS.sum(axis=1), 1)[..., None]


def per_token(values_BxSxD, segments_BxN=None):
    """Per-clip values [B, S, D] -> each token's own clip's row [B, N, D] (`segments_BxN`,
    1..S; padding tokens get clip 1's and are never scored); without segments, S = 1 and the
    row broadcasts over the tokens."""
    if segments_BxN is None:
        return values_BxSxD
    clip_BxN = jnp.clip(segments_BxN - 1, 0, values_BxSxD.shape[1] - 1)
    return jnp.take_along_axis(values_BxSxD, clip_BxN[..., None], axis=1)


def dit_from_variant(variant: str, **fields) -> DiT:
    return DiT(**decode_variant(variant), **fields)
