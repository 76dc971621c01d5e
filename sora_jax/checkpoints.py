"""Orbax checkpoints of a training run: `{state, data iterator, config}` saved together.

Restoring always passes an abstract target that carries shardings, so a run saved on one mesh
resumes on another (without one, Orbax hands optax states back as lists). The data iterator is a
Grain item, so a resumed run continues on exactly the next batch. A directory that holds
something else than our checkpoints, or a run of a different config, is refused loudly instead
of being trained over.
"""

import json
import pathlib

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

_ITEMS = ("state", "data", "config")


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be resumed from."""


def make_manager(
    workdir: str | pathlib.Path,
    *,
    max_to_keep: int = 3,
    async_save: bool = True,
    read_only: bool = False,
) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    if read_only and not directory.is_dir():
        raise CheckpointError(f"no checkpoints under {workdir} (expected {directory})")
    # A read-only manager reads for this process alone: no barriers with the other processes,
    # which may not be reading at all (process 0 loads the VAE to build the latent cache).
    me = jax.process_index()
    processes = (
        ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
        if read_only
        else ocp.options.MultiprocessingOptions()
    )
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
            multiprocessing_options=processes,
        ),
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "data": grain.checkpoint.CheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
        },
    )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state,
    data_iterator,
    config: ml_collections.ConfigDict,
    *,
    force: bool = False,
) -> bool:
    args = {
        "state": ocp.args.StandardSave(state),
        "config": ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
    }
    if data_iterator is not None:
        args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return manager.save(step, args=ocp.args.Composite(**args), force=force)


def restore_latest(
    manager: ocp.CheckpointManager,
    abstract_state,
    data_iterator,
    config: ml_collections.ConfigDict,
    *,
    check_keys=("model",),
    checks=None,
):
    """Restores the newest checkpoint into (state, step), or returns (None, 0) if there is none.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with shardings (from
    `jax.eval_shape` + the mesh); the data iterator is restored in place. The saved config's
    `check_keys` sections must equal the current config's: resuming a different model is refused.
    `checks` ({what: fn(config dict)}) adds derived values that must agree too.
    """
    step = manager.latest_step()
    if step is None:
        _refuse_foreign_contents(manager.directory)
        return None, 0
    saved = _restore_config(manager, step)
    current = json.loads(config.to_json_best_effort())
    derived = {f"config.{key}": (lambda c, k=key: c.get(k)) for key in check_keys}
    for what, fn in {**derived, **(checks or {})}.items():
        if fn(saved) != fn(current):
            raise CheckpointError(
                f"checkpoint at {manager.directory} was written with a different {what}; "
                "use a fresh --workdir or the original config"
            )
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    data_dir = manager.directory / str(step) / "data"
    if data_iterator is not None and data_dir.exists():
        if (data_dir / _iterator_file(jax.process_index(), jax.process_count())).exists():
            args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        else:
            _restore_position(data_dir, data_iterator)
    return _restore(manager, step, args)["state"], step


def _iterator_file(process_index: int, process_count: int) -> str:
    return f"process_{process_index}-of-{process_count}.json"  # Grain's naming


def _restore_position(data_dir: pathlib.Path, data_iterator) -> None:
    """Resumes a data iterator saved by a different number of processes.

    Our datasets are indexed by global step (each process takes its rows of global batch j),
    so every process saved the same position, and that position means the same global batch
    whatever the process count: process 0's state serves every process of the new topology.
    """
    saved = sorted(data_dir.glob("process_0-of-*.json"))
    if not saved:
        raise CheckpointError(f"{data_dir} holds no data-iterator state")
    state = json.loads(saved[0].read_text())
    if set(state) != {"next_index"}:
        raise CheckpointError(
            f"{saved[0]}: cannot move iterator state {sorted(state)} to "
            f"{jax.process_count()} processes (only a position can be)"
        )
    data_iterator.set_state(state)


def saved_config(workdir: str | pathlib.Path, step: int | None = None):
    """The config a run saved with its newest (or given) checkpoint."""
    manager = make_manager(workdir, read_only=True)
    return ml_collections.ConfigDict(_restore_config(manager, _step(manager, step)))


def latest_step(workdir: str | pathlib.Path) -> int:
    """The newest checkpointed step of a run; CheckpointError if there is none."""
    return _step(make_manager(workdir, read_only=True), None)


def restore_state(workdir: str | pathlib.Path, abstract_state, step: int | None = None):
    """Just the training state of a run (for sampling and evaluation)."""
    manager = make_manager(workdir, read_only=True)
    step = _step(manager, step)
    return _restore(manager, step, {"state": ocp.args.StandardRestore(abstract_state)})["state"]


def _step(manager: ocp.CheckpointManager, step: int | None) -> int:
    steps = manager.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoint in {manager.directory}")
    if step is None:
        return max(steps)
    if step not in steps:
        raise CheckpointError(
            f"no checkpoint for step {step} in {manager.directory} (have {sorted(steps)})"
        )
    return step


def _restore_config(manager: ocp.CheckpointManager, step: int) -> dict:
    items = {p.name for p in (manager.directory / str(step)).iterdir()}
    if not {"state", "config"} <= items:
        raise CheckpointError(
            f"{manager.directory / str(step)} is not a sora_jax checkpoint "
            f"(items found: {sorted(items)})"
        )
    return _restore(manager, step, {"config": ocp.args.JsonRestore()})["config"]


def _restore(manager: ocp.CheckpointManager, step: int, args: dict):
    try:
        return manager.restore(step, args=ocp.args.Composite(**args))
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        raise CheckpointError(f"cannot restore {manager.directory / str(step)}: {e}") from e


def _refuse_foreign_contents(directory: pathlib.Path) -> None:
    if directory.exists() and any(p for p in directory.iterdir() if not p.name.startswith(".")):
        found = sorted(p.name for p in directory.iterdir())[:5]
        raise CheckpointError(
            f"{directory} holds no readable checkpoint but is not empty "
            f"({found}); refusing to start a fresh run over it"
        )


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with shardings: the restore target for a state on the current mesh."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
