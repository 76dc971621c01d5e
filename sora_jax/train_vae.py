"""`sora-jax train-vae`: trains the causal video autoencoder (L1 + MSE + LPIPS + KL [+ GAN]).

    sora-jax train-vae --config configs/vae_tiny.py --workdir W [--config.total_steps=...]

Resumes from the newest checkpoint in W (state, data iterator and config are saved together);
a fresh W can start from another run's or a bundle's VAE params (`--config.init_from=DIR`),
and `--config.freeze_encoder` then trains the decoder alone (the latent space stays fixed);
writes TensorBoard events + metrics.jsonl, a progress bar, and reconstruction videos of fixed
held-out clips (original | reconstruction) to W/samples. SIGTERM finishes the step, saves and
exits 0. One file, top to bottom, in the big_vision way: fork it to change the recipe.
"""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from sora_jax import checkpoints, cli, sharding, train_lib, train_loop, vae_lib
from sora_jax.data import pipeline, sources
from sora_jax.data.shapes_world.world import ShapesWorldSource
from sora_jax.metric_writers import MetricWriter
from sora_jax.video_io import write_video

_NUM_SAMPLE_CLIPS = 4


# ------------------------------------------------------------------------------------------------
# Samples: fixed held-out clips, original | reconstruction.
# ------------------------------------------------------------------------------------------------
def sample_clips(config) -> np.ndarray:
    frames, height, width = config.data.sizes[0]
    source = ShapesWorldSource(
        num_clips=_NUM_SAMPLE_CLIPS,
        split="heldout",
        seed=config.data.world_seed,
        sizes=((frames, height, width),),
    )
    return np.stack([source[i]["video"] for i in range(_NUM_SAMPLE_CLIPS)])


def write_samples(workdir: pathlib.Path, step: int, model, params, clips) -> float:
    recon = np.asarray(vae_lib.reconstruct(model, params, clips))
    mse = np.mean((recon.astype(np.float64) - clips) ** 2)
    # Clips side by side in a row, originals on top, reconstructions below.
    top = np.concatenate(list(clips), axis=2)
    bottom = np.concatenate(list(recon), axis=2)
    grid = np.concatenate([top, bottom], axis=1)
    if jax.process_index() == 0:
        (workdir / "samples").mkdir(parents=True, exist_ok=True)
        write_video(workdir / "samples" / f"recon_{step:07d}.gif", grid, fps=8)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


# ------------------------------------------------------------------------------------------------
# Training loop.
# ------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    if vae_lib.encoder_frozen(config) and not config.get("init_from"):
        raise ValueError(
            "--config.freeze_encoder trains a decoder for a trained encoder: give the VAE it "
            "comes from with --config.init_from"
        )
    workdir = pathlib.Path(workdir)
    model = vae_lib.make_model(config.model)
    mesh = train_loop.make_mesh(config)
    rules = sharding.VAE_RULES
    rng = jax.random.key(config.seed)

    frames, height, width = config.data.sizes[0]
    dummy = jnp.zeros((1, frames, height, width, 3), jnp.float32)
    optimizer = vae_lib.make_optimizer(config)
    state, state_shardings = sharding.sharded_init(
        lambda r: train_lib.create_train_state(
            vae_lib.init_params(model, config.loss, r, dummy), optimizer
        ),
        mesh,
        rules,
        rng,
    )

    source = sources.make_source(config.data)
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    data_iterator = train_loop.iterate(dataset, config.data)

    manager = checkpoints.make_manager(workdir, max_to_keep=config.keep_checkpoints)
    abstract_state = checkpoints.abstract_like(state, state_shardings)
    restored, start_step = checkpoints.restore_latest(
        manager,
        abstract_state,
        data_iterator,
        config,
        check_keys=(),
        # The discriminator's params are part of the state only with the adversarial loss on.
        checks={
            "config.model": lambda c: vae_lib.model_fields(c["model"]),
            "adversarial on/off": lambda c: vae_lib.adversarial_weight(c["loss"]) > 0,
            "freeze_encoder on/off": vae_lib.encoder_frozen,
        },
    )
    if restored is not None:
        state = restored
        logging.info("resumed from step %d", start_step)
    elif config.get("init_from"):
        params = vae_lib.warm_start(state.params, config.init_from, state_shardings.params)
        state = state.replace(params=params)
        logging.info("started from the VAE params of %s", config.init_from)

    loss_fn = vae_lib.make_loss_fn(model, config.loss, vae_lib.encoder_frozen(config))
    train_step = train_lib.jit_train_step(
        train_lib.make_train_step(loss_fn, optimizer),
        state_shardings,
        {"video": sharding.batch_sharding(mesh, 5)},
        mesh,
        rules,
    )

    writer = MetricWriter(workdir)
    clips = sample_clips(config)

    def samples(state, step):
        # Every process reconstructs from a host copy (gathered across hosts); process 0 writes.
        params = sharding.host_copy(vae_lib.autoencoder_params(state.params))
        return {"sample_psnr": write_samples(workdir, step, model, params, clips)}

    def batches():
        while True:
            yield sharding.host_to_global({"video": next(data_iterator)["video"]}, mesh)

    with sharding.mesh_context(mesh, rules):
        state, last = train_loop.run_and_save(
            state,
            train_step,
            batches(),
            rng,
            config=config,
            start_step=start_step,
            manager=manager,
            data_iterator=data_iterator,
            writer=writer,
            periodic=[(config.sample_every, samples)],
            desc="train-vae",
            postfix=("loss", "psnr"),
        )
    return {"step": int(state.step), **last}


main = train_loop.command_main(train_and_evaluate)


if __name__ == "__main__":
    cli.run(main)
