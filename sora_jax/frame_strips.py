"""Chosen frames of several videos as one PNG: one row per video, frames left to right.

    python -m sora_jax.frame_strips VIDEO [VIDEO ...] --out docs/x.png [--frames 0,4,8,12,16]
                                    [--scale 2] [--columns 1]

How the README's sample figures are drawn from the videos `eval`, `generate` and `demo` write,
so a figure is redrawn with one command when the model behind it changes. Rows of videos of
different sizes are left-aligned on a white ground; `--columns` lays the rows out in several
columns.
"""

import pathlib

import numpy as np
from absl import flags

from sora_jax import cli
from sora_jax.video_io import VideoDecodeError, read_video, write_video

_OUT = flags.DEFINE_string("out", None, "The PNG to write.")
_FRAMES = flags.DEFINE_list("frames", ["0", "4", "8", "12", "16"], "Frame indices per video.")
_SCALE = flags.DEFINE_integer("scale", 2, "Nearest-neighbour upscaling of every pixel.")
_COLUMNS = flags.DEFINE_integer("columns", 1, "Columns of rows the videos are laid out in.")

GAP = 2  # white pixels between frames, and between rows (before scaling)
WHITE = 255


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
    """uint8 [H, W, 3]: one strip (`strip`) per video, in `columns` columns of rows."""
    if not videos:
        raise cli.UserError("no videos given")
    if scale < 1 or columns < 1:
        raise cli.UserError(f"--scale and --columns must be >= 1, got {scale} and {columns}")
    names = names or [f"video {i}" for i in range(len(videos))]
    rows = [strip(v, frames, n) for v, n in zip(videos, names, strict=True)]
    per_column = -(-len(rows) // columns)
    blocks = [stack(rows[i : i + per_column], axis=0) for i in range(0, len(rows), per_column)]
    image = stack(blocks, axis=1)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def main(argv):
    paths = [pathlib.Path(p) for p in argv[1:]]
    if not _OUT.value:
        raise cli.UserError("--out is required")
    if pathlib.Path(_OUT.value).suffix.lower() != ".png":
        raise cli.UserError(f"--out must be a .png file, got {_OUT.value}")
    with cli.user_errors(ValueError):
        frames = [int(f) for f in _FRAMES.value]
    with cli.user_errors(FileNotFoundError, VideoDecodeError):
        videos = [read_video(p)[0] for p in paths]
    image = frame_strips(
        videos, frames, scale=_SCALE.value, columns=_COLUMNS.value, names=[str(p) for p in paths]
    )
    write_video(_OUT.value, image[None])
    height, width, _ = image.shape
    print(f"wrote {_OUT.value}: {len(videos)} videos, frames {frames}, {width}x{height}")


if __name__ == "__main__":
    cli.run(main)
