"""A Grain random-access source over a folder of captioned videos (mp4, webm, mov, gif).

Layout: video files anywhere under `root` (names starting with "." are ignored), each captioned by
a line `{"file": "<path relative to root>", "caption": "..."}` in `root/captions.jsonl` or, failing
that, by a `.txt` file with the same stem next to it.

The constructor probes every video once (`video_io.probe_video`: header, packets, first frame) and
keeps those that are readable, captioned and long enough; every other file is logged once and
listed in `skipped` under its reason (`empty`, `unreadable`, `truncated`, `corrupt`, `no_caption`,
`too_short`). Each kept clip gets a fixed (T, H, W) shape from the file alone: the bucket with the
nearest aspect ratio and the longest allowed frame count that fits its duration at `fps`, so
`bucket_ids` are known before any decoding and a pipeline can batch same-shape clips together.

Contract of `source[i]`: either `{"video": uint8 [T,H,W,3], "caption": str, "file": str}`, the
centered T-frame window resampled to `fps`, resized to cover (H, W) and center-cropped; or, when the
file cannot be read at load time although it passed the scan (changed or damaged since, or it
yields fewer frames than the scan counted), `{"skipped": reason, "file": str}`. It never raises for
a bad file: the pipeline replaces skipped examples and `read_failures` counts them by reason.
"""

import collections
import dataclasses
import json
import math
import os
import threading
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image

from sora_jax import video_io

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".gif")
CAPTIONS_FILE = "captions.jsonl"
NO_CAPTION = "no_caption"
TOO_SHORT = "too_short"


@dataclasses.dataclass(frozen=True)
class _Clip:
    file: str  # relative to the root, "/"-separated
    caption: str
    shape_id: int  # index into `VideoFolderSource.shapes`
    start: int  # first frame of the centered window, at the target fps


class VideoFolderSource:
    """Grain `RandomAccessDataSource` of captioned clips bucketed by (T, H, W); see the module."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fps: float,
        frame_counts: Sequence[int],
        buckets: Sequence[tuple[int, int]],
        scan_threads: int = 4,
        require_captions: bool = True,
    ):
        _check_shapes(fps, frame_counts, buckets)
        self.root = Path(root)
        self.fps = fps
        self.frame_counts = tuple(sorted(frame_counts))
        self.buckets = tuple(tuple(b) for b in buckets)
        self.require_captions = require_captions  # False: uncaptioned clips get "" (to caption)
        # Every (T, H, W) a clip can get; `bucket_ids` index it, so ids do not depend on content.
        self.shapes = tuple((t, h, w) for t in self.frame_counts for h, w in self.buckets)
        self._clips, self.skipped = self._scan(scan_threads)
        self.bucket_ids = np.asarray([c.shape_id for c in self._clips], np.int32)
        # Clips that passed the scan but failed to load, by reason; Grain may load from threads.
        self.read_failures: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        if not self._clips:
            raise ValueError(f"no usable video under {self.root}; skipped: {self.skip_counts}")
        logging.info("%s: %d clips, skipped %s", self.root, len(self._clips), self.skip_counts)

    # -- scanning --------------------------------------------------------------------------

    def _scan(self, threads: int) -> tuple[list[_Clip], dict[str, list[str]]]:
        files = _video_files(self.root)
        captions = _read_captions_jsonl(self.root / CAPTIONS_FILE)
        with futures.ThreadPoolExecutor(max(1, threads)) as pool:
            probes = list(pool.map(_probe, [self.root / f for f in files]))
        clips, skipped = [], collections.defaultdict(list)
        for file, probe in zip(files, probes, strict=True):
            clip_or_reason = self._clip(file, probe, captions)
            if isinstance(clip_or_reason, str):
                logging.warning("skipping %s: %s", self.root / file, clip_or_reason)
                skipped[clip_or_reason].append(file)
            else:
                clips.append(clip_or_reason)
        return clips, dict(skipped)

    def _clip(
        self, file: str, probe: video_io.VideoInfo | str, captions: dict[str, str]
    ) -> _Clip | str:
        """The clip for `file`, or why it is skipped."""
        if isinstance(probe, str):
            return probe
        caption = captions.get(file) or _read_sidecar(self.root / file)
        if not caption and self.require_captions:
            return NO_CAPTION
        available = video_io.num_resampled_frames(probe.duration_s, self.fps)
        fitting = [t for t in self.frame_counts if t <= available]
        if not fitting:
            return TOO_SHORT
        frames = fitting[-1]
        height, width = nearest_aspect(probe.height, probe.width, self.buckets)
        shape_id = self.shapes.index((frames, height, width))
        return _Clip(file, caption, shape_id, start=(available - frames) // 2)

    # -- the data source protocol ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self._clips):
            raise IndexError(f"clip {index} out of range for {len(self._clips)} clips")
        clip = self._clips[index]
        frames, height, width = self.shapes[clip.shape_id]
        try:
            video_TxHxWx3, _ = video_io.read_video(
                self.root / clip.file, fps=self.fps, max_frames=clip.start + frames
            )
        except video_io.VideoDecodeError as e:
            return self._failed(clip.file, e.reason)
        except OSError as e:  # deleted, moved or made unreadable since the scan
            missing = isinstance(e, FileNotFoundError)
            return self._failed(clip.file, "missing" if missing else video_io.UNREADABLE)
        video_TxHxWx3 = video_TxHxWx3[clip.start : clip.start + frames]
        if len(video_TxHxWx3) < frames:
            return self._failed(clip.file, video_io.TRUNCATED)
        return {
            "video": np.stack([cover_crop(f, height, width) for f in video_TxHxWx3]),
            "caption": clip.caption,
            "file": clip.file,
        }

    def _failed(self, file: str, reason: str) -> dict:
        with self._lock:
            self.read_failures[reason] += 1
        return {"skipped": reason, "file": file}

    # -- introspection ---------------------------------------------------------------------

    def bucket_of(self, index: int) -> tuple[int, int, int]:
        """The (T, H, W) shape of clip `index`."""
        return self.shapes[self.bucket_ids[index]]

    @property
    def files(self) -> list[str]:
        return [c.file for c in self._clips]

    @property
    def num_skipped(self) -> int:
        return sum(len(files) for files in self.skipped.values())

    @property
    def skip_counts(self) -> dict[str, int]:
        return {reason: len(files) for reason, files in sorted(self.skipped.items())}

    @property
    def num_read_failures(self) -> int:
        return sum(self.read_failures.values())

    def __getstate__(self) -> dict:  # picklable for Grain worker processes: locks are not
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __repr__(self) -> str:
        return (
            f"VideoFolderSource({os.fspath(self.root)!r}, fps={self.fps}, "
            f"{len(self)} clips, {self.num_skipped} skipped)"
        )


def nearest_aspect(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest in log ratio (so 2:1 and 1:2 are equally far
    from 1:1); the first listed wins a tie."""
    distances = [abs(math.log((w / h) / (width / height))) for h, w in buckets]
    return tuple(buckets[int(np.argmin(distances))])


