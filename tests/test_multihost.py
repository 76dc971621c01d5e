"""Two processes on localhost (CPU, gloo) train, checkpoint, and one process resumes elsewhere."""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from sora_jax import vae_lib
from sora_jax.metric_writers import read_metrics

_CONFIG = """
from sora_jax import config_lib

def get_config():
    config = config_lib.load_config(
        "{repo}/configs/vae_tiny.py:variant=micro/t4s8c16,batch=8,steps=4,fixed"
    )
    config.data.sizes = ((9, 32, 32),)
    config.log_every = 1
    config.checkpoint_every = 2
    config.sample_every = 2
    return config
"""


def _train_vae(config, workdir, *flags, devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        [sys.executable, "-m", "sora_jax.train_vae", f"--config={config}", f"--workdir={workdir}"]
        + list(flags),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_and_one_resumes_on_another_mesh(tmp_path):
    config = tmp_path / "config.py"
    config.write_text(_CONFIG.format(repo=os.getcwd()))
    two = tmp_path / "two"
    address = f"localhost:{_free_port()}"
    procs = [
        _train_vae(
            config,
            two,
            f"--coordinator_address={address}",
            "--num_processes=2",
            f"--process_id={i}",
            devices=4,
        )  # fmt: skip
        for i in range(2)
    ]
    for proc in procs:
        _finish(proc)
    # Process 0 alone wrote logs and samples: every step logged once.
    assert [m["step"] for m in read_metrics(two) if "loss" in m] == [1, 2, 3, 4]
    assert (two / "samples" / "recon_0000004.gif").stat().st_size > 0
    saved = sorted(p.name for p in (two / "checkpoints" / "4" / "data").glob("process_*"))
    assert saved == ["process_0-of-2.json", "process_1-of-2.json"]

    # One process with 8 devices and another mesh resumes from step 2 and trains to 4. Its
    # step-3 KL and losses (the restored params on the next batch; batches differ by 10-30%)
    # and its params match the two-process run's up to the FSDP reduction order.
    one = tmp_path / "one"
    shutil.copytree(two / "checkpoints", one / "checkpoints")
    shutil.rmtree(one / "checkpoints" / "4")
    _finish(_train_vae(config, one, "--config.mesh.data=2", "--config.mesh.fsdp=4", devices=8))
    logged = {run: {m["step"]: m for m in read_metrics(run) if "loss" in m} for run in (one, two)}
    assert list(logged[one]) == [3, 4]
    for step in (3, 4):
        np.testing.assert_allclose(logged[one][step]["kl"], logged[two][step]["kl"], rtol=1e-5)
        np.testing.assert_allclose(logged[one][step]["loss"], logged[two][step]["loss"], rtol=2e-3)
    _, params_two, _ = vae_lib.load_vae(two, 4)
    _, params_one, _ = vae_lib.load_vae(one, 4)
    # Adam turns reduction-order noise in near-zero gradients (zero-initialised convs) into at
    # most +-lr per step; lr warms up to ~6e-6 by step 4.
    for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two), strict=True):
        np.testing.assert_allclose(a, b, atol=3e-5)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--coordinator_address=localhost:1"], "needs --num_processes, --process_id too"),
        (["--coordinator_address=x:1", "--num_processes=2", "--process_id=2"], "outside 0..1"),
    ],
)
def test_incomplete_multihost_flags_are_refused(tmp_path, flags, message):
    proc = _train_vae("configs/vae_tiny.py", tmp_path / "w", *flags, devices=1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and message in err, err[-2000:]
    assert not (tmp_path / "w").exists()


_DIT_CONFIG = """
from sora_jax import config_lib

def get_config():
    config = config_lib.load_config(
        "{repo}/configs/dit_tiny.py:variant=micro/1x2x2,batch=8,steps=2,clips=40,vae={vae}"
    )
    config.data.sizes = ((9, 32, 32), (1, 32, 32), (5, 32, 48))
    config.packing.enabled = True
    config.packing.seq_len = 48
    config.packing.max_clips = 4
    config.log_every = 1
    config.checkpoint_every = 2
    config.sample_every = 100
    return config
"""


@pytest.mark.slow
def test_two_processes_train_the_dit_on_packed_rows(tmp_path):
    """Process 0 builds the latent cache, the other waits for it; packed rows agree on one
    caption length over processes; every step is logged once."""
    vae = tmp_path / "vae"
    vae_config = tmp_path / "vae_config.py"
    vae_config.write_text(_CONFIG.format(repo=os.getcwd()).replace("steps=4", "steps=1"))
    _finish(_train_vae(vae_config, vae, devices=1))
    config = tmp_path / "config.py"
    config.write_text(_DIT_CONFIG.format(repo=os.getcwd(), vae=vae))
    address = f"localhost:{_free_port()}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sora_jax.train",
                f"--config={config}",
                f"--workdir={tmp_path / 'dit'}",
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _finish(proc)
    logged = [m for m in read_metrics(tmp_path / "dit") if "loss" in m]
    assert [m["step"] for m in logged] == [1, 2]
    assert all(np.isfinite(m["loss"]) for m in logged)
    assert (tmp_path / "dit" / "latent_cache" / "meta.json").exists()
    assert (tmp_path / "dit" / "checkpoints" / "2").is_dir()
