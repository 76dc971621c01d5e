"""Shapes World clips by index: `generate_clip` and a random-access source for Grain.

Clip `i` of split `s` with world seed `k` is always the same video: its random generator is seeded
by `(k, split id, i)` alone, so any process can produce any clip without coordination.
"""

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from sora_jax.data.shapes_world import captions, render, scenes, vocab


def generate_clip(
    index: int,
    *,
    split: str = "train",
    seed: int = 0,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    mix: scenes.SceneMix = scenes.DEFAULT_MIX,
    draw: bool = True,
) -> dict:
    """One clip: `video` uint8 [T,H,W,3], `caption`, `detailed_caption`, `labels` (dict);
    `draw=False`: only its `caption` and `labels`, without drawing it."""
    rng = np.random.default_rng([seed, vocab.SPLIT_IDS[split], index])
    labels = scenes.sample_scene(rng, split, frames, height, width, mix)
    if not draw:
        return {"caption": captions.short_caption(labels), "labels": labels}
    return {
        "video": render.render_clip(labels, frames, height, width),
        "caption": captions.short_caption(labels),
        "detailed_caption": captions.detailed_caption(labels, height, width, rng),
        "labels": labels,
    }


@dataclasses.dataclass(frozen=True)
class ShapesWorldSource:
    """Grain `RandomAccessDataSource` that renders clips on the fly.

    `sizes` lists the (frames, height, width) shapes to mix; clip `i` gets `sizes[j]` with `j`
    drawn from its own seed, so its bucket is known without rendering it (see `bucket_ids`).
    """

    num_clips: int
    split: str = "train"
    seed: int = 0
    sizes: Sequence[tuple[int, int, int]] = ((17, 64, 64),)
    mix: scenes.SceneMix = scenes.DEFAULT_MIX

    def __post_init__(self):
        for frames, height, width in self.sizes:
            scenes.check_clip_geometry(frames, height, width)
        vocab.allowed_pairs(self.split)  # validates the split name

    def __len__(self) -> int:
        return self.num_clips

    def bucket_of(self, index: int) -> int:
        if len(self.sizes) == 1:
            return 0
        rng = np.random.default_rng([self.seed, vocab.SPLIT_IDS[self.split], index, 1])
        return int(rng.integers(len(self.sizes)))

    @property
    def bucket_ids(self) -> np.ndarray:
        return np.asarray([self.bucket_of(i) for i in range(self.num_clips)], np.int32)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range for {self.num_clips} clips")
        frames, height, width = self.sizes[self.bucket_of(index)]
        clip = generate_clip(
            index,
            split=self.split,
            seed=self.seed,
            frames=frames,
            height=height,
            width=width,
            mix=self.mix,
        )
        clip["labels"] = json.dumps(clip["labels"])
        clip["index"] = index
        return clip
