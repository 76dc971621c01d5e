"""Video files in and out (mp4, mov, webm, gif) with PyAV, which ships its own ffmpeg.

Used at both ends of the data flow: the video-folder source reads training clips with
`probe_video`/`read_video`, and sampling writes uint8 `[T,H,W,3]` results with `write_video`.
Frames are always RGB uint8 in (T, H, W, C) order. Every failure to read a file that exists is a
`VideoDecodeError` whose `reason` is a short code a data source can count skips by.
"""

import dataclasses
import math
import numbers
import os
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# suffix -> (muxer, encoder, pixel format, encoder options).
_FORMATS = {
    # crf 17 is near visually lossless, so a write/read round trip stays close to the input.
    ".mp4": ("mp4", "libx264", "yuv420p", {"crf": "17"}),
    ".mov": ("mov", "libx264", "yuv420p", {"crf": "17"}),
    # b:v 0 puts libvpx in constant-quality mode, where crf alone sets the quality.
    ".webm": ("webm", "libvpx-vp9", "yuv420p", {"crf": "20", "b:v": "0", "cpu-used": "5"}),
    # GIF holds 256 colors per frame; `_pal8_frame` picks them per frame.
    ".gif": ("gif", "gif", "pal8", {}),
}
# Moves the mp4/mov index to the front: players can stream the file, and a file cut short keeps
# its header, so `probe_video` can tell it is truncated by counting packets against it.
WRITABLE_SUFFIXES = tuple(sorted(_FORMATS))
_MUXER_OPTIONS = {"mp4": {"movflags": "+faststart"}, "mov": {"movflags": "+faststart"}}

# Skip reasons, shared with data sources that count skipped files by reason.
EMPTY = "empty"
UNREADABLE = "unreadable"  # not a media file, no video stream, or cut before its index
TRUNCATED = "truncated"  # the header promises more frames than the file holds
CORRUPT = "corrupt"  # opens, but frames fail to decode or there are none


