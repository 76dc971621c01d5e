"""Builds the random-access clip source named by a data config (`config.data`)."""

import ml_collections
import tensorflow_datasets as tfds

from sora_jax.data.shapes_world import tfds_builder  # noqa: F401 - registers the TFDS builder
from sora_jax.data.shapes_world.world import ShapesWorldSource

SOURCES = ("shapes_world", "tfds", "video_folder")


def make_source(data: ml_collections.ConfigDict, split: str | None = None):
    """A Grain random-access source of clip dicts for `data.source` and `split`."""
    split = split or data.split
    if data.source == "shapes_world":
        return ShapesWorldSource(
            num_clips=data.num_clips,
            split=split,
            seed=data.world_seed,
            sizes=tuple(tuple(s) for s in data.sizes),
        )
    if data.source == "tfds":
        if not data.tfds_name or not data.data_dir:
            raise ValueError(
                "data.source='tfds' needs data.tfds_name and data.data_dir "
                "(see `sora-jax data build`)"
            )
        return tfds.data_source(data.tfds_name, data_dir=data.data_dir, split=split)
    if data.source == "video_folder":
        from sora_jax.data.video_folder import VideoFolderSource

        if not data.video_dir:
            raise ValueError("data.source='video_folder' needs data.video_dir")
        return VideoFolderSource(
            data.video_dir,
            fps=data.fps,
            frame_counts=sorted({s[0] for s in data.sizes}),
            buckets=sorted({(s[1], s[2]) for s in data.sizes}),
        )
    raise ValueError(f"unknown data.source {data.source!r}; expected one of {SOURCES}")
