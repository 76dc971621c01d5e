"""The Shapes World probe: reads the prompted attributes back out of a video's pixels.

Given a video (uint8 [T,H,W,3]) and its short prompt, the probe splits the video into the prompted
number of shots, reads each shot's background and, for every object colour present, its shape
(fill ratio of the colour mask in its bounding box), size (mask extent vs frame), motion and speed
(centroid displacement between the first and last fully visible frames) and, for occlusion
prompts, whether the object vanishes and reappears unchanged. Prompted objects are matched to the
detected ones (colour first, then best agreement), and prompt adherence is the fraction of
prompted attributes read back correctly. It judges generated videos, so it never sees labels.
"""

import itertools

import numpy as np

from sora_jax.data.shapes_world import render, scenes, vocab
from sora_jax.data.shapes_world.captions import parse_caption

_OBJECT_NAMES = list(vocab.COLORS)
_CLASS_NAMES = _OBJECT_NAMES + list(vocab.BACKGROUNDS) + [f"wall:{w}" for w in vocab.WALL_COLORS]
_CLASS_RGB = np.asarray(
    [*vocab.COLORS.values(), *vocab.BACKGROUNDS.values(), *vocab.WALL_COLORS.values()], np.float32
)
_NUM_OBJECT_CLASSES = len(_OBJECT_NAMES)
_BACKGROUND_CLASSES = np.arange(_NUM_OBJECT_CLASSES, _NUM_OBJECT_CLASSES + len(vocab.BACKGROUNDS))
# Anti-aliased edge pixels blend two colours; such a blend can land nearer to a third palette
# colour (half red + half white is nearest to pink), so only near-pure pixels count as object.
_PURE_RGB_DISTANCE = 50.0
# Shape fill ratios: circle pi/4, square 1, triangle 1/2; the boundaries sit between them.
_FILL_TRIANGLE_CIRCLE, _FILL_CIRCLE_SQUARE = 0.64, 0.89
_SHAPE_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
# Below this extent (pixels) a fill ratio on the pixel grid is too coarse to tell shapes apart,
# so the probe fits anti-aliased templates of the three shapes instead.
_MIN_EXTENT_FOR_FILL_RATIO = 12
_SIZE_BOUNDARY = (vocab.SIZES["small"] + vocab.SIZES["large"]) / 2
_STILL_FRACTION = 1 / 16
_SPEED_BOUNDARY = (vocab.SPEEDS["slowly"] + vocab.SPEEDS["quickly"]) / 2
_FULLY_VISIBLE = 0.9  # of the object's largest per-frame area
_HIDDEN = 0.1


def classify_pixels(video_TxHxWx3: np.ndarray) -> np.ndarray:
    """Nearest Shapes World colour index per pixel, or -1 for impure object-colour pixels."""
    rgb = video_TxHxWx3.astype(np.float32)
    dist_TxHxWxK = np.linalg.norm(rgb[..., None, :] - _CLASS_RGB, axis=-1)
    nearest = dist_TxHxWxK.argmin(-1)
    impure = (nearest < _NUM_OBJECT_CLASSES) & (dist_TxHxWxK.min(-1) > _PURE_RGB_DISTANCE)
    return np.where(impure, -1, nearest)


def probe(video_TxHxWx3: np.ndarray, prompt: str) -> dict:
    """Reads `video` against `prompt`; returns per-shot readings, cuts and adherence."""
    video_TxHxWx3 = np.asarray(video_TxHxWx3)
    if video_TxHxWx3.ndim != 4 or video_TxHxWx3.shape[-1] != 3:
        raise ValueError(f"expected a video [T,H,W,3], got shape {video_TxHxWx3.shape}")
    prompted_shots = parse_caption(prompt)
    classes_TxHxW = classify_pixels(video_TxHxWx3)
    frames, height, width = classes_TxHxW.shape
    min_area = 0.3 * 0.5 * (vocab.SIZES["small"] * min(height, width)) ** 2
    cuts = _detect_cuts(classes_TxHxW, len(prompted_shots), min_area)
    bounds = list(zip([0, *cuts], [*cuts, frames], strict=True))
    shots, scores = [], {}
    for prompted, (start, end) in zip(prompted_shots, bounds, strict=True):
        shot = _read_shot(classes_TxHxW[start:end], video_TxHxWx3[start:end], prompted, min_area)
        shot.update(
            start_frame=start,
            end_frame=end,
            background_correct=shot["background"] == prompted["background"],
        )
        shots.append(shot)
        scores.setdefault("background", []).append(shot["background_correct"])
        for obj in shot["objects"]:
            for attribute, ok in obj["correct"].items():
                scores.setdefault(attribute, []).append(ok)
    return {"shots": shots, "cuts": cuts, **_scored(scores)}


