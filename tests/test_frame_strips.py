"""Frame strips: chosen frames of several videos laid out as one PNG."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sora_jax import cli
from sora_jax.frame_strips_lib import GAP, frame_strips, parse_frames
from sora_jax.video_io import write_video


def _video(frames, height, width, offset=0):
    """Frame k filled with the grey level 10 * (k + 1) + offset."""
    levels = 10 * (np.arange(frames, dtype=np.uint8) + 1) + offset
    return np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).copy()


def test_rows_hold_the_chosen_frames_in_order_with_white_gaps():
    image = frame_strips([_video(5, 4, 6), _video(3, 2, 3)], [0, 2])
    assert image.shape == (4 + GAP + 2, 6 + GAP + 6, 3)
    np.testing.assert_array_equal(image[:4, :6], 10)  # first video, frame 0
    np.testing.assert_array_equal(image[:4, 6 : 6 + GAP], 255)  # the gap between frames
    np.testing.assert_array_equal(image[:4, 6 + GAP :], 30)  # first video, frame 2
    np.testing.assert_array_equal(image[4 : 4 + GAP], 255)  # the gap between rows
    second = image[4 + GAP :]
    np.testing.assert_array_equal(second[:, :3], 10)
    np.testing.assert_array_equal(second[:, 3 : 3 + GAP], 255)
    np.testing.assert_array_equal(second[:, 3 + GAP : 6 + GAP], 30)
    np.testing.assert_array_equal(second[:, 6 + GAP :], 255)  # narrower row padded white


def test_columns_fill_top_to_bottom_then_left_to_right_and_scale():
    videos = [_video(2, 3, 3, offset=i) for i in range(5)]
    image = frame_strips(videos, [-1], columns=4)  # 4 columns: 2, 1, 1, 1 strips
    assert image.shape == (3 + GAP + 3, 4 * 3 + 3 * GAP, 3)
    cell = lambda row, column: image[row * (3 + GAP), column * (3 + GAP), 0]  # noqa: E731
    assert [cell(0, 0), cell(1, 0), cell(0, 1), cell(0, 2), cell(0, 3)] == [20, 21, 22, 23, 24]
    np.testing.assert_array_equal(image[3 + GAP :, 3 + GAP :], 255)  # short columns padded
    scaled = frame_strips(videos, [-1], columns=4, scale=3)
    np.testing.assert_array_equal(scaled, np.repeat(np.repeat(image, 3, 0), 3, 1))


def test_bad_input_is_one_clear_error():
    with pytest.raises(cli.UserError, match="has 2 frames; no frame 4"):
        frame_strips([_video(2, 3, 3)], [0, 4])
    with pytest.raises(cli.UserError, match="no videos"):
        frame_strips([], [0])
    with pytest.raises(cli.UserError, match="must be >= 1"):
        frame_strips([_video(2, 3, 3)], [0], columns=0)
    assert parse_frames("0, 4,-1") == [0, 4, -1]
    with pytest.raises(cli.UserError, match="--frames is empty"):
        parse_frames(" ")
    with pytest.raises(cli.UserError, match="--frames: 'a' is not a frame index"):
        parse_frames("0,a")


def _command(*args):
    return subprocess.run(
        [sys.executable, "-m", "sora_jax.frame_strips", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_command_reads_videos_and_writes_the_png(tmp_path):
    paths = [tmp_path / "a.gif", tmp_path / "b.gif"]
    for path in paths:
        write_video(path, _video(5, 8, 8))
    out = tmp_path / "new_folder" / "strips.png"
    done = _command(*paths, "--out", out, "--frames", "0,4", "--scale", "2")
    assert done.returncode == 0, done.stderr
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (2 * (8 + GAP + 8), 2 * (8 + GAP + 8), 3)
    assert abs(int(image[0, 0, 0]) - 10) <= 2 and abs(int(image[0, -1, 0]) - 50) <= 2
    for args, message in [
        ((tmp_path / "missing.gif",), "missing.gif"),
        ((paths[0], "--frames", "0,x"), "'x' is not a frame index"),
        ((paths[0], "--frames", "9"), "has 5 frames; no frame 9"),
    ]:
        failed = _command(*args, "--out", tmp_path / "x.png")
        assert failed.returncode == 2 and message in failed.stderr.strip().splitlines()[-1]
