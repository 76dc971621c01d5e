"""The text-to-video recipe shared by `train`, `generate` and `eval`: the DiT from config, its
train state with EMA, the rectified-flow loss on latent tokens, the sampler, and loading a
trained run (DiT + text encoder + the VAE it was trained with) from a workdir or a bundle.

Latents are normalised per channel with the statistics of the latent cache (`vae.json` in the
run's workdir pins the VAE checkpoint and those statistics), so the DiT sees ~unit variance.
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import linen as nn

from sora_jax import bundle, checkpoints, config_lib, sharding, train_lib, vae_lib
from sora_jax.diffusion import rectified_flow, samplers
from sora_jax.models import dit, patching
from sora_jax.text import encoders

VAE_REF = "vae.json"


# ------------------------------------------------------------------------------------------------
# Model and state.
# ------------------------------------------------------------------------------------------------
# `config.model` fields added after runs were saved, at the value those runs used.
_LATER_MODEL_FIELDS = dict(
    attention_impl="xla",
    attention_block=512,
    prediction="velocity",
    pooled_text=False,
    rope_time_scale=1.0,
    absolute_position=False,
)


# Fields added to `config.diffusion` since runs were first saved, at the value those runs used.
_LATER_DIFFUSION_FIELDS = dict(frame_noise_correlation=0.0)


def noise_prior_correlation(diffusion_config, model: dit.DiT | None = None) -> float:
    """A run's `diffusion.frame_noise_correlation` (0 for runs saved before it), checked; with
    `model`, also that its tokens are one latent frame deep (the prior correlates tokens, so a
    temporal patch > 1 would leave the frames inside a token independent)."""
    fields = config_lib.with_later_fields(diffusion_config, _LATER_DIFFUSION_FIELDS)
    correlation = rectified_flow.check_frame_correlation(fields["frame_noise_correlation"])
    if correlation and model is not None and model.patch_size[0] != 1:
        raise ValueError(
            f"a frame noise correlation needs a temporal patch size of 1, got {model.patch_size}"
        )
    return correlation


def model_fields(model_config) -> dict:
    """Every field of a DiT config's `model`, those of older runs filled in: what `make_model`
    builds, and what resuming compares."""
    return config_lib.with_later_fields(model_config, _LATER_MODEL_FIELDS)


# The `model_fields` that `make_model` passes to `dit.DiT` as they are.
_DIT_FIELDS = (
    "mlp_ratio",
    "activation",
    "text_mode",
    "attention",
    "attention_impl",
    "attention_block",
    "sequence_parallel",
    "scan_layers",
    "remat_policy",
    "prediction",
    "pooled_text",
    "rope_time_scale",
    "absolute_position",
)


def make_model(model_config: ml_collections.ConfigDict) -> dit.DiT:
    fields = model_fields(model_config)
    return dit.dit_from_variant(
        fields["variant"],
        **{key: fields[key] for key in _DIT_FIELDS},
        dtype=jnp.dtype(fields["dtype"]),
    )


@flax.struct.dataclass
class DiTState(train_lib.TrainState):
    """The train state plus an exponential moving average of the params (used for sampling)."""

    ema: Any


def init_params(model: dit.DiT, text: encoders.TextEncoder, latent_shape, rng):
    """{"dit": ..., ["text": ...]} boxed params for a latent of `latent_shape` [B, t, h, w, c]."""
    dit_rng, text_rng = jax.random.split(rng)
    tokens = patching.patchify(jnp.zeros(latent_shape), model.patch_size)
    grid = patching.grid_shape(latent_shape, model.patch_size)
    b, n, _ = tokens.shape
    length = text.tokenizer.max_length
    params = {
        "dit": model.init(
            dit_rng,
            tokens,
            jnp.zeros((b, n)),
            patching.grid_coords(grid, b),
            jnp.zeros((b, length, text.width)),
            jnp.ones((b, length), bool),
            drop_text_B=jnp.zeros((b,), bool),
            grid=grid,
        )["params"]
    }
    if not text.frozen:
        ids = jnp.zeros((b, length), jnp.int32)
        params["text"] = text.module.init(text_rng, ids, ids > 0)["params"]
    return params


def create_state(params, optimizer) -> DiTState:
    base = train_lib.create_train_state(params, optimizer)
    # A copy, not the same buffers: the train step donates its state.
    ema = jax.tree.map(jnp.copy, params)
    return DiTState(step=base.step, params=base.params, opt_state=base.opt_state, ema=ema)


def make_train_step(loss_fn, optimizer, ema_decay: float):
    """`train_lib.make_train_step` followed by the EMA update."""
    base_step = train_lib.make_train_step(loss_fn, optimizer)

    def train_step(state: DiTState, batch, rng):
        new_state, metrics = base_step(state, batch, rng)
        # Warm-up: the EMA's memory grows with the step count, so early samples are not
        # dominated by the random init (at 0.999 a fixed decay keeps 82% of it after 200 steps).
        step = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
        ema = rectified_flow.ema_update(state.ema, new_state.params, decay)
        return new_state.replace(ema=ema), metrics

    return train_step


# ------------------------------------------------------------------------------------------------
# Loss.
# ------------------------------------------------------------------------------------------------
def text_states(params, batch, text: encoders.TextEncoder):
    """Per-token text states: given in the batch (frozen encoder) or computed (trainable one).

    Packed batches hold S captions a row as consecutive blocks; a trainable encoder reads each
    block on its own.
    """
    if text.frozen:
        return batch["text"], batch["text_mask"]
    ids, mask = batch["text_ids"], batch["text_mask"]
    if "text_segments" in batch:
        b, s = batch["clip_tokens"].shape
        blocks = (b * s, ids.shape[1] // s)
        apply = functools.partial(text.module.apply, {"params": params["text"]})
        states = apply(ids.reshape(blocks), mask.reshape(blocks))
        return states.reshape(b, ids.shape[1], -1), mask
    return text.module.apply({"params": params["text"]}, ids, mask), mask


def normalize(latent, stats):
    mean, std = stats
    return (latent - mean) / std


def denormalize(latent, stats):
    mean, std = stats
    return latent * std + mean


def token_inputs(model: dit.DiT, latent, cond_frames, tail=None):
    """The DiT's token sequence for a (normalised) clip latent [B, t, h, w, c] and its conditioning.

    `cond_frames` [B, t] marks the head frames given in place. `tail` is None or (latent
    [B, K, h, w, c], time [B, K], valid [B, K]): frames appended as extra clean tokens at those
    time coordinates (`tasks.py`). Returns (x0 [B, N + M, P], coords [B, N + M, 3],
    cond [B, N + M] bool, segments [B, N + M] int32 or None when every token is valid, grid).
    The clip's own N tokens come first.
    """
    patch = model.patch_size
    grid = patching.grid_shape(latent.shape, patch)
    x0_BxNxP = patching.patchify(latent, patch)
    b, n, _ = x0_BxNxP.shape
    coords_BxNx3 = patching.grid_coords(grid, b)
    cond_BxN = patching.frame_mask_to_tokens(cond_frames, grid, patch)
    if tail is None:
        return x0_BxNxP, coords_BxNx3, cond_BxN, None, grid
    tail_latent, tail_time_BxK, tail_valid_BxK = tail
    if patch[0] != 1:
        raise ValueError(f"tail conditioning needs a temporal patch size of 1, got {patch}")
    tail_grid = patching.grid_shape(tail_latent.shape, patch)
    per_frame = tail_grid[1] * tail_grid[2]  # tokens are t-major
    tail_coords = patching.grid_coords(tail_grid, b)
    tail_coords = tail_coords.at[..., 0].set(jnp.repeat(tail_time_BxK, per_frame, axis=1))
    tail_valid_BxM = jnp.repeat(tail_valid_BxK, per_frame, axis=1)
    segments = jnp.concatenate([jnp.ones((b, n), bool), tail_valid_BxM], axis=1)
    return (
        jnp.concatenate([x0_BxNxP, patching.patchify(tail_latent, patch)], axis=1),
        jnp.concatenate([coords_BxNx3, tail_coords], axis=1),
        jnp.concatenate([cond_BxN, jnp.ones_like(tail_valid_BxM)], axis=1),
        segments.astype(jnp.int32),
        grid,
    )


def make_loss_fn(model: dit.DiT, text: encoders.TextEncoder, diffusion, stats):
    """`loss_fn(params, batch, rng, step)`; batch: "latent" [B,t,h,w,c] (raw VAE latents), text
    fields, optional task conditioning from `tasks.conditioning_batch`: "cond_frames" [B,t] bool
    (head frames clean in place; none = text-to-video) and "tail_latent" / "tail_time" /
    "tail_valid" (frames appended as clean tokens). The flow loss is the same at every step."""
    correlation = noise_prior_correlation(diffusion, model)

    def loss_fn(params, batch, rng, step=None):
        del step
        t_rng, drop_rng = jax.random.split(rng)
        latent = normalize(batch["latent"], stats)
        tail = None
        if "tail_latent" in batch:
            tail_latent = normalize(batch["tail_latent"], stats)
            tail = (tail_latent, batch["tail_time"], batch["tail_valid"])
        cond_frames = batch.get("cond_frames", jnp.zeros(latent.shape[:2], bool))
        x0_BxNxP, coords, cond_BxN, segments, grid = token_inputs(model, latent, cond_frames, tail)
        b, n, _ = x0_BxNxP.shape
        clip_tokens = int(np.prod(grid))
        shift = rectified_flow.shift_for_tokens(clip_tokens, **diffusion.shift)
        x_t, t_BxN, eps = rectified_flow.training_inputs(
            t_rng, x0_BxNxP, cond_BxN, shift=shift, t_mean=diffusion.t_mean,
            t_std=diffusion.t_std, coords_BxNx3=coords, frame_correlation=correlation,
        )  # fmt: skip
        states, mask = text_states(params, batch, text)
        v_BxNxP = model.apply(
            {"params": params["dit"]},
            x_t,
            t_BxN,
            coords,
            states,
            mask,
            segments_BxN=segments,
            drop_text_B=rectified_flow.drop_text(drop_rng, b, diffusion.text_dropout),
            grid=grid if tail is None else None,
        )
        valid = jnp.ones((b, n), bool) if segments is None else segments > 0
        loss = rectified_flow.flow_loss(v_BxNxP, x0_BxNxP, eps, cond_BxN, valid)
        noisy = jnp.maximum(jnp.sum(~cond_BxN), 1)
        return loss, {"t_mean": jnp.sum(jnp.where(cond_BxN, 0.0, t_BxN)) / noisy}

    return loss_fn


def make_packed_loss_fn(model: dit.DiT, text: encoders.TextEncoder, diffusion, stats):
    """The flow loss on packed rows (`data/packing.py`): batch "tokens" [B, L, P] (raw latent
    patches), "coords", "segments" (0 = padding), "cond", "clip_tokens" [B, S], text fields of
    S caption blocks a row and "text_segments" [B, S * Lt]. Each packed clip draws its own
    timestep (shifted for its own token count) and guidance dropout."""
    mean, std = (jnp.asarray(x) for x in stats)
    correlation = noise_prior_correlation(diffusion, model)

    def loss_fn(params, batch, rng, step=None):
        del step
        t_rng, eps_rng, drop_rng = jax.random.split(rng, 3)
        tokens = batch["tokens"]
        b, n, p = tokens.shape
        x0_BxNxP = ((tokens.reshape(b, n, -1, mean.shape[0]) - mean) / std).reshape(b, n, p)
        segments, cond_BxN = batch["segments"], batch["cond"]
        clips = batch["clip_tokens"].shape[1]
        shift_BxS = rectified_flow.shift_for_tokens(batch["clip_tokens"], **diffusion.shift)
        t_BxS = rectified_flow.shift_t(
            rectified_flow.sample_t(t_rng, (b, clips), mean=diffusion.t_mean, std=diffusion.t_std),
            shift_BxS,
        )
        t_BxN = jnp.take_along_axis(t_BxS, jnp.clip(segments - 1, 0, clips - 1), axis=1)
        t_BxN = jnp.where(cond_BxN, 0.0, t_BxN)
        eps = rectified_flow.prior_noise(
            eps_rng, x0_BxNxP.shape, batch["coords"], correlation, segments
        )
        x_t = rectified_flow.noisy_input(x0_BxNxP, eps, t_BxN, cond_BxN)
        states, mask = text_states(params, batch, text)
        drop = jax.random.bernoulli(drop_rng, diffusion.text_dropout, (b, clips))
        v_BxNxP = model.apply(
            {"params": params["dit"]},
            x_t,
            t_BxN,
            batch["coords"],
            states,
            mask,
            segments_BxN=segments,
            text_segments_BxL=batch["text_segments"],
            drop_text_B=drop,
        )
        loss = rectified_flow.flow_loss(v_BxNxP, x0_BxNxP, eps, cond_BxN, segments > 0)
        scored = (segments > 0) & ~cond_BxN
        return loss, {
            "t_mean": jnp.sum(jnp.where(scored, t_BxN, 0.0)) / jnp.maximum(jnp.sum(scored), 1),
            "fill": jnp.mean(segments > 0),
        }

    return loss_fn


# ------------------------------------------------------------------------------------------------
# Sampling.
# ------------------------------------------------------------------------------------------------
def guided_pair_fn(model: dit.DiT, dit_params, coords_2BxNx3, text_BxLxE, mask_BxL, grid):
    """`pair_fn(x [2B, N, P], t [2B, N])` for `samplers.cfg_velocity_batched`: the DiT over a
    doubled batch whose first half sees the text and second half the null text."""
    b = text_BxLxE.shape[0]
    pair_text = jnp.concatenate([text_BxLxE, text_BxLxE])
    pair_mask = jnp.concatenate([mask_BxL, mask_BxL])
    drop = jnp.arange(2 * b) >= b  # the second half is the unconditional branch

    def pair_fn(x_2BxNxP, t_2BxN):
        return model.apply(
            {"params": dit_params}, x_2BxNxP, t_2BxN, coords_2BxNx3, pair_text, pair_mask,
            drop_text_B=drop, grid=grid,
        )  # fmt: skip

    return pair_fn


@functools.partial(
    jax.jit,
    static_argnames=(
        "model", "text", "latent_shape", "steps", "sampler", "shift", "cfg_interval",
        "frame_correlation",
    ),
)  # fmt: skip
def sample_latents(
    model: dit.DiT,
    text: encoders.TextEncoder,
    params,
    text_BxLxE,
    text_mask_BxL,
    rng,
    *,
    latent_shape: tuple[int, ...],
    steps: int,
    sampler: str,
    shift: float,
    cfg: float,
    stats,
    cfg_interval: tuple[float, float] | None = None,
    head=None,
    tail=None,
    init=None,
    strength=1.0,
    frame_correlation=0.0,
):
    """Generates raw (denormalised) latents [B, t, h, w, c] for the given text states.

    `rng`: one key for the whole batch's noise, or a key per row [B]; the noise is the run's
    prior (`rectified_flow.prior_noise` with its `frame_correlation`).

    Conditioning (raw latents, see `tasks.py`): `head` = (latent [B, t, h, w, c], frames [B, t]
    bool): the marked frames are given and held clean; `tail` [B, K, h, w, c]: the clip's last K
    frames given, appended as clean tokens. `init` [B, t, h, w, c] with `strength` in (0, 1]
    starts from that latent noised to t = strength instead of pure noise (SDEdit video-to-video).
    """
    b = latent_shape[0]
    if head is None:
        head = (jnp.zeros(latent_shape), jnp.zeros(latent_shape[:2], bool))
    head_latent, head_frames = head
    tail_inputs = None
    if tail is not None:
        k, t = tail.shape[1], latent_shape[1]
        time = jnp.broadcast_to(jnp.arange(t - k, t, dtype=jnp.float32), (b, k))
        tail_inputs = (normalize(tail, stats), time, jnp.ones((b, k), bool))
    x0_BxNxP, coords, cond_BxN, _, grid = token_inputs(
        model, normalize(head_latent, stats), head_frames, tail_inputs
    )
    n = int(np.prod(grid))
    x_start = rectified_flow.prior_noise(rng, x0_BxNxP.shape, coords, frame_correlation)
    if init is not None:
        init_tokens = patching.patchify(normalize(init, stats), model.patch_size)
        x_start = x_start.at[:, :n].set((1.0 - strength) * init_tokens + strength * x_start[:, :n])
    if not text.frozen:
        text_BxLxE = text.module.apply({"params": params["text"]}, text_BxLxE, text_mask_BxL)
    pair_fn = guided_pair_fn(
        model,
        params["dit"],
        jnp.concatenate([coords, coords]),
        text_BxLxE,
        text_mask_BxL,
        grid if tail is None else None,
    )
    velocity = samplers.cfg_velocity_batched(pair_fn, cfg, cfg_interval)
    tokens = samplers.sample(
        velocity,
        x_start,
        num_steps=steps,
        method=sampler,
        shift=shift,
        x0_cond=x0_BxNxP,
        cond_BxN=cond_BxN,
        t_start=strength if init is not None else 1.0,
    )
    return denormalize(patching.unpatchify(tokens[:, :n], grid, model.patch_size), stats)


TEXT_BUCKET = 128  # packed rows' text lengths are multiples of this (few shapes to compile)


def packed_text_fields(text: encoders.TextEncoder, embed, captions, max_clips: int) -> dict:
    """Text fields of packed rows: "text" (states) or "text_ids", "text_mask" and
    "text_segments" (the clip 1..S each text position belongs to, 0 = padding).

    `captions` [B][S_b] holds each row's clips' captions; `embed(prompts)` returns (states or
    ids [n, L, ...], mask [n, L]). A frozen encoder's per-caption states are laid end to end,
    the row length the batch's longest rounded up to `TEXT_BUCKET` (and agreed over processes),
    so cross-attention reads about the captions' real tokens, not `max_clips` x L positions. A
    trained encoder needs each caption on its own: `max_clips` blocks of L ids a row, an unused
    slot repeating the row's first caption (no video token attends to it).
    """
    if not text.frozen:
        padded = [row + row[:1] * (max_clips - len(row)) for row in captions]
        ids, mask = embed([c for row in padded for c in row])
        b, length = len(captions), mask.shape[1]
        blocks = np.repeat(np.arange(1, max_clips + 1, dtype=np.int32), length)
        return {
            "text_ids": ids.reshape(b, max_clips * length),
            "text_mask": mask.reshape(b, max_clips * length),
            "text_segments": np.broadcast_to(blocks, (b, max_clips * length)),
        }
    states, mask = embed([c for row in captions for c in row])
    lengths = mask.sum(axis=1)
    ends = np.cumsum([len(row) for row in captions])
    totals = [
        int(lengths[end - len(row) : end].sum()) for row, end in zip(captions, ends, strict=True)
    ]
    length = -(-sharding.agree_max(max(totals)) // TEXT_BUCKET) * TEXT_BUCKET
    out = {
        "text": np.zeros((len(captions), length, states.shape[-1]), np.float32),
        "text_mask": np.zeros((len(captions), length), bool),
        "text_segments": np.zeros((len(captions), length), np.int32),
    }
    k = 0
    for r, row in enumerate(captions):
        at = 0
        for s in range(len(row)):
            n = int(lengths[k])
            out["text"][r, at : at + n] = states[k][mask[k]]
            out["text_mask"][r, at : at + n] = True
            out["text_segments"][r, at : at + n] = s + 1
            at, k = at + n, k + 1
    return out


# ------------------------------------------------------------------------------------------------
# A trained run, ready to sample.
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline:
    """Everything `generate` needs, loaded from a `train` workdir."""

    config: ml_collections.ConfigDict
    model: dit.DiT
    params: Any  # the EMA params
    text: encoders.TextEncoder
    vae: Any
    vae_params: Any
    stats: tuple[np.ndarray, np.ndarray]
    step: int

    @property
    def frame_correlation(self) -> float:
        """The run's noise prior (`rectified_flow.prior_noise`): 0 is independent noise."""
        return noise_prior_correlation(self.config.diffusion, self.model)

    @functools.cached_property
    def embedder(self) -> encoders.CachedEmbedder | None:
        return encoders.CachedEmbedder(self.text) if self.text.frozen else None

    def embed(self, prompts):
        """(text input [B, L, E] or ids [B, L], mask [B, L]) for the DiT's text encoder."""
        prompts = [str(p) for p in prompts]
        if self.embedder is not None:
            return self.embedder(prompts)
        tokens = self.text.tokenizer(prompts)
        return tokens["ids"], tokens["mask"]

    def text_batch(self, captions) -> dict:
        """The text fields of a train batch: states (frozen encoder) or token ids, and mask."""
        text_in, mask = self.embed(captions)
        return {"text" if self.text.frozen else "text_ids": text_in, "text_mask": mask}

    def packed_text_batch(self, captions, max_clips: int) -> dict:
        """`packed_text_fields` with this pipeline's encoder."""
        return packed_text_fields(self.text, self.embed, captions, max_clips)

    def latent_shape(self, batch: int, frames: int, height: int, width: int):
        shape = self.vae.check_video_shape((batch, frames, height, width, 3))
        latent = self.vae.latent_shape(shape)
        patching.check_patchable(latent, self.model.patch_size)
        return latent

    def default_shift(self, frames: int, height: int, width: int) -> float:
        """The sampler's timestep shift when none is asked for: the run's
        `config.diffusion.shift` at the token count of one clip of this size."""
        shape = self.latent_shape(1, frames, height, width)
        tokens = int(np.prod(shape[1:4])) // int(np.prod(self.model.patch_size))
        return float(rectified_flow.shift_for_tokens(tokens, **self.config.diffusion.shift))

    def generate(
        self,
        prompts,
        *,
        frames,
        height,
        width,
        steps,
        cfg,
        seed,
        sampler="euler",
        cfg_interval=None,
        shift=None,
        params=None,
        head_video=None,
        tail_video=None,
        init_video=None,
        strength=1.0,
    ):
        """uint8 videos [B, frames, height, width, 3] for the prompts.

        Conditioning, as uint8 pixels (`tasks.py`): `head_video` [B, F, H, W, 3] gives the first
        F = 1 + r (k - 1) frames (r: the VAE's temporal factor), `tail_video` likewise the last
        ones; each is encoded alone. `init_video` [B, frames, H, W, 3] is edited at `strength`
        (SDEdit). `seed`: an int for the whole batch's noise, or one per prompt (each video
        then depends on its own seed alone, not on the batch it is sampled in). `cfg_interval`
        (lo, hi): guide only while t is in it (`samplers.guide`). `shift`: the sampler's
        timestep shift (None: the run's `config.diffusion.shift` at this token count). `params`
        replaces the loaded DiT params (the trainer samples its current EMA with them, keeping
        the compiled text encoder and sampler of this pipeline).
        """
        samplers.check_interval(cfg_interval)
        samplers.check_shift(shift)
        shape = self.latent_shape(len(prompts), frames, height, width)
        head = tail = init = None
        if head_video is not None:
            latent = self._encode_given(head_video, shape, "head")
            k = latent.shape[1]
            head = (
                jnp.zeros(shape).at[:, :k].set(latent),
                jnp.zeros(shape[:2], bool).at[:, :k].set(True),
            )
        if tail_video is not None:
            tail = self._encode_given(tail_video, shape, "tail")
        given = (0 if head is None else k) + (0 if tail is None else tail.shape[1])
        if given >= shape[1]:
            raise ValueError(
                f"the given frames fill all {shape[1]} latent frames of a {frames}-frame clip; "
                "ask for more --frames"
            )
        if init_video is not None:
            if not 0.0 < strength <= 1.0:
                raise ValueError(f"strength must be in (0, 1], got {strength}")
            init = vae_lib.encode(self.vae, self.vae_params, np.asarray(init_video))
            if tuple(init.shape) != tuple(shape):
                raise ValueError(
                    f"the video to edit encodes to {tuple(init.shape)}, not {tuple(shape)}"
                )
        text_in, mask = self.embed(prompts)
        latents = sample_latents(
            self.model,
            self.text,
            self.params if params is None else params,
            jnp.asarray(text_in),
            jnp.asarray(mask),
            noise_keys(seed, len(prompts)),
            latent_shape=tuple(shape),
            steps=steps,
            sampler=sampler,
            shift=float(shift) if shift is not None else self.default_shift(frames, height, width),
            cfg=cfg,
            cfg_interval=None if cfg_interval is None else tuple(map(float, cfg_interval)),
            stats=self.stats,
            head=head,
            tail=tail,
            init=init,
            strength=strength,
            frame_correlation=self.frame_correlation,
        )
        return np.asarray(vae_lib.decode(self.vae, self.vae_params, latents))

    def _encode_given(self, video, latent_shape, what: str):
        """Raw latents [B, k, h, w, c] of given frames encoded alone, checked against the clip."""
        video = np.asarray(video)
        b, _, h, w, c = latent_shape
        if video.ndim != 5 or video.shape[0] != b:
            raise ValueError(f"{what} frames must be [{b}, F, H, W, 3], got {video.shape}")
        self.vae.check_video_shape(video.shape)
        latent = vae_lib.encode(self.vae, self.vae_params, video)
        if tuple(latent.shape[2:]) != (h, w, c):
            raise ValueError(
                f"{what} frames of {video.shape[2]}x{video.shape[3]} do not match the clip's size"
            )
        return latent


