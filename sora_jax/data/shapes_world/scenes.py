"""Samples Shapes World scenes: the labels that fully describe one clip.

A scene is the labels dict of shared/SHAPES_WORLD.md (shots -> objects with per-frame centroids),
extended with what rendering needs (`extent` of each object, the `wall` of an occlusion shot).
The renderer draws pixels from these labels alone, and the captions are written from them, so a
clip's video, captions and labels always agree.
"""

import dataclasses

import numpy as np

from sora_jax.data.shapes_world import vocab

_MAX_PLACEMENT_TRIES = 64
# Wall width relative to the object extent: wider than the object so it disappears completely.
_WALL_WIDTH_FACTOR = 1.25


@dataclasses.dataclass(frozen=True)
class SceneMix:
    """Probabilities of the scene kinds (the rest are single-object, single-shot clips)."""

    two_objects: float = 0.2
    three_objects: float = 0.1
    occlusion: float = 0.1
    multi_shot: float = 0.1


DEFAULT_MIX = SceneMix()
KINDS = ("single", "two", "three", "occlusion", "multi_shot")
OCCLUSION_MOTIONS = ("moves left", "moves right")


def only(kind: str) -> SceneMix:
    """The mix that draws scenes of one kind (`KINDS`); "default" is `DEFAULT_MIX`."""
    if kind == "default":
        return DEFAULT_MIX
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected 'default' or one of {KINDS}")
    fields = ("two_objects", "three_objects", "occlusion", "multi_shot")
    return SceneMix(**{f: float(kind == k) for f, k in zip(fields, KINDS[1:], strict=True)})


def sample_scene(
    rng: np.random.Generator,
    split: str,
    frames: int,
    height: int,
    width: int,
    mix: SceneMix = DEFAULT_MIX,
) -> dict:
    """Draws the labels of one clip of `frames` x `height` x `width` from `split`."""
    check_clip_geometry(frames, height, width)
    pairs = vocab.allowed_pairs(split)
    kind = rng.choice(
        KINDS,
        p=_kind_probabilities(mix, frames, height, width),
    )
    if kind == "multi_shot":
        cuts = _sample_cuts(rng, frames)
        bounds = list(zip([0, *cuts], [*cuts, frames], strict=True))
        shots = []
        for s, e in bounds:
            shot = _sample_shot(rng, pairs, s, e, height, width, 1)
            # Each cut must be visible: a new background or a new object colour.
            while shots and not _visibly_different(shots[-1], shot):
                shot = _sample_shot(rng, pairs, s, e, height, width, 1)
            shots.append(shot)
    elif kind == "occlusion":
        shots = [_sample_occlusion_shot(rng, pairs, frames, height, width)]
    else:
        num_objects = {"single": 1, "two": 2, "three": 3}[kind]
        shots = [_sample_shot(rng, pairs, 0, frames, height, width, num_objects)]
    return {"background": shots[0]["background"], "shots": shots}


def check_clip_geometry(frames: int, height: int, width: int) -> None:
    """Raises ValueError unless frames = 1 + 4k and H, W are multiples of 16 (at least 32)."""
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames must be 1 + 4k (1, 5, 9, 17, ...), got {frames}")
    for name, size in (("height", height), ("width", width)):
        if size < 32 or size % 16:
            raise ValueError(f"{name} must be a multiple of 16 and at least 32, got {size}")


def extent_px(size: str, height: int, width: int) -> float:
    return vocab.SIZES[size] * min(height, width)


def speed_px(motion: str, speed: str | None, height: int, width: int) -> float:
    """Pixels per frame along the motion axis."""
    if speed is None:
        return 0.0
    dy, _ = vocab.MOTIONS[motion]
    return vocab.SPEEDS[speed] * (height if dy else width)


def centroid_offset_y(shape: str, extent: float) -> float:
    """Area centroid minus bounding-box centre along y: the upward triangle is bottom-heavy."""
    return extent / 6 if shape == "triangle" else 0.0


