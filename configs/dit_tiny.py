"""Tiny text-to-video DiT for a 2-core CPU, on Shapes World latents of the tiny VAE.

    sora-jax train --config configs/dit_tiny.py --workdir workdirs/dit_tiny

17x64x64 clips -> tiny-VAE latents 5x16x16x16 -> 1x4x4 patches: 80 tokens a clip. Variants:
`configs/dit_tiny.py:variant=micro/1x2x2,batch=8,steps=100,vae=workdirs/vae_tiny`.
"""

import ml_collections

from sora_jax import config_lib


def get_config(arg=None) -> ml_collections.ConfigDict:
    arg = config_lib.parse_arg(
        arg,
        batch=32,
        steps=20_000,
        variant="tiny/1x4x4",
        vae="workdirs/vae_tiny",
        text="minilm",
        clips=8192,
        t2v=0.4,
        sizes="fixed",
        packing=False,
    )
    config = config_lib.load_sibling(__file__, "default").get_config(
        f"batch={arg.batch},sizes={arg.sizes}"
    )
    config.data.num_clips = arg.clips  # encoded once into the latent cache
    config.data.num_threads = 1

    config.vae = ml_collections.ConfigDict()
    config.vae.workdir = arg.vae  # a `train-vae` run, or a bundle with a VAE
    config.vae.step = -1  # -1: its newest checkpoint, pinned in W/vae.json at the first start
    config.latent_cache_dir = ""  # "": W/latent_cache
    config.latent_cache_batch = 8

    config.model = ml_collections.ConfigDict()
    config.model.variant = arg.variant  # size preset / spacetime patch (t x h x w)
    config.model.mlp_ratio = 4.0
    config.model.activation = "gelu"  # "gelu" | "swiglu"
    config.model.text_mode = "cross"  # "cross" | "joint" (MM-DiT)
    config.model.attention = "full"  # "full" | "factorized" (spatial, then temporal)
    # "xla": jax.nn.dot_product_attention (XLA's attention: it holds every [N, N] score);
    # "blockwise": exact attention in query/key blocks, memory N x 512 (blockwise_attention.py).
    config.model.attention_impl = "xla"
    config.model.attention_block = 512  # blockwise (and ring) query/key block
    # Tokens sharded over the mesh's `sequence` axis: "none" lets GSPMD gather keys and values;
    # "ulysses" swaps token shards for head shards with all-to-alls; "ring" passes key/value
    # shards around the devices (models/sequence_parallel.py).
    config.model.sequence_parallel = "none"
    config.model.scan_layers = True
    config.model.remat_policy = "none"  # "none" | "full" | "dots" | "dots_no_batch"
    config.model.dtype = "float32"
    # What the last layer outputs: "velocity" or "data" (clean tokens, turned into the velocity
    # they imply; models/dit.py). experiments/prediction_target compares the two.
    config.model.prediction = "velocity"
    # Also feed the caption's mean text state into adaLN (a global colour / shape / motion
    # signal for every token, besides attention to the per-token states); off: attention only.
    config.model.pooled_text = False
    # The time coordinate's RoPE multiplier (models/dit.py): > 1 sets latent frames further
    # apart in angle.
    config.model.rope_time_scale = 1.0
    # Also add each token's fractional (t, h, w) place in its clip, an absolute position signal
    # beside RoPE's relative one (models/dit.py, `clip_fractions`).
    config.model.absolute_position = False
    config.model.text = ml_collections.ConfigDict()
    config.model.text.name = arg.text  # "minilm" (pretrained, frozen) | "small" (trained)
    config.model.text.max_length = 128  # detailed captions run to ~100 tokens
    config.model.text.width = 256  # the small encoder's fields
    config.model.text.depth = 4
    config.model.text.heads = 4

    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.t_mean = 0.0  # logit-normal timestep sampling
    config.diffusion.t_std = 1.0
    config.diffusion.text_dropout = 0.1  # classifier-free guidance
    # The noise prior: each token's noise shares this correlation with the same place's noise
    # in the clip's other frames (PYoCo's mixed noise; rectified_flow.frame_correlated_noise);
    # 0: independent. Sampling uses the run's prior.
    config.diffusion.frame_noise_correlation = 0.0
    # Timestep shift grows with the token count (rectified_flow.shift_for_tokens).
    config.diffusion.shift = ml_collections.ConfigDict(
        dict(base_tokens=256, base_shift=1.0, max_tokens=4096, max_shift=3.0)
    )

    # One model for every task (sora_jax/tasks.py): each example draws its conditioning.
    config.tasks = ml_collections.ConfigDict()
    config.tasks.weights = ml_collections.ConfigDict(
        dict(
            t2v=arg.t2v,
            i2v=0.15,
            i2v_tail=0.05,
            extend_forward=0.15,
            extend_backward=0.1,
            interpolate=0.15,
        )
    )
    config.tasks.context = 2  # latent frames an extension overlaps (and continues from)

    # NaViT packing of clips of any shape into rows of `seq_len` tokens (`batch` rows a step);
    # off: batches of one shape (buckets). Use with `:sizes=mixed`.
    config.packing = ml_collections.ConfigDict(dict(enabled=arg.packing, seq_len=256, max_clips=8))

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 500
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.99
    config.optimizer.weight_decay = 0.0
    config.optimizer.grad_clip = 1.0
    config.ema_decay = 0.999

    # A `train` workdir or a bundle whose EMA params a fresh run starts from (fresh optimizer).
    config.init_from = ""
    config.total_steps = arg.steps
    config.log_every = 50
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    config.sample_every = 2000
    config.num_sample_prompts = 8
    config.sample_steps = 25
    config.sample_cfg = 4.0
    return config