def noise_keys(seed, batch: int) -> jax.Array:
    """One key from an int seed; a key per row [batch] from a sequence of `batch` seeds."""
    seeds = np.asarray(seed)
    if seeds.ndim == 0:
        return jax.random.key(int(seeds))
    if seeds.shape != (batch,):
        raise ValueError(f"expected one seed or {batch} seeds, got {seeds.shape[0]}")
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def write_vae_ref(workdir, vae_workdir: str, vae_step: int, meta: dict) -> None:
    ref = {
        "workdir": str(pathlib.Path(vae_workdir).resolve()),
        "step": vae_step,
        "latent_mean": meta["latent_mean"],
        "latent_std": meta["latent_std"],
    }
    (pathlib.Path(workdir) / VAE_REF).write_text(json.dumps(ref, indent=1))


def read_vae_ref(workdir) -> dict | None:
    path = pathlib.Path(workdir) / VAE_REF
    return json.loads(path.read_text()) if path.exists() else None


def abstract_state(model, text, optimizer, latent_shape, mesh):
    """(abstract DiTState with shardings, shardings) for restoring or lowering."""
    # An abstract key: a concrete one would be placed on the mesh's devices, which may be a
    # topology description with nothing to run on (`sora-jax plan`).
    rng = jax.eval_shape(jax.random.key, 0)
    with sharding.mesh_context(mesh, sharding.DIT_RULES):
        boxed = jax.eval_shape(
            lambda r: create_state(init_params(model, text, latent_shape, r), optimizer), rng
        )
        shardings = sharding.logical_shardings(boxed, mesh, sharding.DIT_RULES)
    return checkpoints.abstract_like(nn.unbox(boxed), shardings), shardings


