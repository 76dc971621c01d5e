r"""LPIPS perceptual distance in Flax linen, with pretrained weights from a safetensors file.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018
(arXiv:1801.03924), version 0.1 ("lpips alex" / "lpips vgg"): images in [-1, 1] are shifted and
scaled to ImageNet statistics, run through a frozen AlexNet (or VGG16) conv stack, each tapped
ReLU activation is unit-normalised over channels, the squared difference between the two images
is weighted per channel by a learned non-negative 1x1 conv, averaged over space, and the five
layers are summed.

Weights: `assets/lpips_<net>.safetensors`, written once by `convert_lpips.py` (see it for
provenance and licence) and checked against `EXPECTED_SHA256` on every load, so nothing here
unpickles. Only the AlexNet file is committed; make the VGG one (29 MB) with

    python -m sora_jax.metrics.convert_lpips --net vgg \
        --out sora_jax/metrics/assets/lpips_vgg.safetensors
"""

import functools
import importlib.resources
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.metrics import weights

# sha256 of the float16 files that `convert_lpips` writes by default.
EXPECTED_SHA256 = {
    "alex": "926edad571ae3793787c579f191cd354a52503c5cba0cdfeca1f0386100d59bd",
    "vgg": "e5f17fbabe3fdfbca96ebaaa0b4cf0ec01cccf09ac8ddd74e03135b3d89e2c2d",
}

# The LPIPS ScalingLayer: maps [-1, 1] inputs to ImageNet mean/std normalisation.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# Smallest H/W that still leaves a non-empty last feature map.
MIN_SIZE = {"alex": 31, "vgg": 16}

# (features, kernel, stride, padding, max-pool before) per torchvision AlexNet conv; each
# conv's ReLU output is one LPIPS layer.
_ALEX_CONVS = (
    (64, 11, 4, 2, False),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, True),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, False),
)
# VGG16 stages (2x2 max-pool between stages); the last ReLU of each stage is an LPIPS layer.
_VGG_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

# Full f32 convs even on GPUs that default to TF32, so metric values do not depend on hardware.
_Conv = functools.partial(nn.Conv, precision=jax.lax.Precision.HIGHEST)


class AlexNetFeatures(nn.Module):
    @nn.compact
    def __call__(self, x_NxHxWx3: jax.Array) -> list[jax.Array]:
        x, taps = x_NxHxWx3, []
        for i, (feat, k, s, p, pool) in enumerate(_ALEX_CONVS):
            if pool:
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
            x = nn.relu(
                _Conv(feat, (k, k), strides=(s, s), padding=((p, p), (p, p)), name=f"conv{i}")(x)
            )
            taps.append(x)
        return taps


class VGG16Features(nn.Module):
    @nn.compact
    def __call__(self, x_NxHxWx3: jax.Array) -> list[jax.Array]:
        x, taps, i = x_NxHxWx3, [], 0
        for stage, widths in enumerate(_VGG_STAGES):
            if stage:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for feat in widths:
                x = nn.relu(_Conv(feat, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{i}")(x))
                i += 1
            taps.append(x)
        return taps


class LPIPS(nn.Module):
    """Per-image LPIPS distance between two NHWC batches in [-1, 1]."""

    net: str = "alex"

    @nn.compact
    def __call__(self, x_NxHxWx3: jax.Array, y_NxHxWx3: jax.Array) -> jax.Array:
        backbone = {"alex": AlexNetFeatures, "vgg": VGG16Features}[self.net](name="features")
        n = x_NxHxWx3.shape[0]
        xy = jnp.concatenate([x_NxHxWx3, y_NxHxWx3]).astype(jnp.float32)
        xy = (xy - jnp.array(SHIFT)) / jnp.array(SCALE)
        d_N = jnp.zeros((n,), jnp.float32)
        for i, f in enumerate(backbone(xy)):
            # eps outside the sqrt, as in the reference, so all-zero features stay all-zero.
            f = f / (jnp.sqrt(jnp.sum(f**2, axis=-1, keepdims=True)) + 1e-10)
            diff = (f[:n] - f[n:]) ** 2
            d = _Conv(1, (1, 1), use_bias=False, name=f"lin{i}")(diff)
            d_N = d_N + jnp.mean(d, axis=(1, 2, 3))
        return d_N


def weights_path(net: str) -> Path:
    return Path(
        str(importlib.resources.files("sora_jax.metrics") / "assets" / f"lpips_{net}.safetensors")
    )


def load_params(net: str = "alex", path: str | Path | None = None) -> dict:
    """Reads and sha256-verifies the LPIPS weights; returns the Flax `params` tree (float32)."""
    if net not in EXPECTED_SHA256:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(EXPECTED_SHA256)}")
    path = Path(path) if path is not None else weights_path(net)
    remake = f"python -m sora_jax.metrics.convert_lpips --net {net} --out {path}"
    return weights.load_params(path, EXPECTED_SHA256[net], "LPIPS", remake)


@functools.cache
def get_lpips(net: str = "alex") -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns a jitted `fn(x_NxHxWx3, y_NxHxWx3) -> d_N` with the pretrained weights bound.

    Inputs are float images in [-1, 1], both of the same shape with H, W >= `MIN_SIZE[net]`.
    """
    model = LPIPS(net=net)
    variables = jax.device_put({"params": load_params(net)})
    apply = jax.jit(model.apply)

    def fn(x_NxHxWx3, y_NxHxWx3):
        if x_NxHxWx3.shape != y_NxHxWx3.shape:
            raise ValueError(
                f"LPIPS inputs differ in shape: {x_NxHxWx3.shape} vs {y_NxHxWx3.shape}"
            )
        if x_NxHxWx3.ndim != 4 or x_NxHxWx3.shape[-1] != 3:
            raise ValueError(f"LPIPS expects NHWC RGB images, got shape {x_NxHxWx3.shape}")
        if min(x_NxHxWx3.shape[1:3]) < MIN_SIZE[net]:
            raise ValueError(f"LPIPS-{net} needs H, W >= {MIN_SIZE[net]}, got {x_NxHxWx3.shape}")
        return apply(variables, x_NxHxWx3, y_NxHxWx3)

    return fn
