"""A trained run as a bundle (`sora_jax.bundle`): what `sora-jax export` does, without flags."""

import pathlib

import numpy as np

from sora_jax import bundle, checkpoints, dit_lib, vae_lib
from sora_jax.metric_writers import METRICS_FILE


def export(checkpoint, out, step: int | None = None, dtype: str = "float32") -> dict:
    """Writes the bundle; returns its meta."""
    if bundle.is_bundle(checkpoint):
        raise checkpoints.CheckpointError(f"{checkpoint} is a bundle already")
    pipe = dit_lib.load_pipeline(checkpoint, step)
    ref = dit_lib.read_vae_ref(checkpoint)
    _, vae_params, vae_config = vae_lib.load_vae(ref["workdir"], ref["step"])
    meta = {
        "dit_config": pipe.config.to_dict(),
        "dit_step": pipe.step,
        "vae_config": vae_config.to_dict(),
        "vae_step": ref["step"],
        "latent_mean": ref["latent_mean"],
        "latent_std": ref["latent_std"],
    }
    trees = {bundle.DIT: pipe.params, bundle.VAE: vae_params}
    logs = {"dit": pathlib.Path(checkpoint), "vae": pathlib.Path(ref["workdir"])}
    files = {
        _bundled_log(name): log
        for name, source in logs.items()
        if (log := _metrics_log(source, name)).is_file()
    }
    return bundle.write(out, meta, trees, dtype=np.dtype(dtype), files=files)


def _bundled_log(name: str) -> str:
    """Where a bundle keeps the `name` ("dit" / "vae") run's metrics log."""
    return f"logs/{name}/{METRICS_FILE}"


def _metrics_log(source: pathlib.Path, name: str) -> pathlib.Path:
    """A run's metrics log: in its workdir, or carried in a bundle the run's model came from."""
    if bundle.is_bundle(source):
        return source / _bundled_log(name)
    return source / METRICS_FILE
