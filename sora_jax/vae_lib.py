"""The video autoencoder's recipe, shared by `train-vae`, `eval-vae` and the DiT trainer:
model from config, parameters, loss (L1 + MSE + LPIPS + KL, optionally adversarial),
reconstruction, and loading a trained VAE from a `train-vae` workdir or a bundle."""

import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import linen as nn

from sora_jax import bundle, checkpoints, config_lib, sharding, train_lib
from sora_jax.models import vae as vae_model
from sora_jax.models.discriminator import PatchDiscriminator

# ------------------------------------------------------------------------------------------------
# Model, optimizer, loss.
# ------------------------------------------------------------------------------------------------
# A VAE config's `model` fields that came after the first runs, with the values those runs used.
_LATER_MODEL_FIELDS = dict(norm="rms", logvar_init=0.0, pixel_head=0)


def model_fields(model_config) -> dict:
    """Every field of a VAE config's `model` (ConfigDict or saved dict), those of runs saved
    before a field existed at the value they used: what `make_model` builds, and what resuming
    and `export --vae` compare (`config_lib.with_later_fields`)."""
    return config_lib.with_later_fields(model_config, _LATER_MODEL_FIELDS)


def encoder_fields(model_config) -> dict:
    """`model_fields` less those of the decoder alone: equal for a VAE and its decoder
    fine-tunes (`export --vae`)."""
    fields = model_fields(model_config)
    del fields["pixel_head"]
    return fields


def make_model(
    model_config: ml_collections.ConfigDict, conv_impl: str = "matmul"
) -> vae_model.VideoVAE:
    """`conv_impl` "matmul" trains faster; "xla" (what `load_vae` uses) needs less memory."""
    fields = model_fields(model_config)  # an unknown field is a TypeError here, not ignored
    return vae_model.vae_from_variant(
        fields.pop("variant"),
        **fields | dict(dtype=jnp.dtype(fields["dtype"]), conv_impl=conv_impl),
    )


def adversarial_weight(loss_config) -> float:
    """The adversarial loss weight of a config's `loss` (ConfigDict or saved dict); 0 = off."""
    return loss_config.get("adversarial", 0.0)  # configs saved before the option have none


def init_params(model: vae_model.VideoVAE, loss_config, rng, video):
    """What `train-vae` trains: the VAE's params, or {"vae", "disc"} with a discriminator when
    the adversarial loss is on (off, the tree and its initial values are the VAE's alone)."""
    params = model.init(rng, video)["params"]
    if adversarial_weight(loss_config) <= 0:
        return params
    disc = PatchDiscriminator(conv_impl=model.conv_impl)
    return {"vae": params, "disc": disc.init(jax.random.fold_in(rng, 1), video)["params"]}


def autoencoder_params(params):
    """The VAE's part of what `init_params` made."""
    return params["vae"] if "disc" in params else params


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """A `train-vae` run's optimizer (`train_lib.make_optimizer`), with the encoder's updates
    zeroed when `config.freeze_encoder`: decoder fine-tuning keeps the latent space (and every
    DiT trained on it) exactly as it was. A zeroing mask after the optimizer rather than
    `optax.multi_transform`, whose masked states the sharding rules cannot map; the price is
    Adam moments kept (at zero) for the encoder."""
    optimizer = train_lib.make_optimizer(config.optimizer, config.total_steps)
    if not encoder_frozen(config):
        return optimizer

    def in_encoder(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: _in_encoder(path), params)

    return optax.chain(optimizer, optax.masked(optax.set_to_zero(), in_encoder))


def encoder_frozen(config) -> bool:
    """`config.freeze_encoder` (ConfigDict or saved dict); runs saved before it trained all."""
    return config.get("freeze_encoder", False)


def _in_encoder(path) -> bool:
    """Whether a params path is the encoder's: in the VAE's tree or under {"vae", "disc"}."""
    keys = [getattr(k, "key", None) for k in path]
    return keys[:1] == ["encoder"] or keys[:2] == ["vae", "encoder"]


def to_unit_range(video_uint8):
    return video_uint8.astype(jnp.float32) / 127.5 - 1.0


def random_crop(video_BxTxHxWx3, rng, crop: tuple[int, int, int]):
    """An independent random (T, H, W) window per clip (capped at the clip's own size).

    The autoencoder is fully convolutional and causal, so it learns the same from windows as
    from whole clips, at a fraction of the compute; it is evaluated on whole clips.
    """
    shape = video_BxTxHxWx3.shape
    size = tuple(min(c, s) for c, s in zip(crop, shape[1:4], strict=True)) + (3,)
    limits = jnp.asarray([s - c for s, c in zip(shape[1:4], size, strict=False)])
    starts = jax.random.randint(rng, (shape[0], 3), 0, limits + 1)

    def one(clip, start):
        return jax.lax.dynamic_slice(clip, (*start, 0), size)

    return jax.vmap(one)(video_BxTxHxWx3, starts)


