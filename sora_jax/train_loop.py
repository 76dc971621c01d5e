"""The step loop the trainers share (`train`, `train-vae`, `train-captioner`), the set-up around
it (mesh, data iterator, saving) and their command-line `main`.

The loop dispatches step N before reading step N-1's metrics (the host never waits on the
device except to log), writes metrics every `log_every` steps, runs periodic work (samples),
saves every `checkpoint_every` steps and at the end, and turns SIGTERM (preemption) into
"finish this step, save, return".
"""

import pathlib
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import jax
import ml_collections
from absl import logging
from tqdm import tqdm

from sora_jax import checkpoints, cli, distributed, plots, sharding, train_flags
from sora_jax.metric_writers import MetricWriter, read_metrics

# (every N steps, fn(state, step) -> scalars to log); also run at the last step.
Periodic = tuple[int, Callable[[Any, int], dict]]


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """`config.mesh`, refusing a `config.batch_size` its data parallelism does not divide."""
    mesh = sharding.make_mesh(config.mesh)
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % data_parallel:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the "
            f"{data_parallel}-way data parallelism of mesh {dict(mesh.shape)}"
        )
    return mesh


def iterate(dataset: grain.MapDataset, data: ml_collections.ConfigDict) -> Iterator:
    """The dataset's checkpointable iterator, read with `data.num_threads` and prefetch."""
    options = grain.ReadOptions(
        num_threads=data.num_threads, prefetch_buffer_size=data.prefetch_buffer_size
    )
    return iter(dataset.to_iter_dataset(options))


def run_and_save(
    state,
    train_step: Callable,
    batches: Iterator,
    rng: jax.Array,
    *,
    config: ml_collections.ConfigDict,
    start_step: int,
    manager,
    data_iterator,
    writer: MetricWriter,
    **loop,
) -> tuple[Any, dict]:
    """`run` to `config.total_steps`, logging and saving (state, data position, config) to
    `manager` at the config's intervals; waits for the last save and closes `writer` however it
    ends. `loop`: `run`'s periodic, desc and postfix."""
    try:
        return run(
            state,
            train_step,
            batches,
            rng,
            start_step=start_step,
            total_steps=config.total_steps,
            log_every=config.log_every,
            checkpoint_every=config.checkpoint_every,
            save=lambda step, state: checkpoints.save(manager, step, state, data_iterator, config),
            writer=writer,
            **loop,
        )
    finally:
        manager.wait_until_finished()
        writer.close()


def run(
    state,
    train_step: Callable,
    batches: Iterator,
    rng: jax.Array,
    *,
    start_step: int,
    total_steps: int,
    log_every: int,
    checkpoint_every: int,
    save: Callable[[int, Any], None],
    writer: MetricWriter,
    periodic: Sequence[Periodic] = (),
    desc: str = "train",
    postfix: Sequence[str] = ("loss",),
) -> tuple[Any, dict]:
    """Trains from `start_step` to `total_steps` (or SIGTERM); returns (state, last metrics)."""
    stop = {"requested": False}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("requested", True))
    pending, last = None, {}
    progress = tqdm(
        total=total_steps,
        initial=start_step,
        desc=desc,
        unit="step",
        disable=jax.process_index() != 0,
    )

    # Seconds a step over each logging window, periodic work and checkpoint saves left out.
    window = {"start": time.perf_counter(), "steps": 0, "excluded": 0.0}

    def flush(pending):
        metrics = {k: float(v) for k, v in jax.device_get(pending[1]).items()}
        now = time.perf_counter()
        elapsed = now - window["start"] - window["excluded"]
        metrics["sec_per_step"] = elapsed / max(window["steps"], 1)
        window.update(start=now, steps=0, excluded=0.0)
        writer.write_scalars(pending[0], metrics)
        return metrics

    def excluded(fn, *args):
        # The steps still running before it are steps, not this work: wait for them first.
        jax.block_until_ready(args)
        start = time.perf_counter()
        out = fn(*args)
        window["excluded"] += time.perf_counter() - start
        return out

    try:
        for step in range(start_step, total_steps):
            state, metrics = train_step(state, next(batches), rng)
            if pending is not None:
                last = flush(pending)
                progress.set_postfix({k: f"{last[k]:.4g}" for k in postfix if k in last})
                pending = None
            done = step + 1
            window["steps"] += 1
            if done % log_every == 0:
                pending = (done, metrics)
            progress.update(1)
            for every, fn in periodic:
                if done % every == 0 or done == total_steps:
                    writer.write_scalars(done, excluded(fn, state, done))
            if done % checkpoint_every == 0 or done == total_steps or stop["requested"]:
                excluded(save, done, state)
            if stop["requested"]:
                logging.warning("SIGTERM: saved step %d, exiting", done)
                break
        if pending is not None:
            last = flush(pending)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        progress.close()
    return state, last


def command_main(train_and_evaluate: Callable[[Any, str], dict]) -> Callable[[list[str]], None]:
    """The `main(argv)` of a training command: --config and --workdir, errors as one line."""

    def main(argv):
        if len(argv) > 1:
            raise cli.UserError(f"unexpected arguments: {argv[1:]}")
        config, workdir = train_flags.CONFIG.value, train_flags.WORKDIR.value
        if config is None or not workdir:
            raise cli.UserError("--config and --workdir are required")
        with cli.user_errors(checkpoints.CheckpointError, ValueError, FileNotFoundError):
            distributed.initialize()
            result = train_and_evaluate(config, workdir)
        print(f"trained to step {result['step']}; checkpoints in {workdir}/checkpoints")
        if jax.process_index() == 0 and any("loss" in m for m in read_metrics(workdir)):
            print(f"curves in {plots.plot_curves([workdir], pathlib.Path(workdir) / 'curves.png')}")

    return main