def _kind_probabilities(mix: SceneMix, frames: int, height: int, width: int) -> np.ndarray:
    occlusion = mix.occlusion if _occlusion_fits(frames, height, width) else 0.0
    multi_shot = mix.multi_shot if frames >= 9 else 0.0
    p = [0.0, mix.two_objects, mix.three_objects, occlusion, multi_shot]
    p[0] = 1.0 - sum(p)
    if p[0] < 0:
        raise ValueError(f"scene mix probabilities sum to more than 1: {mix}")
    return np.asarray(p)


def _occlusion_fits(frames: int, height: int, width: int) -> bool:
    extent = extent_px("small", height, width)
    travel = speed_px("moves right", "quickly", height, width) * (frames - 1)
    return travel >= 2 * _clearance(extent)


def _clearance(extent: float) -> float:
    """Centre-to-wall-centre distance at which an object is fully clear of the wall."""
    return extent / 2 + _WALL_WIDTH_FACTOR * extent / 2 + 1.0


def _sample_cuts(rng: np.random.Generator, frames: int) -> list[int]:
    num_cuts = 2 if frames >= 33 and rng.random() < 0.5 else 1
    return sample_cuts(rng, frames, num_cuts)


def sample_cuts(rng: np.random.Generator, frames: int, num_cuts: int) -> list[int]:
    """`num_cuts` cut frames of a `frames`-frame clip (at most as many as fit)."""
    # Cuts on 1 + 4j frame boundaries line up with the causal VAE's latent frames.
    candidates = [c for c in range(5, frames - 3, 4)]
    return sorted(
        int(c) for c in rng.choice(candidates, size=min(num_cuts, len(candidates)), replace=False)
    )


def _visibly_different(shot_a: dict, shot_b: dict) -> bool:
    colors_a = {o["color"] for o in shot_a["objects"]}
    colors_b = {o["color"] for o in shot_b["objects"]}
    return shot_a["background"] != shot_b["background"] or colors_a != colors_b


def _sample_attributes(rng: np.random.Generator, pairs, num_objects: int, still: bool) -> list:
    """Distinct-colour objects: the probe tells objects apart by colour."""
    chosen: list[tuple[str, str]] = []
    order = rng.permutation(len(pairs))
    for i in order:
        if all(pairs[i][0] != c for c, _ in chosen):
            chosen.append(pairs[i])
        if len(chosen) == num_objects:
            break
    objects = []
    for color, shape in chosen:
        motion = vocab.STILL if still else str(rng.choice(list(vocab.MOTIONS)))
        speed = None if motion == vocab.STILL else str(rng.choice(list(vocab.SPEEDS)))
        size = str(rng.choice(list(vocab.SIZES)))
        objects.append(
            {"color": color, "shape": shape, "size": size, "motion": motion, "speed": speed}
        )
    return objects


def _sample_shot(rng, pairs, start, end, height, width, num_objects) -> dict:
    background = str(rng.choice(list(vocab.BACKGROUNDS)))
    still = end - start == 1  # a single image cannot show motion
    for _ in range(_MAX_PLACEMENT_TRIES):
        objects = _sample_attributes(rng, pairs, num_objects, still)
        tracks = [_sample_track(rng, o, end - start, height, width) for o in objects]
        if not _any_overlap(tracks, objects, height, width):
            break
    else:
        # Crowded frame: keep the first object only, which always fits.
        objects, tracks = objects[:1], tracks[:1]
    return _shot(objects, tracks, background, start, end, height, width)


def _shot(objects, tracks, background, start, end, height, width) -> dict:
    return {
        "start_frame": start,
        "end_frame": end,
        "background": background,
        "objects": [
            _finish_object(o, c, start, end, height, width, None)
            for o, c in zip(objects, tracks, strict=True)
        ],
    }


def _sample_track(rng, obj, length, height, width) -> np.ndarray:
    """Bounding-box centres [length, 2] (y, x); the object stays fully visible when it can."""
    extent = extent_px(obj["size"], height, width)
    half = extent / 2
    dy, dx = vocab.MOTIONS[obj["motion"]]
    step = speed_px(obj["motion"], obj["speed"], height, width)
    travel = step * (length - 1)
    start = []
    for direction, span in ((dy, height), (dx, width)):
        if direction == 0:
            start.append(rng.uniform(half, span - half))
            continue
        slack = span - 2 * half - travel
        # Past the default clip length the object may have to leave the frame: start it at the
        # trailing edge so it is visible for as long as possible.
        offset = rng.uniform(0, slack) if slack > 0 else 0.0
        start.append(half + offset if direction > 0 else span - half - offset)
    t = np.arange(length)[:, None]
    return np.asarray(start)[None, :] + t * step * np.asarray([dy, dx])[None, :]