def restrict(reading: dict, stated: list[dict]) -> dict:
    """`reading` scored on the attributes a prompt stated only (prompt expansion filled in the
    rest): `stated` per shot is {"background": bool, "objects": [{attribute: bool}]}; shape and
    reappearance are always stated (a prompt names its shapes, and a wall only when asked)."""
    scores = {}
    for shot, said in zip(reading["shots"], stated, strict=True):
        if said["background"]:
            scores.setdefault("background", []).append(shot["background_correct"])
        for obj, said_obj in zip(shot["objects"], said["objects"], strict=True):
            for attribute, ok in obj["correct"].items():
                if said_obj.get(attribute, True):
                    scores.setdefault(attribute, []).append(ok)
    return {**reading, **_scored(scores)}


def _scored(scores: dict[str, list[bool]]) -> dict:
    num_correct = sum(sum(v) for v in scores.values())
    num_prompted = sum(len(v) for v in scores.values())
    return {
        "attributes": {k: float(np.mean(v)) for k, v in scores.items()},
        "counts": {k: [int(np.sum(v)), len(v)] for k, v in scores.items()},  # [correct, prompted]
        "num_correct": int(num_correct),
        "num_prompted": int(num_prompted),
        "adherence": num_correct / num_prompted,
    }


def describe(reading: dict) -> str:
    """One line of what `probe` read, per shot and object, naming the attributes it found wrong."""
    parts = []
    for s, shot in enumerate(reading["shots"]):
        prefix = f"shot {s + 1}: " if len(reading["shots"]) > 1 else ""
        objects = []
        for obj in shot["objects"]:
            got = obj["detected"]
            if got is None:
                objects.append("(not found)")
                continue
            words = [got["size"], got["color"], got["shape"], got["motion"], got["speed"] or ""]
            if obj["prompted"]["occluded"]:
                words.append("reappears" if got["reappears"] else "does not reappear")
            wrong = [a for a, ok in obj["correct"].items() if not ok]
            objects.append(
                " ".join(w for w in words if w) + (f" [wrong: {wrong}]" if wrong else "")
            )
        parts.append(prefix + "; ".join(objects) + f" on {shot['background']}")
    return " | ".join(parts)


def _color_areas(classes_TxHxW: np.ndarray) -> np.ndarray:
    """Per-frame pixel count of each object colour: [T, num_colors]."""
    one_hot = classes_TxHxW[..., None] == np.arange(_NUM_OBJECT_CLASSES)
    return one_hot.sum(axis=(1, 2))


def _background_of(classes_TxHxW: np.ndarray) -> str:
    counts = [(classes_TxHxW == c).sum() for c in _BACKGROUND_CLASSES]
    return list(vocab.BACKGROUNDS)[int(np.argmax(counts))]


def _detect_cuts(classes_TxHxW: np.ndarray, num_shots: int, min_area: float) -> list[int]:
    """The `num_shots - 1` frame boundaries where the scene changes most.

    A cut changes the background or the set of object colours; the fraction of pixels whose
    colour class changes breaks ties and catches cuts that keep both.
    """
    if num_shots == 1:
        return []
    frames = classes_TxHxW.shape[0]
    present = _color_areas(classes_TxHxW) >= min_area
    backgrounds = [_background_of(f[None]) for f in classes_TxHxW]
    score = np.zeros(frames)
    for t in range(1, frames):
        score[t] = (
            2.0 * (backgrounds[t] != backgrounds[t - 1])
            + np.sum(present[t] != present[t - 1])
            + np.mean(classes_TxHxW[t] != classes_TxHxW[t - 1])
        )
    score[0] = -np.inf
    return sorted(int(t) for t in np.argsort(-score, kind="stable")[: num_shots - 1])


