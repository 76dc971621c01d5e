"""Frame strips: chosen frames of several videos laid out as one PNG."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sora_jax import cli, frame_strips
from sora_jax.video_io import write_video


def _video(frames, height, width):
    """Frame k filled with the grey level 10 * (k + 1)."""
    levels = 10 * (np.arange(frames, dtype=np.uint8) + 1)
    return np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).copy()


def test_rows_hold_the_chosen_frames_in_order_with_white_gaps():
    image = frame_strips.frame_strips([_video(5, 4, 6), _video(3, 2, 3)], [0, 2])
    gap = frame_strips.GAP
    assert image.shape == (4 + gap + 2, 6 + gap + 6, 3)
    np.testing.assert_array_equal(image[:4, :6], 10)  # first video, frame 0
    np.testing.assert_array_equal(image[:4, 6 + gap :], 30)  # first video, frame 2
    np.testing.assert_array_equal(image[4 : 4 + gap], 255)  # the gap between rows
    second = image[4 + gap :]
    np.testing.assert_array_equal(second[:, :3], 10)
    np.testing.assert_array_equal(second[:, 3 : 3 + gap], 255)
    np.testing.assert_array_equal(second[:, 3 + gap : 6 + gap], 30)
    np.testing.assert_array_equal(second[:, 6 + gap :], 255)  # narrower row padded white


def test_columns_and_scale():
    videos = [_video(2, 3, 3) for _ in range(3)]
    one = frame_strips.frame_strips(videos, [-1], columns=2)
    gap = frame_strips.GAP
    # Two rows in the first column, one in the second (padded white below it).
    assert one.shape == (3 + gap + 3, 3 + gap + 3, 3)
    np.testing.assert_array_equal(one[3 + gap :, 3 + gap :], 255)
    scaled = frame_strips.frame_strips(videos, [-1], columns=2, scale=3)
    np.testing.assert_array_equal(scaled, np.repeat(np.repeat(one, 3, 0), 3, 1))


def test_bad_input_is_one_clear_error():
    with pytest.raises(cli.UserError, match="has 2 frames; no frame 4"):
        frame_strips.frame_strips([_video(2, 3, 3)], [0, 4])
    with pytest.raises(cli.UserError, match="no videos"):
        frame_strips.frame_strips([], [0])
    with pytest.raises(cli.UserError, match="must be >= 1"):
        frame_strips.frame_strips([_video(2, 3, 3)], [0], columns=0)


def _command(*args):
    return subprocess.run(
        [sys.executable, "-m", "sora_jax.frame_strips", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_command_reads_videos_and_writes_the_png(tmp_path):
    paths = [tmp_path / "a.gif", tmp_path / "b.gif"]
    for path in paths:
        write_video(path, _video(5, 8, 8))
    out = tmp_path / "strips.png"
    done = _command(*paths, "--out", out, "--frames", "0,4", "--scale", "2")
    assert done.returncode == 0, done.stderr
    image = np.asarray(Image.open(out).convert("RGB"))
    gap = frame_strips.GAP
    assert image.shape == (2 * (8 + gap + 8), 2 * (8 + gap + 8), 3)
    assert abs(int(image[0, 0, 0]) - 10) <= 2 and abs(int(image[0, -1, 0]) - 50) <= 2
    failed = _command(tmp_path / "missing.gif", "--out", tmp_path / "x.png")
    assert failed.returncode == 2 and "missing.gif" in failed.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()