class VideoDecodeError(ValueError):
    """A file that exists could not be read as a video; `reason` is one of the codes above."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        super().__init__(f"{os.fspath(path)}: {reason}: {detail}")
        self.path, self.reason, self.detail = os.fspath(path), reason, detail

    def __reduce__(self):  # survives pickling, e.g. out of a Grain worker process
        return type(self), (self.path, self.reason, self.detail)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learns from a file's header and packet timestamps."""

    num_frames: int
    fps: float
    height: int
    width: int
    duration_s: float


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_video(path: str | os.PathLike, frames_TxHxWx3: np.ndarray, fps: float = 8) -> None:
    """Writes uint8 RGB frames to `path`; the suffix picks the format (.mp4/.mov/.webm/.gif, or
    .png for a single frame).

    H.264 in yuv420p needs even sizes, so mp4/mov frames with an odd height or width are padded by
    repeating the last row/column: the file then reads back one pixel larger on that side. (A
    4:4:4 stream would keep odd sizes but most browsers and players cannot play it.) GIF and webm
    keep odd sizes as they are.

    The file is written under a temporary name in the same directory and renamed into place, so
    a failure never leaves a partial file, nor clobbers an existing one.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None and path.suffix.lower() != ".png":
        raise ValueError(
            f"{path}: unsupported suffix; expected one of {sorted(_FORMATS)} or .png (one frame)"
        )
    frames_TxHxWx3 = _check_frames(frames_TxHxWx3)
    if fmt is None:
        if len(frames_TxHxWx3) != 1:
            raise ValueError(f"{path}: a .png holds one frame, got {len(frames_TxHxWx3)}")
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            Image.fromarray(frames_TxHxWx3[0]).save(tmp, format="PNG")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    if not (isinstance(fps, numbers.Real) and 0 < fps < math.inf):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if fmt[1] == "libx264":
        frames_TxHxWx3 = _pad_to_even(frames_TxHxWx3)
    # Hidden, unique and in the same directory: `os.replace` is then an atomic rename.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _encode(tmp, frames_TxHxWx3, Fraction(fps).limit_denominator(10_000), *fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def tile_videos(videos_BxTxHxWx3: np.ndarray, columns: int) -> np.ndarray:
    """Lays same-shape videos out in a grid [T, rows*H, columns*W, 3], row by row.

    A last row with fewer than `columns` videos is filled with black.
    """
    videos = np.asarray(videos_BxTxHxWx3)
    if videos.ndim != 5 or not len(videos) or columns < 1:
        raise ValueError(f"need videos [B>0,T,H,W,C], columns >= 1; got {videos.shape}, {columns}")
    rows = -(-len(videos) // columns)
    padded = np.zeros((rows * columns, *videos.shape[1:]), videos.dtype)
    padded[: len(videos)] = videos
    b, t, h, w, c = padded.shape
    grid = padded.reshape(rows, columns, t, h, w, c).transpose(2, 0, 3, 1, 4, 5)
    return grid.reshape(t, rows * h, columns * w, c)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {frames.shape}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must hold at least one non-empty frame, got {frames.shape}")
    return frames


def _pad_to_even(frames_TxHxWx3: np.ndarray) -> np.ndarray:
    _, height, width, _ = frames_TxHxWx3.shape
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    return np.pad(frames_TxHxWx3, pad, mode="edge") if any(p[1] for p in pad) else frames_TxHxWx3


def _encode(
    path: Path,
    frames_TxHxWx3: np.ndarray,
    rate: Fraction,
    muxer: str,
    codec: str,
    pix_fmt: str,
    options: dict[str, str],
) -> None:
    with av.open(os.fspath(path), "w", format=muxer, options=_MUXER_OPTIONS.get(muxer)) as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.height, stream.width = frames_TxHxWx3.shape[1:3]
        stream.pix_fmt = pix_fmt
        for i, frame_HxWx3 in enumerate(frames_TxHxWx3):
            frame = _to_av_frame(frame_HxWx3, pix_fmt)
            # Explicit timestamps in units of 1/fps, so the muxer writes a constant frame rate.
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))  # flush delayed (B-)frames


def _to_av_frame(frame_HxWx3: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    if pix_fmt == "pal8":
        return _pal8_frame(frame_HxWx3)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_HxWx3), format="rgb24")


def _pal8_frame(frame_HxWx3: np.ndarray) -> av.VideoFrame:
    """A 256-color frame with its own palette: far closer than the fixed 3-3-2 `rgb8` palette."""
    image = Image.fromarray(frame_HxWx3).quantize(256, method=Image.Quantize.MEDIANCUT)
    rgb_Px3 = np.asarray(image.getpalette(), np.uint8).reshape(-1, 3)
    # PyAV takes 256 palette entries as A, R, G, B bytes (and swaps them for ffmpeg if needed).
    argb_256x4 = np.zeros((256, 4), np.uint8)
    argb_256x4[:, 0] = 255
    argb_256x4[: len(rgb_Px3), 1:] = rgb_Px3
    return av.VideoFrame.from_ndarray((np.asarray(image), argb_256x4), format="pal8")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def num_resampled_frames(duration_s: float, fps: float) -> int:
    """How many frames a clip of `duration_s` has at `fps`: rounded to nearest, at least one.

    Rounding (as ffmpeg's fps filter does) rather than ceiling keeps timestamp jitter, such as
    GIF's 1/100 s delays, from adding a frame.
    """
    return max(1, math.floor(duration_s * fps + 0.5))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file (png, jpg, ...) as uint8 RGB [H, W, 3].

    Raises FileNotFoundError for a missing path and `VideoDecodeError` for an unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, ValueError) as e:
        raise VideoDecodeError(path, UNREADABLE, f"not an image ({e})") from e


def read_video(
    path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None
) -> tuple[np.ndarray, float]:
    """Decodes a video to uint8 `[T, H, W, 3]` and returns it with the source frame rate.

    With `fps`, the clip is resampled in time: output frame k is the source frame whose
    presentation timestamp is nearest to k / fps (the earlier one on a tie), which drops or
    repeats frames; there are `num_resampled_frames(duration, fps)` of them. `max_frames` keeps
    only the first frames of the result and stops decoding once they are known.

    Raises FileNotFoundError for a missing path and `VideoDecodeError` for a file that cannot be
    read as a video, including one cut short or whose frames fail to decode part way.
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    with _open(path) as container:
        stream = container.streams.video[0]
        frames, times_s, num_packets, stopped = [], [], 0, False
        try:
            for packet in container.demux(stream):
                _check_packet(path, packet)
                num_packets += packet.size > 0  # size 0: the demuxer's end-of-stream marker
                for frame in packet.decode():
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times_s.append(_time_s(frame.pts, frame.time_base, len(times_s), stream))
                if frames and _enough(len(frames), times_s[-1] - times_s[0], fps, max_frames):
                    stopped = True
                    break
        except av.FFmpegError as e:
            raise VideoDecodeError(
                path, CORRUPT, f"frame {len(frames)} fails to decode: {e}"
            ) from e
        if not stopped:
            _check_count(path, num_packets, stream)
        if not frames:
            raise VideoDecodeError(path, CORRUPT, "no frame decodes")
        source_fps = _rate(stream, times_s)
    order = np.argsort(times_s, kind="stable")  # decoders emit display order; be safe anyway
    frames_TxHxWx3 = np.stack([frames[i] for i in order])
    if fps is None:
        return frames_TxHxWx3[:max_frames], source_fps
    times_s = np.asarray(times_s)[order] - min(times_s)
    num_out = num_resampled_frames(_duration_s(times_s, source_fps), fps)
    if max_frames is not None:
        num_out = min(num_out, max_frames)
    return frames_TxHxWx3[nearest_frames(times_s, np.arange(num_out) / fps)], source_fps


def _enough(num_frames: int, time_s: float, fps: float | None, max_frames: int | None) -> bool:
    """Whether decoding can stop: past `max_frames / fps` no frame is nearest to a kept one."""
    if max_frames is None:
        return False
    return num_frames >= max_frames if fps is None else time_s >= max_frames / fps


def nearest_frames(times_s: np.ndarray, targets_s: np.ndarray) -> np.ndarray:
    """For each target time, the index of the nearest sorted source time (earlier on a tie)."""
    if len(times_s) == 1:
        return np.zeros(len(targets_s), np.int64)
    after = np.clip(np.searchsorted(times_s, targets_s), 1, len(times_s) - 1)
    before = after - 1
    # A nanosecond of slack turns float round-off on exact ties into a tie.
    take_before = targets_s - times_s[before] <= times_s[after] - targets_s + 1e-9
    return np.where(take_before, before, after)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, rate, size and duration, from the header and packet timestamps.

    Reads every packet but decodes only the first frame: cheap, yet it catches files that are
    garbage, cut short (fewer packets than the header promises, or a partial last packet) or
    whose frames do not decode. The frame count and duration are computed from the packets the
    same way `read_video` computes them from frames, so the two agree.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        times_s, first = [], None
        try:
            for packet in container.demux(stream):
                _check_packet(path, packet)
                if first is None:  # decoders may hold a few packets back (B-frames)
                    first = next(iter(packet.decode()), None)
                if packet.size:  # size 0: the demuxer's end-of-stream marker
                    times_s.append(_time_s(packet.pts, packet.time_base, len(times_s), stream))
        except av.FFmpegError as e:
            raise VideoDecodeError(path, CORRUPT, f"demuxing or decoding fails: {e}") from e
        _check_count(path, len(times_s), stream)
        if first is None:
            raise VideoDecodeError(path, CORRUPT, "no frame decodes")
        times_s = np.sort(times_s)
        fps = _rate(stream, times_s)
        return VideoInfo(
            num_frames=len(times_s),
            fps=fps,
            height=first.height,
            width=first.width,
            duration_s=_duration_s(times_s, fps),
        )


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such video file: {os.fspath(path)}")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, EMPTY, "the file is empty")
    try:
        container = av.open(os.fspath(path))
    except av.FFmpegError as e:
        raise VideoDecodeError(path, UNREADABLE, f"not a readable video container: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, UNREADABLE, "no video stream")
    return container


def _check_packet(path: str | os.PathLike, packet: av.Packet) -> None:
    if packet.is_corrupt:  # the demuxer flags a packet that the end of the file cuts short
        raise VideoDecodeError(path, TRUNCATED, f"the packet at byte {packet.pos} is cut short")


def _check_count(path: str | os.PathLike, num_packets: int, stream) -> None:
    """A file cut between two packets has no partial packet, only fewer than its header says."""
    if stream.frames and num_packets < stream.frames:
        raise VideoDecodeError(
            path, TRUNCATED, f"{num_packets} of the {stream.frames} frames are present"
        )


def _time_s(pts: int | None, time_base: Fraction | None, index: int, stream) -> float:
    if pts is None or time_base is None:  # raw streams carry no timestamps: assume constant rate
        return index / float(stream.guessed_rate or stream.average_rate or 1)
    return float(pts * time_base)


def _rate(stream, times_s) -> float:
    """The stream's nominal rate; measured from timestamps when the header has none."""
    rate = stream.guessed_rate or stream.average_rate
    if rate:
        return float(rate)
    if len(times_s) > 1 and times_s[-1] > times_s[0]:
        return (len(times_s) - 1) / (times_s[-1] - times_s[0])
    return 1.0


def _duration_s(times_s: np.ndarray, fps: float) -> float:
    """From the first frame's start to the last frame's end, the last lasting a mean interval."""
    if len(times_s) < 2:
        return 1 / fps
    span = float(times_s[-1] - times_s[0])
    return span + span / (len(times_s) - 1)
