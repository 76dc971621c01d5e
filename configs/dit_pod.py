"""A pod-scale DiT: a multi-billion preset at 720p-class resolution, bf16, remat, FSDP.

    sora-jax plan --config configs/dit_pod.py --topology v5p-128
    sora-jax plan --config configs/dit_pod.py:variant=14B/1x2x2 --topology v5p-256 \
        --clips 121x720x1280

The latent is that of the default 4x8x8, 16-channel VAE; `data.sizes` holds the pixel clip shape
(121 frames = 5 s at 24 fps). Training it needs a VAE run named in `vae.workdir`, as dit_tiny's.
"""

import ml_collections

from sora_jax import config_lib


def get_config(arg=None) -> ml_collections.ConfigDict:
    arg = config_lib.parse_arg(
        arg, variant="3B/1x2x2", batch=64, frames=121, height=256, width=448, remat="full"
    )
    config = config_lib.load_sibling(__file__, "dit_tiny").get_config(
        f"variant={arg.variant},batch={arg.batch}"
    )
    config.data.sizes = ((arg.frames, arg.height, arg.width),)
    config.data.fps = 24
    config.model.dtype = "bfloat16"
    config.model.remat_policy = arg.remat
    config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, sequence=1))
    return config
