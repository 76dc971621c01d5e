"""Fidelity and perceptual metrics between two uint8 videos of shape (T, H, W, 3).

- `psnr`: over all frames and pixels at once (one MSE per video).
- `squared_error_by_frame`: the MSE of each frame, for PSNR by frame index over a data set.
- `squared_error_by_region`: squared errors summed at edges (pixels whose 3x3 neighbourhood
  holds another value) and elsewhere, for PSNR by region over a data set.
- `ssim`: Wang et al., "Image Quality Assessment: From Error Visibility to Structural Similarity",
  IEEE TIP 2004 -- 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, "valid" filtering
  (no padding, as in the reference MATLAB code), computed per RGB channel, averaged over channels
  and pixels per frame, then over frames. Equal to scikit-image's `structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)`.
- `lpips_video`: LPIPS (see `lpips.py`) per frame, averaged over frames.
"""

import numpy as np

from sora_jax.metrics import lpips


def _check_videos(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"videos must be uint8, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"videos must be (T, H, W, 3), got {a.shape}")
    return a, b


def psnr(a, b, max_val: float = 255.0) -> float:
    """PSNR in dB of video `b` against `a`, from one MSE over all frames, pixels and channels.

    Identical videos give `inf`; to average over a data set, take the capped value of the
    same MSE from `psnr_from_mse` (100 dB), since one `inf` swamps the mean.
    """
    # Every frame has as many pixels, so the mean of the per-frame errors is the video's MSE.
    mse = np.mean(squared_error_by_frame(a, b))
    return float(psnr_from_mse(mse, max_val, cap=np.inf))


def squared_error_by_frame(a, b) -> np.ndarray:
    """The mean squared error of each frame of `b` against `a`: shape (T,)."""
    a, b = _check_videos(a, b)
    return np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))


def edge_mask(video) -> np.ndarray:
    """(T, H, W) bool: the pixels whose 3x3 neighbourhood in their frame holds another RGB
    value (frame borders are extended, so they are not edges by themselves)."""
    v = np.asarray(video)
    _, height, width, _ = v.shape
    padded = np.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    mask = np.zeros(v.shape[:3], bool)
    for dy in range(3):
        for dx in range(3):  # the centre (1, 1) equals itself and adds nothing
            mask |= np.any(padded[:, dy : dy + height, dx : dx + width] != v, axis=-1)
    return mask


def squared_error_by_region(a, b) -> dict[str, float | int]:
    """Squared errors of `b` against `a` summed over the edge pixels of `a` (`edge_mask`) and
    over the rest, with the number of values in each: {"edges", "edge_values", "flat",
    "flat_values"}. Pool these over videos, then `psnr_from_mse` of sum / values. Telling
    for flat-colour content like Shapes World; in natural video nearly every pixel is an
    edge by this definition."""
    a, b = _check_videos(a, b)
    error = np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=-1)
    edges = edge_mask(a)
    return {
        "edges": float(error[edges].sum()),
        "edge_values": 3 * int(edges.sum()),
        "flat": float(error[~edges].sum()),
        "flat_values": 3 * int((~edges).sum()),
    }


def psnr_from_mse(mse, max_val: float = 255.0, cap: float = 100.0) -> np.ndarray:
    """PSNR in dB of mean squared errors, capped (an exact match would be `inf`)."""
    mse = np.asarray(mse, np.float64)
    with np.errstate(divide="ignore"):
        return np.minimum(10 * np.log10(max_val**2 / mse), cap)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x_THWC: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering over H and W with the 1-D window `g`."""
    k = len(g)
    x = np.lib.stride_tricks.sliding_window_view(x_THWC, k, axis=1) @ g
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=2) @ g


def ssim(a, b, max_val: float = 255.0) -> float:
    """Mean over frames of per-frame SSIM (RGB channel maps averaged); 1.0 for identical videos."""
    a, b = _check_videos(a, b)
    g = _gaussian_window()
    if min(a.shape[1:3]) < len(g):
        raise ValueError(f"SSIM needs H, W >= {len(g)}, got {a.shape}")
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean(axis=(1, 2, 3)).mean())


def lpips_video(a, b, net: str = "alex", frames_per_batch: int = 32) -> float:
    """LPIPS between corresponding frames, averaged over frames; 0.0 for identical videos."""
    a, b = _check_videos(a, b)
    fn = lpips.get_lpips(net)
    to_unit = lambda v: v.astype(np.float32) / 127.5 - 1.0  # uint8 -> [-1, 1]
    d_T = [
        np.asarray(fn(to_unit(a[i : i + frames_per_batch]), to_unit(b[i : i + frames_per_batch])))
        for i in range(0, a.shape[0], frames_per_batch)
    ]
    return float(np.concatenate(d_T).mean())
