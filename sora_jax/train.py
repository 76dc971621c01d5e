"""`sora-jax train`: trains the diffusion transformer on latents of a frozen VAE.

    sora-jax train --config configs/dit_tiny.py --workdir W [--config.total_steps=...]

On first start the clips of `config.data` are encoded once with the VAE named by
`config.vae.workdir` into a latent cache (`config.latent_cache_dir`, default W/latent_cache), and
W/vae.json pins that VAE checkpoint and the latent statistics. Then: rectified-flow steps with
text dropout and an EMA, Orbax checkpoints of {state (params, optimizer, EMA), data iterator,
config}, TensorBoard events + metrics.jsonl, a progress bar, and every `sample_every` steps a grid
of sample videos for fixed held-out prompts (W/samples) with their probe adherence. Resumes from
the newest checkpoint in W; a fresh W can start from the EMA params of another run or a bundle
(`--config.init_from=DIR`, fresh optimizer). SIGTERM finishes the step, saves and exits 0. One
file, top to bottom, in the big_vision way: fork it to change the recipe.
"""

import itertools
import json
import pathlib

import jax
import ml_collections
from absl import logging

from sora_jax import (
    atomic,
    checkpoints,
    cli,
    dit_lib,
    probe_eval,
    sharding,
    tasks,
    train_lib,
    train_loop,
    vae_lib,
)
from sora_jax.data import latent_cache, packing, pipeline, sources
from sora_jax.data.shapes_world import probe
from sora_jax.metric_writers import MetricWriter
from sora_jax.text import encoders
from sora_jax.video_io import tile_videos, write_video


# ------------------------------------------------------------------------------------------------
# Data: the latent cache.
# ------------------------------------------------------------------------------------------------
def prepare_latents(config, workdir: pathlib.Path, tail_lengths: tuple[int, ...]) -> dict:
    """Builds (or reuses) the latent cache, with the tail encodings the tasks need; returns its
    meta. Pins the VAE in W/vae.json."""
    vae_workdir = config.vae.workdir
    ref = dit_lib.read_vae_ref(workdir)
    if ref is not None:
        vae_step = ref["step"]
    elif config.vae.step >= 0:
        vae_step = config.vae.step
    else:
        vae_step = vae_lib.latest_step(vae_workdir)
    cache_dir = pathlib.Path(config.latent_cache_dir or workdir / "latent_cache")
    description = json.loads(config.data.to_json())

    def ready(meta):
        return latent_cache.matches(meta, vae_workdir, vae_step, description, tail_lengths)

    # Process 0 encodes; a multi-host run keeps its workdir (and so the cache) on storage every
    # host shares, as Orbax's checkpoints need, and the others read it after the barrier.
    if jax.process_index() == 0:
        meta = latent_cache.read_meta(cache_dir)
        if not ready(meta):
            logging.info("encoding %d clips with VAE step %d", config.data.num_clips, vae_step)
            meta = latent_cache.build(
                cache_dir,
                sources.make_source(config.data),
                vae_workdir,
                vae_step,
                description=description,
                batch_size=config.latent_cache_batch,
                tail_lengths=tail_lengths,
            )
        if ref is None:
            dit_lib.write_vae_ref(workdir, vae_workdir, vae_step, meta)
    sharding.barrier("latent_cache")
    meta = latent_cache.read_meta(cache_dir)
    if not ready(meta):
        raise RuntimeError(
            f"process {jax.process_index()} does not see the latent cache process 0 built in "
            f"{cache_dir}: a multi-host run needs its workdir (or config.latent_cache_dir) on "
            "storage every host shares"
        )
    return {**meta, "dir": str(cache_dir)}


# ------------------------------------------------------------------------------------------------
# Samples: fixed held-out prompts, generated with the EMA params, scored by the probe.
# ------------------------------------------------------------------------------------------------
def write_samples(
    workdir: pathlib.Path, step: int, pipe: dit_lib.Pipeline, params, prompts, config
):
    frames, height, width = config.data.sizes[0]
    videos = pipe.generate(
        prompts,
        frames=frames,
        height=height,
        width=width,
        steps=config.sample_steps,
        cfg=config.sample_cfg,
        seed=step,
        params=params,
    )
    readings = [probe.probe(v, p) for v, p in zip(videos, prompts, strict=True)]
    if jax.process_index() == 0:
        (workdir / "samples").mkdir(parents=True, exist_ok=True)
        write_video(workdir / "samples" / f"samples_{step:07d}.gif", tile_videos(videos, 4), fps=8)
        atomic.write_json(workdir / "samples" / f"samples_{step:07d}.json", prompts)
    return probe_eval.summarize(readings)["adherence"]