def packed_batch_shardings(mesh, text: encoders.TextEncoder) -> dict:
    """Shardings of a packed train batch (`make_packed_loss_fn`)."""
    ranks = dict(tokens=3, coords=3, segments=2, cond=2, clip_tokens=2, text_mask=2)
    ranks.update(text_segments=2, **({"text": 3} if text.frozen else {"text_ids": 2}))
    return {key: sharding.batch_sharding(mesh, rank) for key, rank in ranks.items()}


def batch_shardings(mesh, text: encoders.TextEncoder, *, tails: bool = False) -> dict:
    """Shardings of a train batch: latents, head-frame flags, text states (frozen) or token ids
    (trained), and with `tails` the appended tail frames of `tasks.conditioning_batch`."""
    shardings = {
        "latent": sharding.batch_sharding(mesh, 5),
        "cond_frames": sharding.batch_sharding(mesh, 2),
        "text_mask": sharding.batch_sharding(mesh, 2),
    }
    if tails:
        shardings["tail_latent"] = sharding.batch_sharding(mesh, 5)
        shardings["tail_time"] = sharding.batch_sharding(mesh, 2)
        shardings["tail_valid"] = sharding.batch_sharding(mesh, 2)
    if text.frozen:
        shardings["text"] = sharding.batch_sharding(mesh, 3)
    else:
        shardings["text_ids"] = sharding.batch_sharding(mesh, 2)
    return shardings


