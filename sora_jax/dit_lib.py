"""The text-to-video recipe shared by `train`, `generate` and `eval`: the DiT from config, its
train state with EMA, the rectified-flow loss on latent tokens, the sampler, and loading a
trained run (DiT + text encoder + the VAE it was trained with) from a workdir.

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
from flax import linen as nn

from sora_jax import checkpoints, sharding, train_lib, vae_lib
from sora_jax.diffusion import rectified_flow, samplers
from sora_jax.models import dit, patching
from sora_jax.text import encoders

VAE_REF = "vae.json"


# ------------------------------------------------------------------------------------------------
# Model and state.
# ------------------------------------------------------------------------------------------------
def make_model(model_config: ml_collections.ConfigDict) -> dit.DiT:
    return dit.dit_from_variant(
        model_config.variant,
        mlp_ratio=model_config.mlp_ratio,
        activation=model_config.activation,
        text_mode=model_config.text_mode,
        attention=model_config.attention,
        scan_layers=model_config.scan_layers,
        remat_policy=model_config.remat_policy,
        dtype=jnp.dtype(model_config.dtype),
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
    """Per-token text states: given in the batch (frozen encoder) or computed (trainable one)."""
    if text.frozen:
        return batch["text"], batch["text_mask"]
    states = text.module.apply({"params": params["text"]}, batch["text_ids"], batch["text_mask"])
    return states, batch["text_mask"]


def normalize(latent, stats):
    mean, std = stats
    return (latent - mean) / std


def denormalize(latent, stats):
    mean, std = stats
    return latent * std + mean


def make_loss_fn(model: dit.DiT, text: encoders.TextEncoder, diffusion, stats):
    """`loss_fn(params, batch, rng, step)`; batch: "latent" [B,t,h,w,c] (raw VAE latents), text
    fields, optional "cond_frames" [B,t] bool (clean conditioning frames; none = text-to-video).
    The flow loss is the same at every step."""

    def loss_fn(params, batch, rng, step=None):
        del step
        t_rng, drop_rng = jax.random.split(rng)
        latent = normalize(batch["latent"], stats)
        grid = patching.grid_shape(latent.shape, model.patch_size)
        x0_BxNxP = patching.patchify(latent, model.patch_size)
        b, n, _ = x0_BxNxP.shape
        cond_frames = batch.get("cond_frames", jnp.zeros(latent.shape[:2], bool))
        cond_BxN = patching.frame_mask_to_tokens(cond_frames, grid, model.patch_size)
        shift = rectified_flow.shift_for_tokens(n, **diffusion.shift)
        x_t, t_BxN, eps = rectified_flow.training_inputs(
            t_rng, x0_BxNxP, cond_BxN, shift=shift, t_mean=diffusion.t_mean, t_std=diffusion.t_std
        )
        states, mask = text_states(params, batch, text)
        v_BxNxP = model.apply(
            {"params": params["dit"]},
            x_t,
            t_BxN,
            patching.grid_coords(grid, b),
            states,
            mask,
            drop_text_B=rectified_flow.drop_text(drop_rng, b, diffusion.text_dropout),
            grid=grid,
        )
        loss = rectified_flow.flow_loss(v_BxNxP, x0_BxNxP, eps, cond_BxN, jnp.ones((b, n), bool))
        return loss, {"t_mean": jnp.mean(t_BxN)}

    return loss_fn


# ------------------------------------------------------------------------------------------------
# Sampling.
# ------------------------------------------------------------------------------------------------
@functools.partial(
    jax.jit, static_argnames=("model", "text", "latent_shape", "steps", "method", "shift")
)
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
    method: str,
    shift: float,
    cfg: float,
    stats,
):
    """Generates raw (denormalised) latents [B, t, h, w, c] for the given text states."""
    grid = patching.grid_shape(latent_shape, model.patch_size)
    b = latent_shape[0]
    noise = patching.patchify(jax.random.normal(rng, latent_shape), model.patch_size)
    coords = patching.grid_coords(grid, 2 * b)
    if not text.frozen:
        text_BxLxE = text.module.apply({"params": params["text"]}, text_BxLxE, text_mask_BxL)
    pair_text = jnp.concatenate([text_BxLxE, text_BxLxE])
    pair_mask = jnp.concatenate([text_mask_BxL, text_mask_BxL])
    drop = jnp.arange(2 * b) >= b  # the second half is the unconditional branch

    def pair_fn(x_2BxNxP, t_2BxN):
        return model.apply(
            {"params": params["dit"]},
            x_2BxNxP,
            t_2BxN,
            coords,
            pair_text,
            pair_mask,
            drop_text_B=drop,
            grid=grid,
        )

    velocity = samplers.cfg_velocity_batched(pair_fn, cfg)
    tokens = samplers.sample(velocity, noise, num_steps=steps, method=method, shift=shift)
    return denormalize(patching.unpatchify(tokens, grid, model.patch_size), stats)


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

    def latent_shape(self, batch: int, frames: int, height: int, width: int):
        shape = self.vae.check_video_shape((batch, frames, height, width, 3))
        latent = self.vae.latent_shape(shape)
        patching.check_patchable(latent, self.model.patch_size)
        return latent

    def generate(
        self, prompts, *, frames, height, width, steps, cfg, seed, method="euler", params=None
    ):
        """uint8 videos [B, frames, height, width, 3] for the prompts.

        `params` replaces the loaded DiT params (the trainer samples its current EMA with them,
        keeping the compiled text encoder and sampler of this pipeline).
        """
        shape = self.latent_shape(len(prompts), frames, height, width)
        text_in, mask = self.embed(prompts)
        tokens = int(np.prod(shape[1:4])) // int(np.prod(self.model.patch_size))
        latents = sample_latents(
            self.model,
            self.text,
            self.params if params is None else params,
            jnp.asarray(text_in),
            jnp.asarray(mask),
            jax.random.key(seed),
            latent_shape=tuple(shape),
            steps=steps,
            method=method,
            shift=rectified_flow.shift_for_tokens(tokens, **self.config.diffusion.shift),
            cfg=cfg,
            stats=self.stats,
        )
        return np.asarray(vae_lib.decode(self.vae, self.vae_params, latents))


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
    with sharding.mesh_context(mesh, sharding.DIT_RULES):
        boxed = jax.eval_shape(
            lambda r: create_state(init_params(model, text, latent_shape, r), optimizer),
            jax.random.key(0),
        )
        shardings = sharding.logical_shardings(boxed, mesh, sharding.DIT_RULES)
    return checkpoints.abstract_like(nn.unbox(boxed), shardings), shardings


def batch_shardings(mesh, text: encoders.TextEncoder) -> dict:
    """Shardings of a train batch: latents plus text states (frozen) or token ids (trained)."""
    shardings = {
        "latent": sharding.batch_sharding(mesh, 5),
        "text_mask": sharding.batch_sharding(mesh, 2),
    }
    if text.frozen:
        shardings["text"] = sharding.batch_sharding(mesh, 3)
    else:
        shardings["text_ids"] = sharding.batch_sharding(mesh, 2)
    return shardings


def lower_train_step(config, mesh, latent_shape: tuple[int, ...], text=None):
    """The sharded train step lowered with abstract inputs (nothing allocated or computed).

    For checking that a config builds and for planning big presets on small machines.
    `latent_shape` is the global batch of latents [B, t, h, w, c].
    """
    model = make_model(config.model)
    text = text or encoders.make_text_encoder(config.model.text)
    optimizer = train_lib.make_optimizer(config.optimizer, config.total_steps)
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
        "text_mask": jax.ShapeDtypeStruct((b, length), bool),
    }
    if text.frozen:
        batch["text"] = jax.ShapeDtypeStruct((b, length, text.width), jnp.float32)
    else:
        batch["text_ids"] = jax.ShapeDtypeStruct((b, length), jnp.int32)
    return step.lower(state, batch, jax.random.key(0))


def load_pipeline(workdir, step: int | None = None) -> Pipeline:
    """The newest (or given) checkpoint of a `train` run with its text encoder and VAE.

    Raises `checkpoints.CheckpointError` for a missing or foreign directory.
    """
    config = checkpoints.saved_config(workdir, step)
    if "diffusion" not in config:
        raise checkpoints.CheckpointError(f"{workdir} is not a `sora-jax train` run")
    ref = read_vae_ref(workdir)
    if ref is None:
        raise checkpoints.CheckpointError(f"{workdir} has no {VAE_REF} (the VAE it was trained on)")
    vae, vae_params, _ = vae_lib.load_vae(ref["workdir"], ref["step"])
    model = make_model(config.model)
    text = encoders.make_text_encoder(config.model.text)
    optimizer = train_lib.make_optimizer(config.optimizer, config.total_steps)
    frames, height, width = config.data.sizes[0]
    latent_shape = vae.latent_shape((1, frames, height, width, 3))
    mesh = sharding.make_mesh({"data": -1}, devices=jax.devices()[:1])
    target, _ = abstract_state(model, text, optimizer, latent_shape, mesh)
    state = checkpoints.restore_state(workdir, target, step)
    stats = (
        np.asarray(ref["latent_mean"], np.float32),
        np.asarray(ref["latent_std"], np.float32),
    )
    return Pipeline(
        config=config,
        model=model,
        params=state.ema,
        text=text,
        vae=vae,
        vae_params=vae_params,
        stats=stats,
        step=int(state.step),
    )
