"""Tests for sora_jax.video_io: real encodes and decodes of tiny videos through PyAV."""

import os

import av
import numpy as np
import pytest

from sora_jax import video_io
from sora_jax.video_io import VideoDecodeError, probe_video, read_video, write_video


def moving_squares(frames: int = 16, height: int = 32, width: int = 48) -> np.ndarray:
    """A gradient background with two soft-edged colored squares moving in opposite directions.

    Soft edges keep the test about the codec, not about 4:2:0 chroma at hard red/cyan edges.
    """
    y_H1, x_1W = np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)
    background_HxWx3 = np.stack(
        np.broadcast_arrays(40 + 150 * x_1W / width, 60 + 120 * y_H1 / height, np.float32(90)),
        axis=-1,
    )
    video_TxHxWx3 = np.empty((frames, height, width, 3), np.float32)
    for t in range(frames):
        cx = 6 + t * (width - 12) / max(frames - 1, 1)
        frame_HxWx3 = background_HxWx3
        squares = (((9, cx), (230, 40, 40)), ((height - 9, width - cx), (30, 200, 220)))
        for (cy, x), color in squares:
            # 10-pixel square whose edges ramp over 3 pixels.
            mask_HxW = np.clip((6.5 - np.abs(y_H1 - cy)) / 3, 0, 1) * np.clip(
                (6.5 - np.abs(x_1W - x)) / 3, 0, 1
            )
            frame_HxWx3 = frame_HxWx3 + mask_HxW[..., None] * (np.float32(color) - frame_HxWx3)
        video_TxHxWx3[t] = frame_HxWx3
    return np.round(video_TxHxWx3).astype(np.uint8)


def numbered(frames: int = 16, height: int = 16, width: int = 16) -> np.ndarray:
    """Frame i is a flat gray of level 8 + 15 i, so decoded frames can be told apart."""
    levels = 8 + 15 * np.arange(frames, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).copy()


def frame_numbers(video_TxHxWx3: np.ndarray) -> list[int]:
    return np.round((video_TxHxWx3.mean(axis=(1, 2, 3)) - 8) / 15).astype(int).tolist()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@pytest.mark.parametrize(
    ("suffix", "min_psnr"),
    # GIF quantizes each frame to a 256-color palette: lossy, but on a smooth video only a little.
    [(".mp4", 30.0), (".mov", 30.0), (".webm", 30.0), (".gif", 34.0)],
)
def test_round_trip(tmp_path, suffix, min_psnr):
    video = moving_squares()
    path = tmp_path / f"clip{suffix}"
    write_video(path, video, fps=8)
    decoded, source_fps = read_video(path)
    assert decoded.dtype == np.uint8
    assert decoded.shape == video.shape
    assert source_fps == pytest.approx(8.0)
    assert psnr(decoded, video) > min_psnr
    # Not a constant picture: the frames still differ where the squares moved.
    assert psnr(decoded[0], decoded[-1]) < 25


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_probe(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    write_video(path, moving_squares(frames=12, height=32, width=48), fps=8)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (12, 32, 48)
    assert info.fps == pytest.approx(8.0)
    # GIF delays are whole 1/100 s, so 1/8 s frames come out 12 or 13 hundredths long.
    assert info.duration_s == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_resample_picks_nearest_frames(tmp_path, suffix):
    path = tmp_path / f"numbered{suffix}"
    write_video(path, numbered(16), fps=8)
    assert frame_numbers(read_video(path)[0]) == list(range(16))
    # 4 fps: every other frame; 16 fps: each frame twice (a tie picks the earlier frame).
    half, _ = read_video(path, fps=4)
    assert frame_numbers(half) == list(range(0, 16, 2))
    double, _ = read_video(path, fps=16)
    assert frame_numbers(double) == [k // 2 for k in range(32)]
    # 3 fps (not a divisor): 2 s -> 6 frames at k/3 s, nearest of the frames at i/8 s.
    third, _ = read_video(path, fps=3)
    assert frame_numbers(third) == [round(k * 8 / 3) for k in range(6)]


def test_max_frames_is_a_prefix(tmp_path):
    path = tmp_path / "numbered.mp4"
    write_video(path, numbered(16), fps=8)
    full, _ = read_video(path, fps=16)
    for max_frames in (1, 5, 32, 100):
        head, _ = read_video(path, fps=16, max_frames=max_frames)
        np.testing.assert_array_equal(head, full[:max_frames])
    head, _ = read_video(path, max_frames=3)
    assert frame_numbers(head) == [0, 1, 2]


def test_nearest_frames_uneven_timestamps():
    times_s = np.array([0.0, 0.1, 0.35, 0.4])
    targets_s = np.array([0.0, 0.05, 0.2, 0.3, 0.39, 1.0])
    np.testing.assert_array_equal(video_io.nearest_frames(times_s, targets_s), [0, 0, 1, 2, 3, 3])


def test_num_resampled_frames():
    assert video_io.num_resampled_frames(2.0, 4) == 8
    assert video_io.num_resampled_frames(2.01, 4) == 8  # GIF jitter does not add a frame
    assert video_io.num_resampled_frames(1.125, 4) == 5  # 0 .. 1 s all fall inside the clip
    assert video_io.num_resampled_frames(1.1, 4) == 4
    assert video_io.num_resampled_frames(0.05, 8) == 1  # a still is still one frame


def test_odd_sizes(tmp_path):
    video = moving_squares(frames=9, height=33, width=47)
    write_video(tmp_path / "odd.mp4", video)
    mp4, _ = read_video(tmp_path / "odd.mp4")
    # yuv420p needs even sizes: the last row and column are repeated once.
    assert mp4.shape == (9, 34, 48, 3)
    assert psnr(mp4[:, :33, :47], video) > 30
    assert psnr(mp4[:, 33, :47], video[:, 32]) > 30
    assert psnr(mp4[:, :33, 47], video[:, :, 46]) > 30
    for suffix in (".gif", ".webm"):
        write_video(tmp_path / f"odd{suffix}", video)
        decoded, _ = read_video(tmp_path / f"odd{suffix}")
        assert decoded.shape == video.shape
        assert psnr(decoded, video) > 28


def test_single_frame(tmp_path):
    still = moving_squares(frames=1)
    for suffix in (".mp4", ".gif"):
        write_video(tmp_path / f"still{suffix}", still)
        decoded, _ = read_video(tmp_path / f"still{suffix}", fps=4)
        assert decoded.shape == still.shape
        assert probe_video(tmp_path / f"still{suffix}").num_frames == 1


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((4, 16, 16, 3), np.float32), "uint8"),
        (np.zeros((16, 16, 3), np.uint8), r"\[T, H, W, 3\]"),
        (np.zeros((4, 16, 16, 4), np.uint8), r"\[T, H, W, 3\]"),
        (np.zeros((0, 16, 16, 3), np.uint8), "at least one"),
        (np.zeros((2, 0, 16, 3), np.uint8), "at least one"),
    ],
)
def test_bad_frames(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / "bad.mp4", frames)
    assert os.listdir(tmp_path) == []