def lower_train_step(config, mesh, latent_shape: tuple[int, ...], text=None, depth=None):
    """The sharded train step lowered with abstract inputs (nothing allocated or computed).

    For checking that a config builds and for planning big presets on small machines.
    `latent_shape` is the global batch of latents [B, t, h, w, c]. `depth` replaces the preset's
    layer count with that many unscanned layers (how `sora-jax plan` counts a layer's FLOPs).
    """
    model, text, optimizer = abstract_parts(config, text, depth)
    state, state_shardings = abstract_state(model, text, optimizer, (1, *latent_shape[1:]), mesh)
    channels = latent_shape[-1]
    stats = (jnp.zeros(channels), jnp.ones(channels))
    loss_fn = make_loss_fn(model, text, config.diffusion, stats)
    step = train_lib.jit_train_step(
        make_train_step(loss_fn, optimizer, config.ema_decay),
        state_shardings,
        batch_shardings(mesh, text),
        mesh,
        sharding.DIT_RULES,
    )
    b, length = latent_shape[0], text.tokenizer.max_length
    batch = {
        "latent": jax.ShapeDtypeStruct(latent_shape, jnp.float32),
        "cond_frames": jax.ShapeDtypeStruct(latent_shape[:2], bool),
        "text_mask": jax.ShapeDtypeStruct((b, length), bool),
    }
    if text.frozen:
        batch["text"] = jax.ShapeDtypeStruct((b, length, text.width), jnp.float32)
    else:
        batch["text_ids"] = jax.ShapeDtypeStruct((b, length), jnp.int32)
    return step.lower(state, batch, jax.eval_shape(jax.random.key, 0))