def make_loss_fn(
    model: vae_model.VideoVAE, loss_config: ml_collections.ConfigDict, freeze_encoder=False
):
    """`loss_fn(params, batch, rng, step) -> (loss, metrics)` for `train_lib.make_train_step`.

    `freeze_encoder` stops gradients at the encoder's params (see `make_optimizer`), so its
    backward pass is never computed."""
    lpips = None
    if loss_config.lpips > 0:
        from sora_jax.metrics.lpips import LPIPS, load_params

        lpips = functools.partial(LPIPS(net="alex").apply, {"params": load_params("alex")})

    def loss_fn(params, batch, rng, step):
        sample_rng, frame_rng, crop_rng = jax.random.split(rng, 3)
        video = to_unit_range(random_crop(batch["video"], crop_rng, loss_config.crop))
        vae_params = autoencoder_params(params)
        if freeze_encoder:
            vae_params = {**vae_params, "encoder": jax.lax.stop_gradient(vae_params["encoder"])}
        recon, mean, logvar = model.apply({"params": vae_params}, video, sample_rng)
        l1 = jnp.mean(jnp.abs(recon - video))
        mse = jnp.mean(jnp.square(recon - video))
        kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1.0 - logvar)
        loss = loss_config.l1 * l1 + loss_config.mse * mse + loss_config.kl * kl
        metrics = {
            "l1": l1,
            "mse": mse,
            "kl": kl,
            "psnr": 10 * jnp.log10(4.0 / jnp.mean((jnp.clip(recon, -1, 1) - video) ** 2)),
        }
        if loss_config.lpips > 0:
            # LPIPS on a few random frames per clip keeps the perceptual term cheap.
            frames = video.shape[1]
            idx = jax.random.randint(frame_rng, (loss_config.lpips_frames,), 0, frames)
            flat = lambda v: v[:, idx].reshape(-1, *v.shape[2:])  # noqa: E731
            perceptual = jnp.mean(lpips(flat(recon), flat(video)))
            loss = loss + loss_config.lpips * perceptual
            metrics["lpips"] = perceptual
        if "disc" in params:
            loss, metrics = _add_adversarial(loss, metrics, params["disc"], video, recon, step)
        return loss, metrics

    def _add_adversarial(loss, metrics, disc_params, video, recon, step):
        """Hinge GAN terms from `adversarial_start` on. The generator term sees the discriminator
        frozen and the discriminator term sees the reconstruction frozen, so one gradient of
        the sum trains each part on its own objective."""
        judge = PatchDiscriminator(conv_impl=model.conv_impl).apply
        real = judge({"params": disc_params}, video)
        fake = judge({"params": disc_params}, jax.lax.stop_gradient(recon))
        disc_loss = jnp.mean(nn.relu(1.0 - real)) + jnp.mean(nn.relu(1.0 + fake))
        gen_loss = -jnp.mean(judge({"params": jax.lax.stop_gradient(disc_params)}, recon))
        on = jnp.asarray(step >= loss_config.adversarial_start, jnp.float32)
        loss = loss + on * (adversarial_weight(loss_config) * gen_loss + disc_loss)
        return loss, {**metrics, "adv_generator": gen_loss, "adv_discriminator": disc_loss}

    return loss_fn


def to_uint8(video):
    return jnp.round((jnp.clip(video, -1, 1) + 1) * 127.5).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnums=0)
def encode(model, params, video_uint8):
    """uint8 video [B, T, H, W, 3] -> the posterior mean latent [B, t, h, w, c]."""
    mean, _ = model.apply({"params": params}, to_unit_range(video_uint8), method=model.encode)
    return mean


@functools.partial(jax.jit, static_argnums=0)
def decode(model, params, latent):
    """latent [B, t, h, w, c] -> uint8 video [B, T, H, W, 3]."""
    return to_uint8(model.apply({"params": params}, latent, method=model.decode))


def reconstruct(model, params, video_uint8):
    """Encode to the posterior mean and decode: uint8 in, uint8 out."""
    return decode(model, params, encode(model, params, video_uint8))


def load_vae(workdir: str | pathlib.Path, step: int | None = None):
    """(model, params, config) of the newest (or given) checkpoint of a `train-vae` run, or of
    the VAE in a bundle (`sora_jax.bundle`).

    The model is rebuilt from the config saved with the checkpoint, so a VAE is named by its
    workdir alone. Raises `checkpoints.CheckpointError` for a missing or foreign directory.
    """
    if bundle.is_bundle(workdir):
        return _load_bundled(workdir, step)
    model, state, config = load_state(workdir, step)
    return model, autoencoder_params(state.params), config


