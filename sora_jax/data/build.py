"""`sora-jax data build`: writes a dataset to disk as TFDS array_record files.

sora-jax data build --dataset shapes_world --data_dir D [--num_train N --num_heldout M
                    --frames F --height H --width W --world_seed K]
"""

from absl import flags

from sora_jax import cli
from sora_jax.data.shapes_world import tfds_builder

DATASETS = ("shapes_world",)

_DATASET = flags.DEFINE_enum("dataset", "shapes_world", DATASETS, "Dataset to build.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory to write into.", required=True
)
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1000, "Clips in the train split.")
_NUM_HELDOUT = flags.DEFINE_integer("num_heldout", 200, "Clips in the heldout split.")
_FRAMES = flags.DEFINE_integer("frames", 17, "Frames per clip (1 + 4k).")
_HEIGHT = flags.DEFINE_integer("height", 64, "Frame height (multiple of 16, >= 32).")
_WIDTH = flags.DEFINE_integer("width", 64, "Frame width (multiple of 16, >= 32).")
_WORLD_SEED = flags.DEFINE_integer("world_seed", 0, "Shapes World seed.")


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    try:
        name = tfds_builder.build_shapes_world(
            _DATA_DIR.value,
            frames=_FRAMES.value,
            height=_HEIGHT.value,
            width=_WIDTH.value,
            num_train=_NUM_TRAIN.value,
            num_heldout=_NUM_HELDOUT.value,
            world_seed=_WORLD_SEED.value,
        )
    except ValueError as e:
        raise cli.UserError(str(e)) from e
    print(
        f"built {name} in {_DATA_DIR.value}; read it with "
        f"--config.data.source=tfds --config.data.tfds_name={name} "
        f"--config.data.data_dir={_DATA_DIR.value}"
    )


if __name__ == "__main__":
    cli.run(main)
