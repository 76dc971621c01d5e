"""Tests for sora_jax.data.video_folder on a small folder of real, tiny video files."""

import json
import logging
import pickle

import grain
import numpy as np
import pytest

from sora_jax.data import video_folder
from sora_jax.data.video_folder import VideoFolderSource
from sora_jax.video_io import write_video

FPS = 8
FRAME_COUNTS = (1, 9, 17)
BUCKETS = ((64, 64), (48, 80), (80, 48))


def numbered(frames: int, height: int, width: int) -> np.ndarray:
    """Frame i is a flat gray of level 4 + 12 i, so every output frame names its source frame."""
    levels = 4 + 12 * np.arange(frames)
    return np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).astype(np.uint8)


def frame_numbers(video_TxHxWx3: np.ndarray) -> list[int]:
    return np.round((video_TxHxWx3.mean(axis=(1, 2, 3)) - 4) / 12).astype(int).tolist()


def make_folder(root):
    """Four good clips and four bad files; returns {file: expected (T, H, W, source frames)}."""
    write_video(root / "wide.mp4", numbered(16, 32, 48), fps=8)  # 2 s, 3:2
    write_video(root / "fast.mp4", numbered(20, 32, 32), fps=16)  # 1.25 s -> 10 frames at 8 fps
    write_video(root / "short.gif", numbered(3, 32, 32), fps=8)
    (root / "sub").mkdir()
    write_video(root / "sub" / "tall.gif", numbered(20, 48, 32), fps=8)  # 2.5 s, 2:3
    (root / "sub" / "tall.txt").write_text("a tall clip\n")
    write_video(root / "uncaptioned.mp4", numbered(9, 32, 32), fps=8)
    good = (root / "wide.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) * 2 // 3])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("these are not frames\n" * 20)
    (root / ".hidden.mp4").write_text("ignored: hidden\n")
    (root / "README.md").write_text("ignored: not a video suffix\n")
    captions = {
        "wide.mp4": "a wide clip",
        "./fast.mp4": "a fast clip",
        "short.gif": "a short clip",
        "truncated.mp4": "cut short",
        "empty.mp4": "nothing",
        "notes.mp4": "text",
        "gone.mp4": "a caption without a file",
    }
    lines = [json.dumps({"file": f, "caption": c}) for f, c in captions.items()]
    (root / "captions.jsonl").write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]))
    return {
        # T = the most of (1, 9, 17) that fits; the window is centered.
        "fast.mp4": ((9, 64, 64), list(range(0, 18, 2)), "a fast clip"),
        "short.gif": ((1, 64, 64), [1], "a short clip"),
        "sub/tall.gif": ((17, 80, 48), list(range(1, 18)), "a tall clip"),
        "wide.mp4": ((9, 48, 80), list(range(3, 12)), "a wide clip"),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return root, make_folder(root)


def make_source(root, **kwargs) -> VideoFolderSource:
    kwargs = {"fps": FPS, "frame_counts": FRAME_COUNTS, "buckets": BUCKETS} | kwargs
    return VideoFolderSource(root, **kwargs)


def test_scan_keeps_and_skips(folder, caplog):
    root, expected = folder
    with caplog.at_level(logging.WARNING):
        source = make_source(root)
    assert source.files == sorted(expected)
    assert len(source) == 4
    assert source.skipped == {
        "empty": ["empty.mp4"],
        "no_caption": ["uncaptioned.mp4"],
        "truncated": ["truncated.mp4"],
        "unreadable": ["notes.mp4"],
    }
    assert source.num_skipped == 4
    warnings = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warnings) == 4
    assert any("notes.mp4" in w and "unreadable" in w for w in warnings)


def test_buckets(folder):
    root, expected = folder
    source = make_source(root)
    assert source.bucket_ids.dtype == np.int32
    for i, file in enumerate(source.files):
        assert source.bucket_of(i) == expected[file][0]
        assert source.shapes[source.bucket_ids[i]] == expected[file][0]
    # Clips of the same shape share an id, others do not.
    assert len(set(source.bucket_ids.tolist())) == len({shape for shape, _, _ in expected.values()})


