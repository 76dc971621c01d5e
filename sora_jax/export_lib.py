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
        f"logs/{name}/{METRICS_FILE}": workdir / METRICS_FILE
        for name, workdir in logs.items()
        if (workdir / METRICS_FILE).is_file()
    }
    return bundle.write(out, meta, trees, dtype=np.dtype(dtype), files=files)