# ------------------------------------------------------------------------------------------------
# Training loop.
# ------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = train_loop.make_mesh(config)
    # Refuse a foreign workdir before spending minutes on the latent cache.
    manager = checkpoints.make_manager(workdir, max_to_keep=config.keep_checkpoints)
    weights = config.tasks.weights.to_dict()
    tasks.check_weights(weights)
    tail_lengths = tasks.tail_lengths(weights, config.tasks.context)
    if tail_lengths and config.model.attention == "factorized":
        raise ValueError(
            "factorized attention cannot read appended tail frames: give the tasks "
            f"{[t for t in weights if tasks.layout(t, config.tasks.context)[1]]} weight 0"
        )
    model = dit_lib.make_model(config.model)
    # Checked before the latent cache is built: the run's noise prior fits its model.
    frame_correlation = dit_lib.noise_prior_correlation(config.diffusion, model)
    meta = prepare_latents(config, workdir, tail_lengths)
    stats = latent_cache.latent_stats(meta)

    text = encoders.make_text_encoder(config.model.text)
    optimizer = train_lib.make_optimizer(config.optimizer, config.total_steps)
    source = latent_cache.LatentCacheSource(meta["dir"])
    latent_shape = (1, *source[0]["latent"].shape)
    rng = jax.random.key(config.seed)
    state, state_shardings = sharding.sharded_init(
        lambda r: dit_lib.create_state(
            dit_lib.init_params(model, text, latent_shape, r), optimizer
        ),
        mesh,
        sharding.DIT_RULES,
        rng,
    )

    shards = dict(process_index=jax.process_index(), process_count=jax.process_count())
    pack = config.packing
    if pack.enabled:  # NaViT rows of clips of any shape; else batches bucketed by shape
        plan = packing.PackPlan(
            packing.budgets(source.latent_shapes, model.patch_size, max(tail_lengths, default=0)),
            seq_len=pack.seq_len,
            max_clips=pack.max_clips,
            rows=config.batch_size,
            seed=config.seed,
        )
        dataset = packing.make_packed_dataset(
            source, plan, **shards, detailed_caption_prob=config.data.detailed_caption_prob
        )
    else:
        dataset = pipeline.make_dataset(
            source,
            global_batch_size=config.batch_size,
            seed=config.seed,
            **shards,
            detailed_caption_prob=config.data.detailed_caption_prob,
        )
    data_iterator = train_loop.iterate(dataset, config.data)
    abstract_state = checkpoints.abstract_like(state, state_shardings)
    restored, start_step = checkpoints.restore_latest(
        manager,
        abstract_state,
        data_iterator,
        config,
        check_keys=(),
        checks={
            "config.model": lambda c: dit_lib.model_fields(c["model"]),
            # The prior defines the flow being learned: a run continues on its own.
            "config.diffusion.frame_noise_correlation": (
                lambda c: dit_lib.noise_prior_correlation(c["diffusion"])
            ),
        },
    )
    if restored is not None:
        state = restored
        logging.info("resumed from step %d", start_step)
    elif config.get("init_from"):
        state = dit_lib.warm_start(
            state, model, config.init_from, state_shardings.params,
            frame_correlation=frame_correlation,
        )  # fmt: skip
        logging.info("started from the EMA params of %s", config.init_from)

    def jit_step(loss_fn, batch_shardings):
        return train_lib.jit_train_step(
            dit_lib.make_train_step(loss_fn, optimizer, config.ema_decay),
            state_shardings,
            batch_shardings,
            mesh,
            sharding.DIT_RULES,
        )

    if pack.enabled:
        loss_fn = dit_lib.make_packed_loss_fn(model, text, config.diffusion, stats)
        train_step = jit_step(loss_fn, dit_lib.packed_batch_shardings(mesh, text))
    else:
        # A batch appends tail frames only when its task group does (tasks.draw_batch_tasks).
        loss_fn = dit_lib.make_loss_fn(model, text, config.diffusion, stats)
        with_tails, without_tails = (
            jit_step(loss_fn, dit_lib.batch_shardings(mesh, text, tails=tails))
            for tails in (True, False)
        )

        def train_step(state, batch, rng):
            step = with_tails if "tail_latent" in batch else without_tails
            return step(state, batch, rng)

    prompts = probe_eval.probe_prompts(config.data, "heldout", config.num_sample_prompts)

    vae, vae_params, _ = vae_lib.load_vae(meta["vae_workdir"], meta["vae_step"])
    pipe = dit_lib.Pipeline(config, model, state.ema, text, vae, vae_params, stats, start_step)

    writer = MetricWriter(workdir)

    def samples(state, step):
        # Every process samples on one local device from a host copy of the EMA params (gathered
        # across hosts); process 0 writes the files.
        params = sharding.host_copy(state.ema)
        return {"sample_adherence": write_samples(workdir, step, pipe, params, prompts, config)}

    def process_rows(names, per_row):
        # Tasks are drawn for the global batch; this process takes its rows, as the loader does.
        rows = [names[i : i + per_row] for i in range(0, len(names), per_row)]
        return rows[jax.process_index() :: jax.process_count()]

    def bucketed_batch(example, step):
        latent = example["latent"]
        context = config.tasks.context
        names = tasks.draw_batch_tasks(
            weights, config.batch_size, seed=config.seed, step=step, context=context
        )
        tails = {k: example[f"tail{k}"] for k in tail_lengths if f"tail{k}" in example}
        conditioning = tasks.conditioning_batch(
            [row[0] for row in process_rows(names, 1)],
            latent.shape,
            tails,
            context,
            tasks.batch_tail(names, weights, latent.shape[1], context),
        )
        return {"latent": latent, **pipe.text_batch(example["caption"]), **conditioning}

    def packed_batch(rows, step):
        names = tasks.draw_tasks(
            weights, config.batch_size * pack.max_clips, seed=config.seed, step=step
        )
        batch = packing.pack_batch(
            rows,
            process_rows(names, pack.max_clips),
            patch=model.patch_size,
            seq_len=pack.seq_len,
            max_clips=pack.max_clips,
            context=config.tasks.context,
        )
        captions = batch.pop("captions")
        return {**batch, **pipe.packed_text_batch(captions, pack.max_clips)}

    def batches():
        make_batch = packed_batch if pack.enabled else bucketed_batch
        for step in itertools.count(start_step):
            yield sharding.host_to_global(make_batch(next(data_iterator), step), mesh)

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
    )
    return {"step": int(state.step), **last}


main = train_loop.command_main(train_and_evaluate)


if __name__ == "__main__":
    cli.run(main)
