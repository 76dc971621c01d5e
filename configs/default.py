"""Base config: Shapes World at its default geometry (17 frames of 64x64, 8 fps).

Other configs start from this one (`config_lib.load_sibling(__file__, "default")`) and change
what they need. Variants: `--config configs/default.py:frames=9,height=48,width=80,batch=16` or
`:sizes=mixed` for the variable-shape mix.
"""

import ml_collections

from sora_jax import config_lib

# DESIGN.md's variable-shape training: three resolutions / aspect ratios and several durations,
# single images included.
MIXED_SIZES = ((17, 64, 64), (9, 48, 80), (9, 80, 48), (1, 64, 64))


def get_config(arg=None, *, sizes="fixed") -> ml_collections.ConfigDict:
    """`sizes`: "fixed" (frames x height x width only) or "mixed" (MIXED_SIZES)."""
    arg = config_lib.parse_arg(
        arg, frames=17, height=64, width=64, batch=8, data="shapes_world", sizes=sizes
    )
    if arg.sizes not in ("fixed", "mixed"):
        raise ValueError(f"sizes must be 'fixed' or 'mixed', got {arg.sizes!r}")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = arg.batch  # global, over all processes

    config.data = ml_collections.ConfigDict()
    # "shapes_world": rendered on the fly; "tfds": a build from `sora-jax data build`;
    # "video_folder": a folder of captioned videos.
    config.data.source = arg.data
    config.data.split = "train"
    config.data.world_seed = 0
    config.data.num_clips = 100_000  # on-the-fly Shapes World: the size of one epoch
    # (frames, height, width) shapes to mix; batches are bucketed by shape.
    config.data.sizes = (
        MIXED_SIZES if arg.sizes == "mixed" else ((arg.frames, arg.height, arg.width),)
    )
    config.data.fps = 8
    config.data.data_dir = ""  # tfds: the --data_dir given to `sora-jax data build`
    config.data.tfds_name = ""  # tfds: e.g. "shapes_world/f17_64x64_n1000_h200_s0"
    config.data.video_dir = ""  # video_folder: the folder
    config.data.detailed_caption_prob = 0.5  # Sora-style mix of short and recaptioned text
    config.data.num_threads = 2
    config.data.prefetch_buffer_size = 4
    config.data.worker_count = 0  # >0: Grain multiprocessing (needs a __main__ guard)

    # Degrees of the ('data', 'fsdp', 'tensor', 'sequence') mesh; -1 takes the remaining devices.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1))
    return config