def _read_shot(
    classes_TxHxW: np.ndarray, video_TxHxWx3: np.ndarray, prompted: dict, min_area: float
) -> dict:
    areas_TxK = _color_areas(classes_TxHxW)
    background = _background_of(classes_TxHxW)
    detected = []
    for k in range(_NUM_OBJECT_CLASSES):
        if areas_TxK[:, k].max() >= min_area:
            coverage_TxHxW = _soft_coverage(classes_TxHxW, video_TxHxWx3, k, background)
            detected.append(_read_object(coverage_TxHxW, _OBJECT_NAMES[k]))
    matches = _match(prompted["objects"], detected)
    objects = []
    for want, got in zip(prompted["objects"], matches, strict=True):
        correct = {
            a: got is not None and got[a] == want[a] for a in ("color", "shape", "size", "motion")
        }
        if want["speed"]:
            correct["speed"] = got is not None and got["speed"] == want["speed"]
        if want["occluded"]:
            correct["reappears"] = got is not None and got["reappears"]
        objects.append({"prompted": want, "detected": got, "correct": correct})
    return {
        "background": background,
        "objects": objects,
        "extra_colors": [d["color"] for d in detected if d not in matches],
    }


def _soft_coverage(classes_TxHxW, video_TxHxWx3, k: int, background: str) -> np.ndarray:
    """Fraction of each pixel covered by the object of colour `k`, in [0, 1].

    Pure pixels count fully; impure pixels touching them are unmixed against the background
    colour. Sub-pixel coverage keeps fill ratios and areas exact enough for objects a few pixels
    wide, where a hard mask cannot tell a small circle from a triangle.
    """
    pure = classes_TxHxW == k
    # A pixel a quarter covered can sit next to a half-covered (impure) one: look 2 pixels out.
    near = _dilate(_dilate(pure))
    # Blended edge pixels are classed as impure or as background, never as another object.
    unmixable = pure | (classes_TxHxW == -1) | np.isin(classes_TxHxW, _BACKGROUND_CLASSES)
    color = np.asarray(vocab.COLORS[_OBJECT_NAMES[k]], np.float32)
    base = np.asarray(vocab.BACKGROUNDS[background], np.float32)
    direction = color - base
    alpha = (video_TxHxWx3.astype(np.float32) - base) @ direction / (direction @ direction)
    return np.where(near & unmixable, np.clip(alpha, 0.0, 1.0), 0.0)


def _dilate(mask_TxHxW: np.ndarray) -> np.ndarray:
    """3x3 binary dilation in space."""
    out = mask_TxHxW.copy()
    out[:, 1:] |= mask_TxHxW[:, :-1]
    out[:, :-1] |= mask_TxHxW[:, 1:]
    rows = out.copy()
    out[:, :, 1:] |= rows[:, :, :-1]
    out[:, :, :-1] |= rows[:, :, 1:]
    return out


