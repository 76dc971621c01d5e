"""Chosen frames of several videos as one image: one row per video, frames left to right.

The library behind `python -m sora_jax.frame_strips` (the command), kept free of flags so that
tests and notebooks import it next to other commands' modules.
"""

import numpy as np

from sora_jax import cli

GAP = 2  # white pixels between frames, and between rows (before scaling)
WHITE = 255


def parse_frames(text: str) -> list[int]:
    """ "0,4,-1" -> [0, 4, -1]; one clear error for an empty list or a non-integer entry."""
    if not text.strip():
        raise cli.UserError("--frames is empty; give frame indices like 0,4,8")
    entries = [e.strip() for e in text.split(",")]
    frames = []
    for entry in entries:
        try:
            frames.append(int(entry))
        except ValueError:
            raise cli.UserError(f"--frames: {entry!r} is not a frame index") from None
    return frames


def strip(video_TxHxWx3: np.ndarray, frames: list[int], name: str = "video") -> np.ndarray:
    """The given frames of one video side by side, GAP white columns between them."""
    missing = [f for f in frames if not -len(video_TxHxWx3) <= f < len(video_TxHxWx3)]
    if missing:
        raise cli.UserError(f"{name} has {len(video_TxHxWx3)} frames; no frame {missing[0]}")
    gap = np.full((video_TxHxWx3.shape[1], GAP, 3), WHITE, np.uint8)
    parts = [p for f in frames for p in (video_TxHxWx3[f], gap)][:-1]
    return np.concatenate(parts, axis=1)


def stack(images: list[np.ndarray], axis: int) -> np.ndarray:
    """Images one after the other along `axis` (0: rows, 1: columns), GAP white pixels
    between them, padded white on the far side to the largest one."""
    across = 1 - axis
    size = max(image.shape[across] for image in images)
    parts = []
    for image in images:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[across] = (0, size - image.shape[across])
        parts.append(np.pad(image, pad, constant_values=WHITE))
        gap_shape = [GAP, GAP, 3]
        gap_shape[across] = size
        parts.append(np.full(gap_shape, WHITE, np.uint8))
    return np.concatenate(parts[:-1], axis=axis)


def frame_strips(
    videos: list[np.ndarray], frames: list[int], *, scale: int = 1, columns: int = 1, names=None
) -> np.ndarray:
    """uint8 [H, W, 3]: one strip (`strip`) per video. With `columns` > 1 the strips fill
    min(columns, len(videos)) columns top to bottom, then left to right, the first columns
    one strip longer when they do not divide evenly."""
    if not videos:
        raise cli.UserError("no videos given")
    if not frames:
        raise cli.UserError("no frames given")
    if scale < 1 or columns < 1:
        raise cli.UserError(f"--scale and --columns must be >= 1, got {scale} and {columns}")
    names = names or [f"video {i}" for i in range(len(videos))]
    rows = [strip(v, frames, n) for v, n in zip(videos, names, strict=True)]
    count = min(columns, len(rows))
    sizes = [len(rows) // count + (i < len(rows) % count) for i in range(count)]
    bounds = np.cumsum([0, *sizes])
    blocks = [stack(rows[a:b], axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    image = stack(blocks, axis=1)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