def test_items(folder):
    root, expected = folder
    source = make_source(root)
    for i, file in enumerate(source.files):
        shape, frames, caption = expected[file]
        item = source[i]
        assert set(item) == {"video", "caption", "file"}
        assert item["file"] == file
        assert item["caption"] == caption
        assert item["video"].dtype == np.uint8
        assert item["video"].shape == (*shape, 3)
        # Resampled to 8 fps (fast.mp4 is 16 fps: every other frame) and centered.
        assert frame_numbers(item["video"]) == frames
    assert source.num_read_failures == 0
    with pytest.raises(IndexError):
        source[len(source)]
    # The Grain protocol, and picklable for Grain worker processes.
    np.testing.assert_array_equal(grain.MapDataset.source(source)[3]["video"], source[3]["video"])
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy[0]["video"], source[0]["video"])


def test_too_short(folder):
    root, _ = folder
    source = make_source(root, frame_counts=(9, 17))
    assert source.skipped["too_short"] == ["short.gif"]
    assert "short.gif" not in source.files


def test_failures_at_load_time(tmp_path):
    make_folder(tmp_path)
    source = make_source(tmp_path)
    index = {file: i for i, file in enumerate(source.files)}
    # Changed after the scan: now too short for its bucket, garbage, and gone.
    write_video(tmp_path / "wide.mp4", numbered(4, 32, 48), fps=8)
    (tmp_path / "fast.mp4").write_bytes(b"\x00" * 1000)
    (tmp_path / "sub" / "tall.gif").unlink()
    assert source[index["wide.mp4"]] == {"skipped": "truncated", "file": "wide.mp4"}
    assert source[index["fast.mp4"]] == {"skipped": "unreadable", "file": "fast.mp4"}
    assert source[index["sub/tall.gif"]] == {"skipped": "missing", "file": "sub/tall.gif"}
    assert source[index["short.gif"]]["video"].shape == (1, 64, 64, 3)
    assert source.read_failures == {"truncated": 1, "unreadable": 1, "missing": 1}
    assert source.num_read_failures == 3


def test_cover_crop():
    # A 2:1 frame whose middle half is white: a square crop keeps only that half. (The filter
    # reaches a little past the crop box, as resizing the whole frame and then cropping would.)
    wide_HxWx3 = np.zeros((20, 40, 3), np.uint8)
    wide_HxWx3[:, 10:30] = 255
    square = video_folder.cover_crop(wide_HxWx3, 16, 16)
    assert square.shape == (16, 16, 3)
    assert square[:, 1:-1].min() == 255 and square.min() >= 240
    assert video_folder.cover_crop(wide_HxWx3, 20, 40) is wide_HxWx3
    # A 1:2 frame with a white band across its middle quarter, which is all a 1:2 crop keeps;
    # a bucket of its own aspect keeps the whole frame, band and black alike.
    tall_HxWx3 = np.zeros((40, 20, 3), np.uint8)
    tall_HxWx3[15:25] = 255
    band = video_folder.cover_crop(tall_HxWx3, 16, 32)
    assert band[2:-2].min() >= 250 and band.min() >= 200  # upscaled 1.6x: softer edges
    whole = video_folder.cover_crop(tall_HxWx3, 32, 16)
    assert whole.shape == (32, 16, 3)
    assert whole[:10].max() <= 15 and whole[13:19].min() >= 240 and whole[-10:].max() <= 15


def test_nearest_aspect():
    assert video_folder.nearest_aspect(32, 48, BUCKETS) == (48, 80)
    assert video_folder.nearest_aspect(48, 32, BUCKETS) == (80, 48)
    assert video_folder.nearest_aspect(50, 45, BUCKETS) == (64, 64)
    assert video_folder.nearest_aspect(10, 100, BUCKETS) == (48, 80)
    assert video_folder.nearest_aspect(16, 16, ((32, 64), (64, 32))) == (32, 64)  # tie: first


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        make_source(tmp_path, frame_counts=(8,))
    with pytest.raises(ValueError, match="multiples of 16"):
        make_source(tmp_path, buckets=((60, 64),))
    with pytest.raises(ValueError, match="fps"):
        make_source(tmp_path, fps=0)
    with pytest.raises(FileNotFoundError):
        make_source(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no usable video"):
        make_source(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"file": "a.mp4", "caption": "ok"}\n{"file": 3}\n')
    with pytest.raises(ValueError, match="captions.jsonl:2"):
        make_source(tmp_path)
