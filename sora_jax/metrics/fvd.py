r"""Fréchet Video Distance between two sets of uint8 videos [B, T, H, W, 3].

Unterthiner et al., "Towards Accurate Generative Models of Video: A New Metric & Challenges",
arXiv:1812.01717 (2018): each clip is embedded by the Kinetics-400 I3D (`i3d.py`; its 400
logits), a Gaussian is fitted to each set of embeddings, and FVD is the Fréchet distance between
the two Gaussians, ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)). Lower is better; the
value depends on the number of clips (it is biased upwards for small sets), on their length and
on their resolution, so compare FVDs only across equal settings. The paper used 16-frame clips.

Preprocessing follows the reference code: every frame is resized bilinearly to 224x224 and
scaled to [-1, 1]. We resize with half-pixel centres and no antialiasing (`jax.image.resize`,
as TF2's `tf.image.resize` and PyTorch's `align_corners=False`); the reference's TF1
`resize_bilinear` used the legacy corner mapping, which shifts the image by a fraction of an
input pixel, so values differ slightly from numbers computed with that code.

Short clips: I3D needs `MIN_FRAMES` = 9 frames (time shrinks 8x before a 2-frame pool). Shorter
clips (any T >= 1) are padded by repeating their last frame -- a still tail, with no new content
or motion -- so FVDs of padded clips compare only with FVDs of clips padded the same way.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.metrics import i3d

MIN_FRAMES = i3d.MIN_FRAMES


def check_videos(videos) -> np.ndarray:
    """Returns `videos` as a uint8 array [B, T, H, W, 3] with B, T, H, W >= 1, or raises."""
    videos = np.asarray(videos)
    if videos.dtype != np.uint8:
        raise ValueError(f"FVD videos must be uint8, got {videos.dtype}")
    if videos.ndim != 5 or videos.shape[-1] != 3 or min(videos.shape) < 1:
        raise ValueError(f"FVD videos must be [B>=1, T>=1, H>=1, W>=1, 3], got {videos.shape}")
    return videos


def pad_frames(videos_BxTxHxWx3: np.ndarray) -> np.ndarray:
    """Repeats the last frame of clips shorter than `MIN_FRAMES` up to that length."""
    missing = MIN_FRAMES - videos_BxTxHxWx3.shape[1]
    if missing <= 0:
        return videos_BxTxHxWx3
    return np.pad(videos_BxTxHxWx3, ((0, 0), (0, missing), (0, 0), (0, 0), (0, 0)), mode="edge")


def preprocess(videos_BxTxHxWx3: jax.Array) -> jax.Array:
    """uint8 clips of any H, W -> float32 [B, T, 224, 224, 3] in [-1, 1], the I3D input."""
    b, t, _, _, c = videos_BxTxHxWx3.shape
    x = jnp.asarray(videos_BxTxHxWx3, jnp.float32)
    x = jax.image.resize(x, (b, t, i3d.SIZE, i3d.SIZE, c), method="bilinear", antialias=False)
    return x / 127.5 - 1.0


@functools.cache
def _embed_fn():
    """A jitted `fn(videos_uint8) -> logits` with the I3D weights bound (loaded once)."""
    variables = jax.device_put({"params": i3d.load_params()})
    model = i3d.I3D()
    # The weights are an argument, not a closure constant, so XLA does not fold 12.7M of them
    # into every compiled program.
    embed = jax.jit(lambda v, x: model.apply(v, preprocess(x)))
    return functools.partial(embed, variables)


def features(videos_BxTxHxWx3, batch_size: int = 8) -> np.ndarray:
    """I3D logits [B, 400] (float32) of uint8 clips [B, T, H, W, 3], `batch_size` at a time.

    A last partial batch is filled up with copies of its last clip (their rows dropped after),
    so a set larger than `batch_size` compiles once per clip shape.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    videos = pad_frames(check_videos(videos_BxTxHxWx3))
    embed, n = _embed_fn(), videos.shape[0]
    feats = []
    for i in range(0, n, batch_size):
        chunk = videos[i : i + batch_size]
        m = chunk.shape[0]
        if n > batch_size and m < batch_size:
            chunk = np.pad(chunk, ((0, batch_size - m),) + ((0, 0),) * 4, mode="edge")
        feats.append(np.asarray(embed(chunk))[:m])
    return np.concatenate(feats)


def _centred(feats, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], centred features [N, D]) in float64."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or f.shape[0] < 2 or not np.all(np.isfinite(f)):
        raise ValueError(f"{name} must be a finite [N>=2, D] array, got shape {f.shape}")
    mu = f.mean(axis=0)
    return mu, f - mu


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted (float64, unbiased covariance) to two sets."""
    mu_a, x_a = _centred(feats_a, "feats_a")
    mu_b, x_b = _centred(feats_b, "feats_b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    n_a, n_b = len(x_a) - 1, len(x_b) - 1  # S = X^T X / n for centred X
    # tr (S_a S_b)^(1/2) without forming either covariance: the nonzero eigenvalues of S_a S_b
    # are the squared singular values of X_a X_b^T / sqrt(n_a n_b), and X = QR keeps those while
    # shrinking X_a X_b^T to R_a R_b^T (at most D x D). Singular values are real and non-negative
    # by construction, unlike `sqrtm(S_a @ S_b)`, which turns complex or inaccurate when the
    # covariances are singular -- always so with fewer clips than the 400 logits.
    r_a, r_b = np.linalg.qr(x_a, mode="r"), np.linalg.qr(x_b, mode="r")
    tr_covmean = np.linalg.svd(r_a @ r_b.T, compute_uv=False).sum() / np.sqrt(n_a * n_b)
    mean_term = np.sum((mu_a - mu_b) ** 2)
    return float(mean_term + np.sum(x_a**2) / n_a + np.sum(x_b**2) / n_b - 2 * tr_covmean)


def fvd(videos_a, videos_b, batch_size: int = 8) -> float:
    """FVD between two sets of uint8 clips [B, T, H, W, 3], B >= 2 each (the sets may differ in
    B, H and W: every frame is resized to 224x224)."""
    return frechet_distance(features(videos_a, batch_size), features(videos_b, batch_size))
