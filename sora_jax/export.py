"""`sora-jax export`: a trained text-to-video run as a bundle, the form a model ships in.

    sora-jax export --checkpoint workdirs/dit_tiny --bundle checkpoints/tiny [--dtype float16]

Writes the DiT's EMA params, the VAE the run was trained on and the latent statistics it was
trained with (`sora_jax.bundle`): everything `generate`, `eval` and `demo` need, nothing they do
not (no optimizer moments, no data position), plus both runs' metrics logs for their curves. A
`MODEL_CARD.md` already in `--bundle` is kept. A bundle also warm-starts training
(`--config.init_from`).

    sora-jax export --checkpoint workdirs/vae_tiny --bundle checkpoints/vae_tiny --dtype float16

    sora-jax export --checkpoint workdirs/dit_tiny --bundle checkpoints/tiny \
        --vae workdirs/vae_dec

`--vae` ships another VAE with the DiT: a decoder fine-tune of the run's own (`train-vae
--config.init_from=... --config.freeze_encoder`), whose encoder must be the run's bit for bit
(for a float16 DiT bundle, after rounding to float16).
With `--vae`, `--checkpoint` may be a DiT bundle too (its run's workdir may be long gone): the
same DiT, latent statistics and DiT log with the new decoder and its log, in place when
`--bundle` is the same.

    sora-jax export --checkpoint checkpoints/tiny --bundle checkpoints/tiny --dtype float16 \
        --vae workdirs/vae_mse10

A `train-vae` workdir exports as a VAE bundle: its params, config and training log, which
`eval-vae --checkpoint`, a DiT run's `config.vae.workdir` and a VAE run's `config.init_from`
read like the workdir.

    sora-jax export --checkpoint workdirs/captioner_tiny --bundle checkpoints/captioner

A `train-captioner` workdir exports as a captioner bundle instead: its params, tokenizer and
config (`captioner_lib.export`), what `sora-jax caption --checkpoint` reads.
"""

import pathlib

from absl import flags

from sora_jax import bundle, captioner_lib, checkpoints, cli, export_lib

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "A `sora-jax train`, `train-vae` or `train-captioner` workdir (with --vae: or a DiT bundle).",
)
_BUNDLE = flags.DEFINE_string("bundle", None, "The bundle directory to write (replaced if one).")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint step; default: the newest.")
_VAE = flags.DEFINE_string(
    "vae",
    None,
    "A `train` run or DiT bundle only: a VAE run or bundle to ship instead of its own; refused "
    "unless its encoder is the DiT's bit for bit at the stored precision "
    "(`train-vae --config.freeze_encoder`).",
)
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", ["float32", "float16"], "Storage dtype (loaded back as float32)."
)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value or not _BUNDLE.value:
        raise cli.UserError("--checkpoint and --bundle are required")
    with cli.user_errors(checkpoints.CheckpointError, FileNotFoundError):
        if _is_captioner(_CHECKPOINT.value):
            if _VAE.value:
                raise cli.UserError("--vae: a captioner bundle holds no VAE")
            meta = captioner_lib.export(_CHECKPOINT.value, _BUNDLE.value, _STEP.value, _DTYPE.value)
            what = f"captioner step {meta['step']}"
        else:
            meta = export_lib.export(
                _CHECKPOINT.value, _BUNDLE.value, _STEP.value, _DTYPE.value, _VAE.value
            )
            what = f"VAE step {meta['vae_step']}"
            if "dit_step" in meta:
                what = f"DiT step {meta['dit_step']} + {what}"
    out = pathlib.Path(_BUNDLE.value)
    for name, count in meta["params"].items():
        size = (out / f"{name}.safetensors").stat().st_size / 2**20
        print(f"{name}: {count:,} params, {size:.2f} MiB ({meta['dtype']})")
    print(f"bundle of {what} in {out}")


def _is_captioner(checkpoint: str) -> bool:
    if bundle.is_bundle(checkpoint):
        return False  # export_lib refuses bundles with the reason
    return checkpoints.saved_config(checkpoint).get("kind") == captioner_lib.KIND


if __name__ == "__main__":
    cli.run(main)
