"""A trained run as a bundle (`sora_jax.bundle`): what `sora-jax export` does, without flags."""

import pathlib

import jax
import numpy as np

from sora_jax import bundle, checkpoints, dit_lib, vae_lib
from sora_jax.metric_writers import METRICS_FILE


def export(
    checkpoint, out, step: int | None = None, dtype: str = "float32", vae: str | None = None
) -> dict:
    """Writes the bundle of a `train` run (DiT + its VAE) or of a `train-vae` run (the VAE
    alone); returns its meta. `vae` (a `train` run or a DiT bundle): a VAE run or bundle to
    ship instead of its own, refused unless its encoder is the DiT's, bit for bit at the
    precision the DiT's VAE is stored in (a decoder fine-tune, `train-vae
    --config.freeze_encoder`): the latents the DiT learned are then unchanged. A DiT bundle
    is written again with the same DiT, latent statistics and DiT log; `logs/vae` becomes the
    fine-tune's (none if it has none)."""
    if bundle.is_bundle(checkpoint):
        source_meta = bundle.read_meta(checkpoint)
        if vae is None or "dit_config" not in source_meta:
            raise checkpoints.CheckpointError(
                f"{checkpoint} is a bundle already; only a DiT bundle with --vae (a decoder "
                "fine-tune of its VAE) is exported again"
            )
        ref, stored = _bundled_vae_ref(checkpoint, source_meta), np.dtype(source_meta["dtype"])
    elif vae_lib.is_vae_run(checkpoint):
        if vae is not None:
            raise checkpoints.CheckpointError("a VAE to ship instead needs a `train` run")
        return _export_vae(checkpoint, out, step, dtype)
    else:
        ref, stored = dit_lib.read_vae_ref(checkpoint), np.dtype(np.float32)
    pipe = dit_lib.load_pipeline(checkpoint, step)
    vae_source, vae_step = ref["workdir"], ref["step"]
    vae_params, vae_config = pipe.vae_params, vae_lib.saved_config(vae_source, vae_step)
    if vae is not None:
        vae_params, vae_config, vae_step = _same_encoder(vae, vae_params, vae_config, ref, stored)
        vae_source = vae
    meta = {
        "dit_config": pipe.config.to_dict(),
        "dit_step": pipe.step,
        "vae_config": vae_config.to_dict(),
        "vae_step": vae_step,
        "latent_mean": ref["latent_mean"],
        "latent_std": ref["latent_std"],
    }
    trees = {bundle.DIT: pipe.params, bundle.VAE: vae_params}
    logs = {"dit": pathlib.Path(checkpoint), "vae": pathlib.Path(vae_source)}
    files = {
        _bundled_log(name): log
        for name, source in logs.items()
        if (log := _metrics_log(source, name)).is_file()
    }
    return bundle.write(out, meta, trees, dtype=np.dtype(dtype), files=files)


def _bundled_vae_ref(path, meta: dict) -> dict:
    """A DiT bundle's VAE in the form of a `train` run's VAE reference: the bundle itself,
    its VAE step and the latent statistics the DiT was trained with (from its `meta`)."""
    stats = {key: meta[key] for key in ("latent_mean", "latent_std")}
    return {"workdir": str(path), "step": meta["vae_step"], **stats}


def _same_encoder(source, trained_params, trained_config, ref: dict, stored: np.dtype):
    """(params, config, step) of the newest VAE in `source`, if its encoder is the one the DiT
    was trained on, compared at the precision it is `stored` in (a float16 DiT bundle holds
    its VAE rounded: a fine-tune of the run's float32 VAE rounds to the same encoder);
    CheckpointError otherwise."""
    step = vae_lib.latest_step(source)
    _, params, config = vae_lib.load_vae(source, step)
    same_fields = vae_lib.encoder_fields(config.model) == vae_lib.encoder_fields(
        trained_config.model
    )
    same = same_fields and all(
        np.array_equal(np.asarray(a, stored), np.asarray(b, stored))  # the same encoder tree
        for a, b in zip(
            jax.tree.leaves(params["encoder"]),
            jax.tree.leaves(trained_params["encoder"]),
            strict=True,
        )
    )
    if not same:
        raise checkpoints.CheckpointError(
            f"the encoder in {source} (step {step}) is not the one the DiT was trained on (step "
            f"{ref['step']} of {ref['workdir']}); only a decoder fine-tune of that VAE "
            "(train-vae --config.init_from=... --config.freeze_encoder) can replace it"
        )
    return params, config, step


def _export_vae(checkpoint, out, step: int | None, dtype: str) -> dict:
    """A VAE bundle: what `eval-vae`, `config.vae.workdir` and `config.init_from` read."""
    _, vae_params, vae_config = vae_lib.load_vae(checkpoint, step)
    vae_step = vae_lib.latest_step(checkpoint) if step is None else step
    meta = {"vae_config": vae_config.to_dict(), "vae_step": vae_step}
    log = _metrics_log(pathlib.Path(checkpoint), "vae")
    files = {_bundled_log("vae"): log} if log.is_file() else {}
    return bundle.write(out, meta, {bundle.VAE: vae_params}, dtype=np.dtype(dtype), files=files)


def _bundled_log(name: str) -> str:
    """Where a bundle keeps the `name` ("dit" / "vae") run's metrics log."""
    return f"logs/{name}/{METRICS_FILE}"


def _metrics_log(source: pathlib.Path, name: str) -> pathlib.Path:
    """A run's metrics log: in its workdir, or carried in a bundle the run's model came from."""
    if bundle.is_bundle(source):
        return source / _bundled_log(name)
    return source / METRICS_FILE
