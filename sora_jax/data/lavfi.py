"""Natural-looking test video from ffmpeg's synthetic sources, via the ffmpeg binary that the
`imageio-ffmpeg` wheel bundles (no system ffmpeg, no download).

Shapes World is flat-coloured; these sources add texture, gradients, text and fine detail
(`testsrc2`, `mandelbrot`, `life`, `cellauto`, `smptehdbars`), so the autoencoder can also be
measured on content it was not trained on.
"""

import subprocess

import imageio_ffmpeg
import numpy as np

SOURCES = ("testsrc2", "mandelbrot", "life", "cellauto", "smptehdbars")


def render_lavfi(
    source: str, frames: int, height: int, width: int, fps: int = 8, offset_s: float = 0.0
) -> np.ndarray:
    """uint8 [frames, height, width, 3] from ffmpeg's `source` test pattern."""
    if source not in SOURCES:
        raise ValueError(f"unknown lavfi source {source!r}; expected one of {SOURCES}")
    # Sources are rendered larger and scaled down, so patterns keep their fine structure.
    spec = f"{source}=size={4 * width}x{4 * height}:rate={fps}"
    if source == "life":
        spec = f"life=size={width}x{height}:rate={fps}:mold=10:ratio=0.3:death_color=#202020"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        spec,
        "-ss",
        f"{offset_s}",
        "-frames:v",
        str(frames),
        "-vf",
        f"scale={width}:{height}:flags=area",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        "-",
    ]
    raw = subprocess.run(command, capture_output=True, check=True, timeout=120).stdout
    video = np.frombuffer(raw, np.uint8)
    if video.size != frames * height * width * 3:
        raise RuntimeError(
            f"ffmpeg gave {video.size} bytes for {source}, expected {frames * height * width * 3}"
        )
    return video.reshape(frames, height, width, 3)
