"""Tiny causal video VAE (4x time, 4x space, 16 latent channels: 12x) for a 2-core CPU.

    sora-jax train-vae --config configs/vae_tiny.py --workdir workdirs/vae_tiny

Trains on Shapes World rendered on the fly, mixing 64x64 / 48x80 / 80x48 clips and single
images (joint image + video training). Variants: `configs/vae_tiny.py:batch=4,steps=100`.

4x rather than the default 8x space: a small Shapes World object is ~11 pixels, one or two
latent pixels at 8x. Measured on held-out clips after 500 steps (sample PSNR): 25.5 dB at 4x
against 22.1 at 8x (8x reached 25.0 only at step 1000); the README has the full comparison.
"""

import ml_collections

from sora_jax import config_lib


def get_config(arg=None) -> ml_collections.ConfigDict:
    arg = config_lib.parse_arg(
        arg, batch=8, steps=30_000, variant="tiny/t4s4c16", lpips=0.1, fixed=False
    )
    data_arg = f"batch={arg.batch},sizes={'fixed' if arg.fixed else 'mixed'}"
    config = config_lib.load_sibling(__file__, "default").get_config(data_arg)
    config.data.detailed_caption_prob = 0.0  # the autoencoder never reads captions

    config.model = ml_collections.ConfigDict()
    config.model.variant = arg.variant  # width/t{temporal}s{spatial}c{latent channels}
    config.model.dtype = "float32"
    # No normalisation + SkipInit residual blocks, and a posterior that starts nearly noiseless:
    # on a fixed batch of 8 clips this fits 20.4 dB in 100 steps where the first recipe
    # (per-pixel RMS norm, unit initial variance, L1) reached 13.4 (README, Video autoencoder).
    config.model.norm = "none"
    config.model.logvar_init = -6.0
    # Channels of the decoder's full-resolution head (`models.vae.PixelHead`); 0 = none. It
    # starts at zero, so `--config.model.pixel_head=32` with `init_from` and `freeze_encoder`
    # adds one to a trained VAE without moving its latent space or its output at step 0.
    config.model.pixel_head = 0

    config.loss = ml_collections.ConfigDict()
    config.loss.l1 = 1.0
    # Pulls hardest on the large errors at small objects' edges. 10 trained the shipped decoder
    # (with the encoder frozen: 32.04 dB against 31.59 for 1 after 3,000 steps, README); 1
    # stays the default until a run from scratch has measured 10.
    config.loss.mse = 1.0
    config.loss.lpips = arg.lpips  # AlexNet LPIPS on `lpips_frames` frames per clip
    config.loss.lpips_frames = 2
    # Random (T, H, W) windows: the conv VAE learns the same from them at a fraction of the
    # compute, as long as they are as long as the clips it will read. A causal VAE trained on
    # 9-frame windows read frames 9-16 of 17-frame clips ~3 dB worse than the same frames
    # encoded from a fresh start; 200 more steps on 17-frame windows (batch 8, same pixels per
    # step) gave 28.8 dB on 16 held-out clips against 27.7 for 9-frame windows (batch 16).
    config.loss.crop = (17, 32, 32)
    # Hinge GAN with a 3D patch discriminator, from `adversarial_start` on; 0 = off (the
    # state is then the VAE's params alone).
    config.loss.adversarial = 0.0
    config.loss.adversarial_start = 0
    config.loss.kl = 1e-4  # on the per-element mean KL: keeps the latent tame for diffusion

    config.optimizer = ml_collections.ConfigDict()
    # 8e-4 diverges without normalisation. Continuing a trained VAE (`init_from`), 3e-4 holds it
    # back: held-out PSNR fell from 28.1 to 26.6 dB over 1,000 steps at 2.8-2.4e-4 and rose to
    # 30.2 within 150 steps of a cut to 1.1e-4 (README, `vae_tiny17e`); continue at 1.5e-4.
    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 200
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.99
    config.optimizer.weight_decay = 0.0
    config.optimizer.grad_clip = 1.0

    # A `train-vae` workdir or a bundle (checkpoints/tiny) whose VAE params a fresh run starts
    # from, with a fresh optimizer: how the shipped VAE keeps training across machines.
    config.init_from = ""
    # Train the decoder alone (the encoder gets zero updates and no backward pass): with
    # `init_from`, sharpens a VAE's reconstructions without moving the latent space that a
    # DiT (and its latent cache) was trained on.
    config.freeze_encoder = False
    config.total_steps = arg.steps
    config.log_every = 50
    config.checkpoint_every = 500
    config.sample_every = 2000  # reconstruction videos in workdir/samples
    config.keep_checkpoints = 3
    return config
