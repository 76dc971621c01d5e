"""Draws a Shapes World clip from its labels, with 2x2-supersampled (anti-aliased) edges."""

import numpy as np

from sora_jax.data.shapes_world import scenes, vocab

# Sub-pixel sample offsets of the 2x2 supersampling grid, in pixel units.
_SUBPIXELS = np.array([0.25, 0.75])


def render_clip(labels: dict, frames: int, height: int, width: int) -> np.ndarray:
    """Returns uint8 [T, H, W, 3]; objects are drawn in label order, the wall on top of them."""
    video_TxHxWx3 = np.empty((frames, height, width, 3), np.float32)
    for shot in labels["shots"]:
        start, end = shot["start_frame"], shot["end_frame"]
        video_TxHxWx3[start:end] = vocab.BACKGROUNDS[shot["background"]]
        for obj in shot["objects"]:
            for k, centroid in enumerate(obj["centroids"]):
                if centroid is not None:
                    _paint_object(video_TxHxWx3[start + k], obj, centroid)
        if "wall" in shot:
            _paint_wall(video_TxHxWx3[start:end], shot["wall"])
    return np.clip(np.round(video_TxHxWx3), 0, 255).astype(np.uint8)


def _paint_object(frame_HxWx3: np.ndarray, obj: dict, centroid: list[float]) -> None:
    extent = obj["extent"]
    cy = centroid[0] - scenes.centroid_offset_y(obj["shape"], extent)
    height, width, _ = frame_HxWx3.shape
    coverage, (y0, y1, x0, x1) = shape_coverage(
        obj["shape"], cy, centroid[1], extent, height, width
    )
    patch = frame_HxWx3[y0:y1, x0:x1]
    color = np.asarray(vocab.COLORS[obj["color"]])
    patch[...] = patch * (1 - coverage[..., None]) + color * coverage[..., None]


def shape_coverage(shape: str, cy: float, cx: float, extent: float, height: int, width: int):
    """Anti-aliased coverage of a shape with bounding-box centre (cy, cx) inside an H x W frame.

    Returns (coverage [h, w] in [0, 1], (y0, y1, x0, x1)): the patch of the frame it touches.
    """
    half = extent / 2
    y0, y1 = max(int(np.floor(cy - half)) - 1, 0), min(int(np.ceil(cy + half)) + 1, height)
    x0, x1 = max(int(np.floor(cx - half)) - 1, 0), min(int(np.ceil(cx + half)) + 1, width)
    y1, x1 = max(y1, y0), max(x1, x0)
    ys = (np.arange(y0, y1)[:, None] + _SUBPIXELS[None, :]).reshape(-1)
    xs = (np.arange(x0, x1)[:, None] + _SUBPIXELS[None, :]).reshape(-1)
    inside = _inside(shape, ys[:, None] - cy, xs[None, :] - cx, half)
    coverage = inside.reshape(y1 - y0, 2, x1 - x0, 2).mean(axis=(1, 3))
    return coverage, (y0, y1, x0, x1)


def _inside(shape: str, dy: np.ndarray, dx: np.ndarray, half: float) -> np.ndarray:
    """Point-in-shape tests relative to the bounding-box centre."""
    if shape == "circle":
        return dy**2 + dx**2 <= half**2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "triangle":
        # Upward isosceles: apex at the top centre, base along the bottom edge.
        from_top = dy + half
        return (from_top >= 0) & (from_top <= 2 * half) & (np.abs(dx) <= from_top / 2)
    raise ValueError(f"unknown shape {shape!r}")


def _paint_wall(video_TxHxWx3: np.ndarray, wall: dict) -> None:
    width = video_TxHxWx3.shape[2]
    xs = np.arange(width)[:, None] + _SUBPIXELS[None, :]
    coverage = ((xs >= wall["x0"]) & (xs <= wall["x1"])).mean(axis=1)[None, None, :, None]
    color = np.asarray(vocab.WALL_COLORS[wall["color"]])
    video_TxHxWx3[...] = video_TxHxWx3 * (1 - coverage) + color * coverage
