"""TFDS builder for Shapes World: array_record files of uint8 video tensors, no TensorFlow.

Videos are stored as `tfds.features.Tensor` (not `tfds.features.Video`, which needs TensorFlow)
and read back with `tfds.data_source`, a random-access source that Grain consumes directly.
Each build is a builder config named by its geometry and size, so several builds can share a
data_dir: `shapes_world/f17_64x64_n1000_h200_s0`.
"""

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds

from sora_jax.data.shapes_world import scenes, vocab, world


@dataclasses.dataclass(kw_only=True)
class ShapesWorldConfig(tfds.core.BuilderConfig):
    frames: int = 17
    height: int = 64
    width: int = 64
    num_train: int = 1000
    num_heldout: int = 200
    world_seed: int = 0


def make_config(frames=17, height=64, width=64, num_train=1000, num_heldout=200, world_seed=0):
    scenes.check_clip_geometry(frames, height, width)
    if num_train < 0 or num_heldout < 0 or num_train + num_heldout == 0:
        raise ValueError(f"need a positive number of clips, got {num_train=} {num_heldout=}")
    name = f"f{frames}_{height}x{width}_n{num_train}_h{num_heldout}_s{world_seed}"
    return ShapesWorldConfig(
        name=name,
        frames=frames,
        height=height,
        width=width,
        num_train=num_train,
        num_heldout=num_heldout,
        world_seed=world_seed,
        description=f"{frames} frames of {height}x{width}, {num_train} train / {num_heldout} "
        f"heldout clips, world seed {world_seed}",
    )


class ShapesWorld(tfds.core.GeneratorBasedBuilder):
    """Shapes World: procedural captioned videos with exact labels (see shared/SHAPES_WORLD.md)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [make_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Tensor(
                        shape=(cfg.frames, cfg.height, cfg.width, 3), dtype=np.uint8
                    ),
                    "caption": tfds.features.Text(),
                    "detailed_caption": tfds.features.Text(),
                    "labels": tfds.features.Text(),  # JSON, schema in SHAPES_WORLD.md
                    "index": np.int64,
                }
            ),
            # Record i is clip i (Grain shuffles at read time), so a build matches the on-the-fly
            # source index for index.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # procedural: nothing to download
        cfg = self.builder_config
        counts = {"train": cfg.num_train, "heldout": cfg.num_heldout}
        return {split: self._generate_examples(split, n) for split, n in counts.items() if n}

    def _generate_examples(self, split: str, num_clips: int):
        cfg = self.builder_config
        vocab.allowed_pairs(split)
        for index in range(num_clips):
            clip = world.generate_clip(
                index,
                split=split,
                seed=cfg.world_seed,
                frames=cfg.frames,
                height=cfg.height,
                width=cfg.width,
            )
            yield (
                index,
                {
                    "video": clip["video"],
                    "caption": clip["caption"],
                    "detailed_caption": clip["detailed_caption"],
                    "labels": json.dumps(clip["labels"]),
                    "index": index,
                },
            )


def build_shapes_world(data_dir: str, **config_kwargs) -> str:
    """Builds (or reuses) the dataset; returns its TFDS name for `tfds.data_source`."""
    config = make_config(**config_kwargs)
    builder = ShapesWorld(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return f"shapes_world/{config.name}"
