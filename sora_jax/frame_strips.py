"""Chosen frames of several videos as one PNG: one row per video, frames left to right.

    python -m sora_jax.frame_strips VIDEO [VIDEO ...] --out docs/x.png [--frames 0,4,8,12,16]
                                    [--scale 2] [--columns 1]

How the README's sample-frame figures are drawn from the videos `eval`, `generate` and `demo`
write, so such a figure is redrawn with one command when the model behind it changes. Rows of
videos of different sizes are left-aligned on a white ground (`frame_strips_lib`).
"""

import pathlib

from absl import flags

from sora_jax import cli
from sora_jax.frame_strips_lib import frame_strips, parse_frames
from sora_jax.video_io import VideoDecodeError, read_video, write_video

_OUT = flags.DEFINE_string("out", None, "The PNG to write.")
_FRAMES = flags.DEFINE_string(
    "frames", "0,4,8,12,16", "Frame indices per video (negative: from the end)."
)
_SCALE = flags.DEFINE_integer("scale", 2, "Nearest-neighbour upscaling of every pixel.")
_COLUMNS = flags.DEFINE_integer(
    "columns", 1, "Columns the rows are laid out in (top to bottom, then left to right)."
)


def main(argv):
    paths = [pathlib.Path(p) for p in argv[1:]]
    out = pathlib.Path(_OUT.value or "")
    if not _OUT.value or out.suffix.lower() != ".png":
        raise cli.UserError(f"--out must name a .png file, got {_OUT.value!r}")
    frames = parse_frames(_FRAMES.value)
    # Decode only as far as the last frame needed (every frame when one counts from the end).
    last = max(frames) + 1 if min(frames) >= 0 else None
    with cli.user_errors(FileNotFoundError, VideoDecodeError):
        videos = [read_video(p, max_frames=last)[0] for p in paths]
    image = frame_strips(
        videos, frames, scale=_SCALE.value, columns=_COLUMNS.value, names=[str(p) for p in paths]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, image[None])
    height, width, _ = image.shape
    print(f"wrote {out}: {len(videos)} videos, frames {frames}, {width}x{height}")


if __name__ == "__main__":
    cli.run(main)