def _any_overlap(tracks, objects, height, width) -> bool:
    margin = 2.0
    halves = [extent_px(o["size"], height, width) / 2 for o in objects]
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            gap = np.abs(tracks[i] - tracks[j]) - (halves[i] + halves[j] + margin)
            if np.any(np.all(gap < 0, axis=1)):
                return True
    return False


def _sample_occlusion_shot(rng, pairs, frames, height, width) -> dict:
    background = str(rng.choice(list(vocab.BACKGROUNDS)))
    obj = _sample_attributes(rng, pairs, 1, still=False)[0]
    obj.update(size="small", speed="quickly", motion=str(rng.choice(OCCLUSION_MOTIONS)))
    return place_occlusion_shot(rng, obj, background, frames, height, width)


def place_occlusion_shot(rng, obj: dict, background: str, frames, height, width) -> dict:
    """The occlusion shot of `obj` (a small object moving left or right quickly): its start
    position and the wall it passes behind, drawn from `rng`."""
    if (
        obj["size"] != "small"
        or obj["speed"] != "quickly"
        or obj["motion"] not in OCCLUSION_MOTIONS
    ):
        raise ValueError(
            "Shapes World occlusion shots show one small object moving left or right quickly"
        )
    extent = extent_px("small", height, width)
    track = _sample_track(rng, obj, frames, height, width)
    # Only the part of the path where the object is fully in frame can frame the wall.
    xs = np.clip(track[:, 1], extent / 2, width - extent / 2)
    lo, hi = min(xs[0], xs[-1]) + _clearance(extent), max(xs[0], xs[-1]) - _clearance(extent)
    # Keep the wall's centre where the object starts and ends fully clear of it.
    wall_x = rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2
    wall_half = _WALL_WIDTH_FACTOR * extent / 2
    wall = {
        "x0": round(wall_x - wall_half, 2),
        "x1": round(wall_x + wall_half, 2),
        "color": vocab.wall_name(background),
    }
    return {
        "start_frame": 0,
        "end_frame": frames,
        "background": background,
        "wall": wall,
        "objects": [_finish_object(obj, track, 0, frames, height, width, wall)],
    }


def place_shot(rng, objects: list[dict], background: str, start, end, height, width) -> dict:
    """The shot of frames start..end showing `objects` (color, shape, size, motion, speed) on
    `background`, with start positions drawn from `rng` so that no two objects overlap."""
    # Fixed attributes (three large movers) can need many draws; sample_scene redraws those.
    for _ in range(16 * _MAX_PLACEMENT_TRIES):
        tracks = [_sample_track(rng, o, end - start, height, width) for o in objects]
        if not _any_overlap(tracks, objects, height, width):
            break
    else:
        raise ValueError(
            f"{len(objects)} objects of these sizes do not fit a {height}x{width} frame"
        )
    return _shot(objects, tracks, background, start, end, height, width)


def _finish_object(obj, track, start, end, height, width, wall) -> dict:
    """Adds the label fields: extent, per-frame area centroids and occluded frames."""
    extent = extent_px(obj["size"], height, width)
    half = extent / 2
    centroids, occluded = [], []
    for k, (cy, cx) in enumerate(track):
        in_frame = -half < cy < height + half and -half < cx < width + half
        behind = wall is not None and wall["x0"] < cx + half and cx - half < wall["x1"]
        fully_hidden = wall is not None and wall["x0"] <= cx - half and cx + half <= wall["x1"]
        if behind:
            occluded.append(start + k)
        if in_frame and not fully_hidden:
            cy_area = cy + centroid_offset_y(obj["shape"], extent)
            centroids.append([round(float(cy_area), 2), round(float(cx), 2)])
        else:
            centroids.append(None)
    return {**obj, "extent": round(extent, 4), "occluded_frames": occluded, "centroids": centroids}