def _read_object(coverage_TxHxW: np.ndarray, color: str) -> dict:
    frames, height, width = coverage_TxHxW.shape
    area_T = coverage_TxHxW.sum(axis=(1, 2))
    full = np.flatnonzero(area_T >= _FULLY_VISIBLE * area_T.max())
    fills, extents, centroids = [], [], []
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5  # pixel centres
    for t in full:
        cov = coverage_TxHxW[t]
        # Sub-pixel bounding box: the widest row and the tallest column of the coverage.
        box_w, box_h = cov.sum(axis=1).max(), cov.sum(axis=0).max()
        fills.append(area_T[t] / (box_h * box_w))
        extents.append(max(box_h, box_w) / min(height, width))
        centroids.append((cov.sum(1) @ ys / area_T[t], cov.sum(0) @ xs / area_T[t]))
    fill, extent = float(np.median(fills)), float(np.median(extents))
    if extent * min(height, width) >= _MIN_EXTENT_FOR_FILL_RATIO:
        shape = (
            "triangle"
            if fill < _FILL_TRIANGLE_CIRCLE
            else "circle"
            if fill < _FILL_CIRCLE_SQUARE
            else "square"
        )
    else:
        votes = [
            _best_template(coverage_TxHxW[t], area_T[t], c)
            for t, c in zip(full, centroids, strict=True)
        ]
        shape = max(vocab.SHAPES, key=votes.count)
    motion, speed = _read_motion(centroids[0], centroids[-1], full[-1] - full[0], height, width)
    return {
        "color": color,
        "shape": shape,
        "size": "small" if extent < _SIZE_BOUNDARY else "large",
        "motion": motion,
        "speed": speed,
        "reappears": _reappears(area_T),
        "fill_ratio": round(fill, 3),
        "extent": round(extent, 3),
        "first_full_frame": int(full[0]),
        "last_full_frame": int(full[-1]),
    }


def _best_template(coverage_HxW: np.ndarray, area: float, centroid) -> str:
    """The shape whose anti-aliased rendering, at the observed area and centroid, fits best."""
    height, width = coverage_HxW.shape
    errors = {}
    for shape, fill in _SHAPE_FILL.items():
        extent = float(np.sqrt(area / fill))
        cy = centroid[0] - scenes.centroid_offset_y(shape, extent)
        template, (y0, y1, x0, x1) = render.shape_coverage(
            shape, cy, centroid[1], extent, height, width
        )
        rendered = np.zeros_like(coverage_HxW)
        rendered[y0:y1, x0:x1] = template
        errors[shape] = np.abs(rendered - coverage_HxW).sum()
    return min(errors, key=errors.get)


def _read_motion(first, last, num_steps, height, width) -> tuple[str, str | None]:
    dy, dx = last[0] - first[0], last[1] - first[1]
    # 1/16 of the frame as SHAPES_WORLD.md says; a shot too short for a slow object to cover
    # that much uses half the slow displacement instead, so short shots can still move.
    still = min(_STILL_FRACTION, 0.5 * vocab.SPEEDS["slowly"] * max(num_steps, 1))
    if abs(dy) / height < still and abs(dx) / width < still:
        return vocab.STILL, None
    if abs(dx) / width >= abs(dy) / height:
        motion, per_frame = ("moves right" if dx > 0 else "moves left"), abs(dx) / width
    else:
        motion, per_frame = ("moves down" if dy > 0 else "moves up"), abs(dy) / height
    per_frame /= max(num_steps, 1)
    return motion, "quickly" if per_frame >= _SPEED_BOUNDARY else "slowly"


def _reappears(area_T: np.ndarray) -> bool:
    """Fully visible, then hidden, then fully visible again."""
    full = area_T >= _FULLY_VISIBLE * area_T.max()
    hidden = area_T <= _HIDDEN * area_T.max()
    full_idx, hidden_idx = np.flatnonzero(full), np.flatnonzero(hidden)
    return bool(any(full_idx[0] < h < full_idx[-1] for h in hidden_idx)) if len(full_idx) else False


def _match(prompted: list[dict], detected: list[dict]) -> list[dict | None]:
    """Assigns detected objects to prompted ones: same colour first, then most attributes agreed."""

    def agreement(want, got):
        return 10 * (want["color"] == got["color"]) + sum(
            want[a] == got[a] for a in ("shape", "size", "motion")
        )

    padded = detected + [None] * len(prompted)
    best, best_score = None, -1
    for perm in itertools.permutations(range(len(padded)), len(prompted)):
        score = sum(
            agreement(w, padded[i])
            for w, i in zip(prompted, perm, strict=True)
            if padded[i] is not None
        )
        if score > best_score:
            best, best_score = perm, score
    return [padded[i] for i in best]