def test_bad_suffix_and_fps(tmp_path):
    video = numbered(2)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "clip.avi", video)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "clip.mp4", video, fps=0)
    with pytest.raises(ValueError, match="fps"):
        read_video(tmp_path / "clip.mp4", fps=-1)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    write_video(path, numbered(4))
    before = path.read_bytes()
    convert = video_io._to_av_frame
    calls = []

    def fail_on_third_frame(frame, pix_fmt):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return convert(frame, pix_fmt)

    monkeypatch.setattr(video_io, "_to_av_frame", fail_on_third_frame)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(path, numbered(8))
    # The old file is untouched and no temporary file is left behind.
    assert os.listdir(tmp_path) == ["clip.mp4"]
    assert path.read_bytes() == before
    calls.clear()
    with pytest.raises(RuntimeError):
        write_video(tmp_path / "new.gif", numbered(8))
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_unreadable_files(tmp_path):
    write_video(tmp_path / "good.mp4", moving_squares())
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])
    # Cut exactly between two packets, so no packet is partial: only the count gives it away.
    with av.open(os.fspath(tmp_path / "good.mp4")) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size]
    (tmp_path / "cut.mp4").write_bytes(data[: positions[len(positions) // 2]])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    cases = {
        "truncated.mp4": "truncated",
        "cut.mp4": "truncated",
        "empty.mp4": "empty",
        "text.mp4": "unreadable",
    }
    for name, reason in cases.items():
        with pytest.raises(VideoDecodeError, match=name) as probed:
            probe_video(tmp_path / name)
        assert probed.value.reason == reason
        with pytest.raises(VideoDecodeError, match=name):
            read_video(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def test_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe_video(path)
    with pytest.raises(VideoDecodeError, match="tone.wav"):
        read_video(path)


def test_lavfi_sources_render_real_frames():
    from sora_jax.data.lavfi import SOURCES, render_lavfi

    for source in SOURCES:
        video = render_lavfi(source, 5, 32, 48)
        assert video.shape == (5, 32, 48, 3) and video.dtype == np.uint8
        assert video.std() > 10  # a pattern, not a blank frame
    with pytest.raises(ValueError):
        render_lavfi("noise", 5, 32, 48)


def test_tile_videos_lays_out_rows_and_pads_the_last():
    videos = np.arange(5 * 2 * 3 * 4 * 1, dtype=np.int32).reshape(5, 2, 3, 4, 1)
    grid = video_io.tile_videos(videos, columns=2)
    assert grid.shape == (2, 9, 8, 1)
    np.testing.assert_array_equal(grid[:, 0:3, 4:8], videos[1])
    np.testing.assert_array_equal(grid[:, 6:9, 0:4], videos[4])
    assert not grid[:, 6:9, 4:8].any()
    with pytest.raises(ValueError):
        video_io.tile_videos(videos[0], columns=2)