def lower_sample_step(config, mesh, latent_shape: tuple[int, ...], text=None, depth=None):
    """One sampler step lowered abstractly: the guided pair of DiT evaluations (one call over a
    doubled batch, as `sample_latents` runs it) and an Euler update, on sharded EMA params.

    Text states are taken as given (a frozen encoder's output, or a trainable encoder's, which
    runs once per video, not per step). Arguments as in `lower_train_step`.
    """
    model, text, optimizer = abstract_parts(config, text, depth)
    state, state_shardings = abstract_state(model, text, optimizer, (1, *latent_shape[1:]), mesh)
    grid = patching.grid_shape(latent_shape, model.patch_size)
    b, n, length = latent_shape[0], int(np.prod(grid)), text.tokenizer.max_length
    patch = int(np.prod(model.patch_size)) * latent_shape[-1]

    def sample_step(params, x_BxNxP, t_B, dt, text_BxLxE, mask_BxL):
        coords = patching.grid_coords(grid, 2 * b)
        pair_fn = guided_pair_fn(model, params["dit"], coords, text_BxLxE, mask_BxL, grid)
        t_BxN = jnp.broadcast_to(t_B[:, None], (b, n))
        velocity = samplers.cfg_velocity_batched(pair_fn, 4.0)(x_BxNxP, t_BxN)
        return x_BxNxP - dt * velocity

    batched = sharding.batch_sharding
    jitted = jax.jit(
        sample_step,
        in_shardings=(
            state_shardings.ema,
            batched(mesh, 3),
            batched(mesh, 1),
            sharding.replicated(mesh),
            batched(mesh, 3),
            batched(mesh, 2),
        ),
        out_shardings=batched(mesh, 3),
    )
    args = (
        state.ema,
        jax.ShapeDtypeStruct((b, n, patch), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.float32),
        jax.ShapeDtypeStruct((), jnp.float32),
        jax.ShapeDtypeStruct((b, length, text.width), jnp.float32),
        jax.ShapeDtypeStruct((b, length), bool),
    )
    return sharding.MeshJitted(jitted, mesh, sharding.DIT_RULES).lower(*args)


