"""`sora-jax train-captioner`: trains the video captioner on captioned clips (Sora's recaptioner).

    sora-jax train-captioner --config configs/captioner_tiny.py --workdir W

A fresh W first trains the captioner's byte-level BPE on the captions of the source's first
`tokenizer.corpus_clips` clips (W/tokenizer.json). Resumes from the newest checkpoint in W;
writes TensorBoard events + metrics.jsonl and a progress bar, and every `sample_every` steps
captions fixed held-out clips greedily, scores them (`caption_eval`: per-attribute and exact
accuracy, logged as caption_*) and writes W/samples/captions_<step>.jsonl. SIGTERM saves and
exits 0.
"""

import json
import pathlib

import jax
import ml_collections
from absl import logging

from sora_jax import (
    atomic,
    caption_eval,
    captioner_lib,
    checkpoints,
    cli,
    sharding,
    train_lib,
    train_loop,
)
from sora_jax.caption_tokenizer import CaptionTokenizer
from sora_jax.data import pipeline, sources
from sora_jax.metric_writers import MetricWriter


def load_or_train_tokenizer(
    config, workdir: pathlib.Path, source, *, one_token_colors: bool
) -> CaptionTokenizer:
    file = workdir / captioner_lib.TOKENIZER_FILE
    if file.is_file():
        return CaptionTokenizer.from_json(file.read_text(), config.model.max_length)
    num = min(config.tokenizer.corpus_clips, len(source))
    texts = [
        pipeline.transform(source[i], i, 0, config.seed, config.data.detailed_caption_prob)[
            "caption"
        ]
        for i in range(num)
    ]
    tokenizer = CaptionTokenizer.train(texts, config.tokenizer.vocab_size, config.model.max_length)
    if one_token_colors:  # checked before the workdir keeps a tokenizer that cannot swap colours
        try:
            captioner_lib.color_token_ids(tokenizer)
        except ValueError as e:
            raise ValueError(
                f"{e}: raise tokenizer.vocab_size (now {config.tokenizer.vocab_size}) or set "
                "input_color_swap=0"
            ) from None
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(file, tokenizer.to_json())
    logging.info("trained a %d-token BPE on %d captions", tokenizer.vocab_size, num)
    return tokenizer


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    workdir = pathlib.Path(workdir)
    if config.get("kind") != captioner_lib.KIND:
        raise ValueError("train-captioner needs a captioner config (configs/captioner_tiny.py)")
    input_color_swap = config.get("input_color_swap", 0.0)
    if not 0.0 <= input_color_swap <= 1.0:
        raise ValueError(f"input_color_swap is a rate in [0, 1], got {input_color_swap}")
    mesh = train_loop.make_mesh(config)
    source = sources.make_source(config.data)
    tokenizer = load_or_train_tokenizer(
        config, workdir, source, one_token_colors=bool(input_color_swap)
    )
    model = captioner_lib.make_model(config.model, tokenizer.vocab_size)
    rng = jax.random.key(config.seed)
    _, init, optimizer = captioner_lib.abstract_train_state(config, model)
    state, state_shardings = sharding.sharded_init(init, mesh, (), rng)

    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        detailed_caption_prob=config.data.detailed_caption_prob,
    )
    data_iterator = train_loop.iterate(dataset, config.data)
    manager = checkpoints.make_manager(workdir, max_to_keep=config.keep_checkpoints)
    restored, start_step = checkpoints.restore_latest(
        manager,
        checkpoints.abstract_like(state, state_shardings),
        data_iterator,
        config,
        check_keys=("tokenizer",),
        checks={"config.model": lambda c: captioner_lib.model_fields(c["model"])},
    )
    if restored is not None:
        state = restored
        logging.info("resumed from step %d", start_step)

    color_ids = captioner_lib.color_token_ids(tokenizer) if input_color_swap else None
    logging.info("decoder input colour swap rate: %s", input_color_swap)
    loss_fn = captioner_lib.make_loss_fn(model, color_ids, input_color_swap)
    train_step = train_lib.jit_train_step(
        train_lib.make_train_step(loss_fn, optimizer),
        state_shardings,
        {"video": sharding.batch_sharding(mesh, 5), "ids": sharding.batch_sharding(mesh, 2)},
        mesh,
        (),
    )
    writer = MetricWriter(workdir)
    videos, references = caption_eval.clips(
        config.sample_clips, config.data.world_seed, config.data.sizes[0]
    )

    def samples(state, step):
        params = sharding.host_copy(state.params)
        captioner = captioner_lib.TrainedCaptioner(model, params, tokenizer, config, step)
        summary, rows = caption_eval.evaluate(
            captioner.caption, videos, references, batch_size=config.sample_clips
        )
        if jax.process_index() == 0:
            out = workdir / "samples" / f"captions_{step:07d}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
        return {
            "caption_exact": summary["exact"],
            **{f"caption_{a}": v for a, v in summary["attributes"].items()},
        }

    def batches():
        while True:
            batch = next(data_iterator)
            ids = tokenizer.encode([str(c) for c in batch["caption"]])
            yield sharding.host_to_global({"video": batch["video"], "ids": ids}, mesh)

    with sharding.mesh_context(mesh, ()):
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
            desc="train-captioner",
            postfix=("loss", "token_accuracy"),
        )
    return {"step": int(state.step), **last}


main = train_loop.command_main(train_and_evaluate)


if __name__ == "__main__":
    cli.run(main)