def cover_crop(frame_HxWx3: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scales a frame to cover (height, width), keeping its aspect ratio, and center-crops it.

    Done in one resampling pass: PIL resizes just the centered source box with the target's
    aspect ratio, with subpixel box edges, so nothing is lost to rounding an intermediate size.
    """
    src_height, src_width = frame_HxWx3.shape[:2]
    if (src_height, src_width) == (height, width):
        return frame_HxWx3
    scale = max(height / src_height, width / src_width)
    box_w, box_h = width / scale, height / scale
    box = (
        (src_width - box_w) / 2,
        (src_height - box_h) / 2,
        (src_width + box_w) / 2,
        (src_height + box_h) / 2,
    )
    image = Image.fromarray(frame_HxWx3).resize((width, height), Image.Resampling.LANCZOS, box)
    return np.asarray(image)


def _check_shapes(fps: float, frame_counts: Sequence[int], buckets: Sequence[tuple[int, int]]):
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    # 1 + 4k frames: the causal VAE keeps the first frame and compresses the rest 4x in time.
    if not frame_counts or any(t < 1 or (t - 1) % 4 for t in frame_counts):
        raise ValueError(f"frame_counts must be a non-empty list of 1 + 4k, got {frame_counts}")
    if len(set(frame_counts)) != len(frame_counts) or len(set(map(tuple, buckets))) != len(buckets):
        raise ValueError(f"duplicate frame_counts or buckets: {frame_counts}, {buckets}")
    if not buckets or any(s < 16 or s % 16 for b in buckets for s in b):
        raise ValueError(f"buckets must be (H, W) pairs of positive multiples of 16, got {buckets}")


def _video_files(root: Path) -> list[str]:
    """Video files under `root` as sorted relative paths; hidden files and folders are left out
    (editor temp files, macOS `._*` forks, `write_video`'s unfinished files)."""
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_SUFFIXES:
                files.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(files)


def _probe(path: Path) -> video_io.VideoInfo | str:
    """The file's `VideoInfo`, or the reason it cannot be used."""
    try:
        return video_io.probe_video(path)
    except video_io.VideoDecodeError as e:
        return e.reason
    except OSError:
        return video_io.UNREADABLE


def _read_captions_jsonl(path: Path) -> dict[str, str]:
    """{relative file: caption}; a malformed line is an error, not a silently uncaptioned clip."""
    if not path.exists():
        return {}
    captions = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            file, caption = record["file"], record["caption"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path}:{line_number}: expected "
                f'{{"file": ..., "caption": ...}}, got {line[:200]!r}'
            ) from e
        captions[Path(os.path.normpath(file)).as_posix()] = str(caption).strip()
    return captions


def _read_sidecar(video: Path) -> str:
    sidecar = video.with_suffix(".txt")
    return sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""