def abstract_parts(config, text, depth):
    """(model, text encoder, optimizer) for lowering; see `lower_train_step`."""
    model = make_model(config.model)
    if depth is not None:
        model = model.clone(depth=depth, scan_layers=False)
    text = text or encoders.make_text_encoder(config.model.text)
    return model, text, train_lib.make_optimizer(config.optimizer, config.total_steps)


def warm_start(
    state: DiTState, model: dit.DiT, source, shardings, *, frame_correlation: float
) -> DiTState:
    """`state` of `model` with params and EMA both set to the EMA params of a `train` run or a
    bundle, placed with `shardings` (`config.init_from`; the optimizer starts fresh). A source
    with the same blocks and a coarser patch that `model`'s divides has its patch layers resized
    (`patching.finer_patch_weights`). `frame_correlation`: the new run's noise prior (a source
    trained on another is warned about)."""
    loaded = load_pipeline(source)
    params = loaded.params
    if loaded.model.patch_size != model.patch_size and _same_blocks(loaded.model, model):
        try:
            params = _finer_patches(params, loaded.model.patch_size, model.patch_size)
        except ValueError as error:
            raise checkpoints.CheckpointError(
                f"{source}: {error}, so its patch embedding cannot be resized (a warm start "
                f"may only refine patches; it was trained with "
                f"--config.model.variant={loaded.config.model.variant})"
            ) from None
        logging.info(
            "%s has %s patches: its patch embedding and output layer resized to %s",
            source, "x".join(map(str, loaded.model.patch_size)),
            "x".join(map(str, model.patch_size)),
        )  # fmt: skip
    try:
        vae_lib.check_same_shapes(state.params, params, source)
    except checkpoints.CheckpointError as error:
        hint = " ".join(f"--config.model.{k}={v}" for k, v in _shape_fields(loaded, model).items())
        raise checkpoints.CheckpointError(f"{error}; it was trained with {hint}") from None
    if loaded.model.prediction != model.prediction:
        logging.warning(
            "%s predicts %s and this model %s: its last layer's output changes meaning",
            source, loaded.model.prediction, model.prediction,
        )  # fmt: skip
    if loaded.model.rope_time_scale != model.rope_time_scale:
        logging.warning(
            "%s was trained with rope_time_scale %s and this model uses %s: the time angles "
            "its attention learned change",
            source, loaded.model.rope_time_scale, model.rope_time_scale,
        )  # fmt: skip
    if loaded.frame_correlation != frame_correlation:
        logging.warning(
            "%s was trained from noise of frame correlation %s and this run uses %s: it "
            "starts on a prior it has not seen",
            source, loaded.frame_correlation, frame_correlation,
        )  # fmt: skip
    params = jax.device_put(params, shardings)
    return state.replace(params=params, ema=jax.tree.map(jnp.copy, params))  # no shared buffers


