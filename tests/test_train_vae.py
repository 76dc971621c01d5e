"""train-vae end to end on a micro VAE: checkpoints, resume, logs, samples, eval-vae, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sora_jax import checkpoints, config_lib, eval_vae, train_vae, vae_lib
from sora_jax.metric_writers import read_metrics


def _config(steps):
    config = config_lib.load_config(
        f"configs/vae_tiny.py:variant=micro/t4s8c16,batch=8,steps={steps},fixed"
    )
    config.data.sizes = ((9, 32, 32),)
    config.log_every = 1
    config.checkpoint_every = 2
    config.sample_every = 2
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vae_run")
    first = train_vae.train_and_evaluate(_config(2), str(workdir))
    resumed = train_vae.train_and_evaluate(_config(4), str(workdir))
    return workdir, first, resumed


def test_resume_continues_from_the_checkpoint(run):
    workdir, first, resumed = run
    assert first["step"] == 2 and resumed["step"] == 4
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    steps = [m["step"] for m in read_metrics(workdir) if "loss" in m]
    assert steps == [1, 2, 3, 4]  # the resumed run logs steps 3, 4 and nothing twice
    assert all(
        np.isfinite(m["loss"]) and "lpips" in m for m in read_metrics(workdir) if "loss" in m
    )
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "samples" / "recon_0000004.gif").stat().st_size > 0


def test_data_iterator_is_saved_with_the_state(run):
    workdir, _, _ = run
    manager = checkpoints.make_manager(workdir, read_only=True)
    state = json.loads((manager.directory / "4" / "data" / "process_0-of-1.json").read_text())
    assert state["next_index"] == 4


def test_load_vae_and_eval(run, tmp_path):
    workdir, _, _ = run
    model, params, config = vae_lib.load_vae(workdir)
    assert config.model.variant == "micro/t4s8c16"
    videos = [
        ("a", np.full((9, 32, 40, 3), 128, np.uint8)),
        ("b", np.zeros((10, 33, 40, 3), np.uint8)),
    ]
    report = eval_vae.evaluate(str(workdir), videos, tmp_path, num_samples=1)
    assert report["num_videos"] == 2 and report["compression_ratio"] == 48.0
    assert report["videos"][1]["shape"] == [9, 32, 40, 3]  # trimmed to 1 + 4k, cropped to 8s
    assert (tmp_path / "report.json").exists() and (tmp_path / "recon_000.gif").exists()
    assert all(0 <= v["ssim"] <= 1 and v["lpips"] >= 0 for v in report["videos"])


def test_foreign_or_mismatched_checkpoints_are_refused(run, tmp_path):
    workdir, _, _ = run
    other = _config(6)
    other.model.variant = "micro/t4s8c8"
    with pytest.raises(checkpoints.CheckpointError, match="different config.model"):
        train_vae.train_and_evaluate(other, str(workdir))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="refusing"):
        train_vae.train_and_evaluate(_config(2), str(tmp_path))
    with pytest.raises(checkpoints.CheckpointError):
        vae_lib.load_vae(tmp_path / "missing")


def test_cli_errors(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-c", "from sora_jax.cli import main; main()", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    missing = cli(
        "eval-vae",
        "--checkpoint",
        str(tmp_path / "none"),
        "--dataset",
        "shapes_world",
        "--out_dir",
        str(tmp_path / "out"),
    )
    assert missing.returncode == 2 and "no checkpoints under" in missing.stderr
    both = cli(
        "eval-vae",
        "--checkpoint",
        "x",
        "--dataset",
        "lavfi",
        "--videos",
        "y",
        "--out_dir",
        str(tmp_path / "out"),
    )
    assert both.returncode == 2 and "exactly one of --videos or --dataset" in both.stderr
    assert not (tmp_path / "out").exists()