def is_vae_run(workdir: str | pathlib.Path) -> bool:
    """Whether a workdir holds a `train-vae` run (its model is a VAE variant, 'tiny/t4s4c16');
    CheckpointError if it holds no run."""
    variant = checkpoints.saved_config(workdir).get("model", {}).get("variant", "")
    return re.fullmatch(vae_model.VARIANT_PATTERN, variant) is not None


def latest_step(workdir: str | pathlib.Path) -> int:
    """The newest step of a `train-vae` run, or the step a bundle's VAE was trained to."""
    if bundle.is_bundle(workdir):
        return _vae_meta(workdir)["vae_step"]
    return checkpoints.latest_step(workdir)


def warm_start(params, source: str | pathlib.Path, shardings):
    """`params` (what `init_params` made) with the autoencoder's part taken from a `train-vae`
    run or a bundle, placed with `shardings`: fine-tuning, or continuing a shipped VAE with a
    fresh optimizer (`config.init_from`)."""
    _, loaded, _ = load_vae(source)
    loaded = with_new_pixel_head(autoencoder_params(params), loaded)
    check_same_shapes(autoencoder_params(params), loaded, source)
    return jax.device_put({**params, "vae": loaded} if "disc" in params else loaded, shardings)


def with_new_pixel_head(want, loaded):
    """`loaded` with `want`'s freshly initialised decoder pixel head added when `want` has one
    and `loaded` does not. The head's last convolution starts at zero, so the warm-started VAE
    decodes exactly as the source did (`models.vae.PixelHead`)."""
    decoder = loaded.get("decoder", {})
    if "pixel_head" not in want.get("decoder", {}) or "pixel_head" in decoder:
        return loaded
    logging.info("The decoder's pixel head is new: it starts at zero, the rest is loaded.")
    return {**loaded, "decoder": {**decoder, "pixel_head": want["decoder"]["pixel_head"]}}


def check_same_shapes(want, got, source) -> None:
    """CheckpointError unless two param trees have the same structure and shapes."""
    same = jax.tree.structure(want) == jax.tree.structure(got) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True)
    )
    if not same:
        raise checkpoints.CheckpointError(
            f"the params in {source} do not fit this config's model (different structure or shapes)"
        )


def load_state(workdir: str | pathlib.Path, step: int | None = None):
    """(model, whole train state, config) of a `train-vae` checkpoint, on one device."""
    config = checkpoints.saved_config(workdir, step)
    model = make_model(config.model, conv_impl="xla")
    optimizer = make_optimizer(config)
    mesh = sharding.make_mesh({"data": -1}, devices=jax.local_devices()[:1])
    abstract = jax.eval_shape(
        lambda r: train_lib.create_train_state(_init_like(model, config, r), optimizer),
        jax.random.key(0),
    )
    shardings = sharding.logical_shardings(abstract, mesh, sharding.VAE_RULES)
    target = checkpoints.abstract_like(nn.unbox(abstract), shardings)
    return model, checkpoints.restore_state(workdir, target, step), config


def _vae_meta(path) -> dict:
    """A bundle's meta; CheckpointError if it holds no VAE (a captioner bundle)."""
    meta = bundle.read_meta(path)
    if "vae_config" not in meta:
        raise checkpoints.CheckpointError(f"{path} holds no VAE")
    return meta


def saved_config(workdir: str | pathlib.Path, step: int | None = None):
    """The config of the newest (or given) checkpoint of a `train-vae` run, or of a bundle's VAE,
    without reading any params."""
    if not bundle.is_bundle(workdir):
        return checkpoints.saved_config(workdir, step)
    meta = _vae_meta(workdir)
    if step is not None and step != meta["vae_step"]:
        raise checkpoints.CheckpointError(
            f"{workdir} holds the VAE of step {meta['vae_step']}, not step {step}"
        )
    return ml_collections.ConfigDict(meta["vae_config"])


def _load_bundled(path, step: int | None):
    config = saved_config(path, step)
    model = make_model(config.model, conv_impl="xla")
    abstract = jax.eval_shape(lambda r: _init_like(model, config, r), jax.random.key(0))
    params = bundle.read_params(path, bundle.VAE, autoencoder_params(nn.unbox(abstract)))
    return model, jax.device_put(params, jax.local_devices()[0]), config


def _init_like(model, config, rng):
    """`init_params` on a dummy clip of the run's first training size (under `eval_shape`)."""
    frames, height, width = config.data.sizes[0]
    dummy = jnp.zeros((1, frames, height, width, 3), jnp.float32)
    return init_params(model, config.loss, rng, dummy)