def _same_blocks(a: dit.DiT, b: dit.DiT) -> bool:
    """Whether two DiTs have the same transformer blocks (their patch sizes may differ)."""
    return all(getattr(a, key) == getattr(b, key) for key in ("width", "depth", "num_heads"))


def _finer_patches(params, old, new):
    """`params` with the patch embedding and output layer resized from patch `old` to a finer
    `new` (`patching.finer_patch_weights`; ValueError unless `new` divides `old`)."""
    net = params["dit"]
    embed, final = net["patch_embed"], net["final"]
    kernel, out_kernel, out_bias = patching.finer_patch_weights(
        embed["kernel"], final["kernel"], final["bias"], old, new
    )
    resized = {
        "patch_embed": {**embed, "kernel": kernel},
        "final": {**final, "kernel": out_kernel, "bias": out_bias},
    }
    return {**params, "dit": {**net, **resized}}


def _shape_fields(loaded: "Pipeline", model: dit.DiT) -> dict:
    """The `config.model` fields that set param shapes in which `loaded` differs from `model`
    (the patch size not when the blocks are the same: `warm_start` has resized the patch
    layers then, or refused the patch)."""
    differ = {
        key: getattr(loaded.model, key)
        for key in ("mlp_ratio", "activation", "text_mode", "pooled_text", "absolute_position")
        if getattr(loaded.model, key) != getattr(model, key)
    }
    if not _same_blocks(loaded.model, model):
        differ["variant"] = loaded.config.model.variant
    return differ


