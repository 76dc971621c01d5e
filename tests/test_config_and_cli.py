"""Configs load locked with variants; the console script dispatches and reports bad input."""

import pathlib
import subprocess
import sys

import pytest

from sora_jax import config_lib
from sora_jax.data import sources

CONFIGS = sorted(pathlib.Path(__file__).parents[1].joinpath("configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_builds_its_data_source(path):
    config = config_lib.load_config(str(path))
    source = sources.make_source(config.data)
    clip = source[0]
    assert clip["video"].shape == tuple(config.data.sizes[source.bucket_of(0)]) + (3,)


def test_variants_and_locking():
    config = config_lib.load_config("configs/default.py:frames=9,height=48,width=80,batch=4")
    assert config.data.sizes == ((9, 48, 80),) and config.batch_size == 4
    mixed = config_lib.load_config("configs/default.py:sizes=mixed")
    assert len(mixed.data.sizes) > 1
    with pytest.raises(AttributeError):
        config.data.fsp = 2  # locked: a typo cannot add a field
    with pytest.raises(ValueError, match="unknown config argument"):
        config_lib.load_config("configs/default.py:frame=9")
    with pytest.raises(ValueError, match="expects int"):
        config_lib.load_config("configs/default.py:frames=many")


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", "from sora_jax.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_data_build_and_errors(tmp_path):
    ok = _cli(
        "data",
        "build",
        "--data_dir",
        str(tmp_path),
        "--num_train",
        "4",
        "--num_heldout",
        "2",
        "--frames",
        "1",
        "--height",
        "32",
        "--width",
        "32",
    )
    assert ok.returncode == 0, ok.stderr
    assert list(tmp_path.glob("shapes_world/*/1.0.0/*train.array_record*"))
    bad = _cli("data", "build", "--data_dir", str(tmp_path / "x"), "--frames", "8")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "sora-jax data build: error: frames must be 1 + 4k (1, 5, 9, 17, ...), got 8"
    ]
    assert not (tmp_path / "x").exists()
    caption = _cli("caption", "--videos", "x")
    assert caption.returncode == 2 and "--checkpoint is required" in caption.stderr
    unknown = _cli("fly")
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr


@pytest.mark.parametrize(
    "command, listed, not_listed",
    [
        ("generate", ["--checkpoint", "--cfg_interval", "--shift", "--c2pa_cert"], ["--config"]),
        ("train-captioner", ["--config", "--workdir", "--num_processes"], ["--out", "--steps"]),
    ],
)
def test_command_help_lists_its_own_and_its_shared_flags(command, listed, not_listed):
    shown = _cli(command, "--help")  # absl exits 1 after printing help
    names = {line.split(":")[0].strip().replace("[no]", "") for line in shown.stdout.splitlines()}
    assert set(listed) <= names and not set(not_listed) & names, shown.stdout


def test_module_help_lists_the_shared_flags_too():
    shown = subprocess.run(
        [sys.executable, "-m", "sora_jax.generate", "--help"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    names = {line.split(":")[0].strip() for line in shown.stdout.splitlines()}
    assert {"--checkpoint", "--shift", "--c2pa_cert"} <= names, shown.stdout
