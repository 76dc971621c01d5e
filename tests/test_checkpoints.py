"""Checkpoints are topology-free (restore onto any mesh) and survive a kill mid-save."""

import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest
from test_sharding import _init_state, _train

from sora_jax import checkpoints, sharding

CONFIG = ml_collections.ConfigDict(dict(model=dict(name="mlp")))


@pytest.fixture(scope="module")
def saved_on_eight_devices(tmp_path_factory):
    """Three train steps with FSDP x tensor x data over all 8 devices, checkpointed."""
    workdir = tmp_path_factory.mktemp("eight")
    state, _ = _train(sharding.make_mesh(dict(data=2, fsdp=2, tensor=2, sequence=1)))
    manager = checkpoints.make_manager(workdir)
    checkpoints.save(manager, 3, state, None, CONFIG)
    manager.wait_until_finished()
    return workdir, jax.device_get(state)


@pytest.mark.parametrize("degrees", [dict(data=2, fsdp=4), dict(tensor=4, data=2), {}])
def test_restore_onto_another_mesh(saved_on_eight_devices, degrees):
    workdir, saved = saved_on_eight_devices
    devices = jax.devices() if degrees else jax.devices()[:1]
    mesh = sharding.make_mesh(degrees, devices=devices)
    with sharding.mesh_context(mesh, sharding.DIT_RULES):
        abstract = jax.eval_shape(_init_state, jax.random.key(0))
    shardings = sharding.logical_shardings(abstract, mesh, sharding.DIT_RULES)
    target = checkpoints.abstract_like(jax.eval_shape(lambda: saved), shardings)
    state, step = checkpoints.restore_latest(
        checkpoints.make_manager(workdir, read_only=True), target, None, CONFIG
    )
    assert step == 3
    # The optimizer state keeps its types (optax namedtuples, not lists) and every value.
    assert jax.tree.structure(state) == jax.tree.structure(saved)
    for got, want, sharding_ in zip(
        jax.tree.leaves(state), jax.tree.leaves(saved), jax.tree.leaves(shardings), strict=True
    ):
        assert got.sharding == sharding_
        np.testing.assert_array_equal(jax.device_get(got), want)


_KILLED_MID_SAVE = """
import os, signal, sys
import ml_collections, numpy as np
from sora_jax import checkpoints

config = ml_collections.ConfigDict(dict(model=dict(name="big")))
manager = checkpoints.make_manager(sys.argv[1])
state = {"w": np.full((4096, 4096), 1.0, np.float32), "b": np.ones(8, np.float32)}
checkpoints.save(manager, 1, state, None, config)
manager.wait_until_finished()
state = {"w": np.full((4096, 4096), 2.0, np.float32), "b": np.ones(8, np.float32)}
checkpoints.save(manager, 2, state, None, config)  # async: returns while it writes
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_during_an_async_save_keeps_the_previous_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_MID_SAVE), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr
    # Killed mid-write: step 2 exists only as Orbax's unfinished temporary directory.
    left = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert "1" in left and "2" not in left and any(n.startswith("2.orbax") for n in left), left
    config = ml_collections.ConfigDict(dict(model=dict(name="big")))
    target = {
        "w": jax.ShapeDtypeStruct((4096, 4096), np.float32),
        "b": jax.ShapeDtypeStruct((8,), np.float32),
    }
    state, step = checkpoints.restore_latest(
        checkpoints.make_manager(tmp_path, read_only=True), target, None, config
    )
    assert step == 1 and float(state["w"][0, 0]) == 1.0
    # The run resumes and saves its next step over whatever the kill left behind.
    manager = checkpoints.make_manager(tmp_path)
    checkpoints.save(manager, 2, {"w": state["w"] + 1, "b": state["b"]}, None, config)
    manager.wait_until_finished()
    state, step = checkpoints.restore_latest(manager, target, None, config)
    assert step == 2 and float(state["w"][0, 0]) == 2.0