def load_pipeline(workdir, step: int | None = None) -> Pipeline:
    """The newest (or given) checkpoint of a `train` run, or a bundle (`sora_jax.bundle`), with
    its text encoder and VAE.

    Raises `checkpoints.CheckpointError` for a missing or foreign directory.
    """
    if bundle.is_bundle(workdir):
        return _load_bundled(workdir, step)
    config = checkpoints.saved_config(workdir, step)
    if "diffusion" not in config:
        raise checkpoints.CheckpointError(f"{workdir} is not a `sora-jax train` run")
    ref = read_vae_ref(workdir)
    if ref is None:
        raise checkpoints.CheckpointError(f"{workdir} has no {VAE_REF} (the VAE it was trained on)")
    vae, vae_params, _ = vae_lib.load_vae(ref["workdir"], ref["step"])
    model, text, target = _restore_target(config, vae)
    state = checkpoints.restore_state(workdir, target, step)
    stats = (ref["latent_mean"], ref["latent_std"])
    return _pipeline(config, model, state.ema, text, vae, vae_params, stats, int(state.step))


def _load_bundled(path, step: int | None) -> Pipeline:
    meta = bundle.read_meta(path)
    if "dit_config" not in meta:
        raise checkpoints.CheckpointError(
            f"{path} holds no DiT (a VAE bundle serves eval-vae, config.vae.workdir and "
            "config.init_from; a captioner bundle serves caption)"
        )
    if step is not None and step != meta["dit_step"]:
        raise checkpoints.CheckpointError(
            f"{path} holds the DiT of step {meta['dit_step']}, not step {step}"
        )
    config = ml_collections.ConfigDict(meta["dit_config"])
    vae, vae_params, _ = vae_lib.load_vae(path)
    model, text, target = _restore_target(config, vae)
    params = jax.device_put(
        bundle.read_params(path, bundle.DIT, target.ema), jax.local_devices()[0]
    )
    stats = (meta["latent_mean"], meta["latent_std"])
    return _pipeline(config, model, params, text, vae, vae_params, stats, meta["dit_step"])


def _restore_target(config, vae):
    """(model, text encoder, abstract DiTState on one local device) of a run's config."""
    model = make_model(config.model)
    text = encoders.make_text_encoder(config.model.text)
    optimizer = train_lib.make_optimizer(config.optimizer, config.total_steps)
    frames, height, width = config.data.sizes[0]
    latent_shape = vae.latent_shape((1, frames, height, width, 3))
    mesh = sharding.make_mesh({"data": -1}, devices=jax.local_devices()[:1])
    target, _ = abstract_state(model, text, optimizer, latent_shape, mesh)
    return model, text, target


def _pipeline(config, model, params, text, vae, vae_params, stats, step) -> Pipeline:
    mean, std = (np.asarray(s, np.float32) for s in stats)
    return Pipeline(
        config=config,
        model=model,
        params=params,
        text=text,
        vae=vae,
        vae_params=vae_params,
        stats=(mean, std),
        step=step,
    )
