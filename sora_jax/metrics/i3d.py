r"""Inception-3D (I3D) in Flax linen, the Kinetics-400 video classifier behind FVD.

Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset",
CVPR 2017 (arXiv:1705.07750): Inception-v1 with every 2-D conv and pool inflated to 3-D, trained
on RGB Kinetics-400 clips of 224x224 pixels in [-1, 1]. Convs and max-pools use TensorFlow's
"SAME" padding (the extra pixel of an odd total goes at the end), as DeepMind's Sonnet model did.

Output: the 400 class logits, averaged over the time positions left after the last pool. FVD
(Unterthiner et al. 2018, arXiv:1812.01717) embeds clips with exactly this layer -- the default
output of the TF-Hub module `deepmind/i3d-kinetics-400/1` its reference code calls -- so FVD
values stay comparable with published ones; the 1024-d pooled `Mixed_5c` features would be
richer but define a different metric.

The conv+BatchNorm pairs are inference-only here, so `convert_i3d.py` folds each BatchNorm into
its conv (a kernel scale and a bias); every unit below is a biased conv and a ReLU.

Weights: `assets/i3d_kinetics400.safetensors`, written once by `convert_i3d.py` (see it for
provenance, licence and parity) and checked against `EXPECTED_SHA256` on every load.
"""

import importlib.resources
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.metrics import weights

# sha256 of the float16 file that `convert_i3d` writes by default.
EXPECTED_SHA256 = "afc71673447e1073f4e420a5a85c61e73c709b004ac103d5e8b24c8ad147016d"

SIZE = 224  # the last pool is a fixed 7x7 window: exactly 1x1 at 224x224 input
# Time shrinks to ceil(T / 8) before the last pool, whose window is 2 frames long.
MIN_FRAMES = 9

# Widths of the four branches of each Inception block: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 |
# 3x3x3 max-pool -> 1x1, as (b0, b1 reduce, b1, b2 reduce, b2, b3); outputs are concatenated.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": ceil(size / stride) outputs, the odd pixel of padding at the end."""
    total = max((-(-size // stride) - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


class Conv3D(nn.Module):
    """3-D conv with bias and "SAME" padding, run as one 2-D conv over all output frames with
    the kernel's temporal taps stacked on the channels. Same params (`kernel` [kt, kh, kw, C, F],
    `bias`) and results as `nn.Conv`, but XLA:CPU runs 3-D convs ~1.8x slower than this, and the
    3-channel 7x7x7 stem ~7x slower (tests and CPU evals spend their time in I3D)."""

    features: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)

    @nn.compact
    def __call__(self, x_BxTxHxWxC: jax.Array) -> jax.Array:
        b, t, h, w, c = x_BxTxHxWxC.shape
        kt, st = self.kernel[0], self.stride[0]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (*self.kernel, c, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        t_out = -(-t // st)
        x = jnp.pad(x_BxTxHxWxC, ((0, 0), _same_padding(t, kt, st), (0, 0), (0, 0), (0, 0)))
        taps = [x[:, dt : dt + (t_out - 1) * st + 1 : st] for dt in range(kt)]
        x_NxHxWxKC = jnp.concatenate(taps, axis=-1).reshape(b * t_out, h, w, kt * c)
        kernel_2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(*self.kernel[1:], kt * c, -1)
        y = jax.lax.conv_general_dilated(
            x_NxHxWxKC,
            kernel_2d,
            self.stride[1:],
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            # Full f32 even on GPUs that default to TF32, so FVD does not depend on the hardware.
            precision=jax.lax.Precision.HIGHEST,
        )
        return y.reshape(b, t_out, *y.shape[1:]) + bias


def _max_pool(x: jax.Array, window: tuple[int, int, int], stride: tuple[int, int, int]):
    return nn.max_pool(x, window, strides=stride, padding="SAME")


def _unit(x, features: int, kernel, name: str, stride=(1, 1, 1)) -> jax.Array:
    """Conv (BatchNorm folded in) + ReLU; call inside a compact method, which owns the conv."""
    return nn.relu(Conv3D(features, kernel, stride, name=name)(x))


class Mixed(nn.Module):
    widths: tuple[int, int, int, int, int, int]

    @nn.compact
    def __call__(self, x_BxTxHxWxC: jax.Array) -> jax.Array:
        w0, w1a, w1, w2a, w2, w3 = self.widths
        x = x_BxTxHxWxC
        b0 = _unit(x, w0, (1, 1, 1), "b0_1x1")
        b1 = _unit(_unit(x, w1a, (1, 1, 1), "b1_1x1"), w1, (3, 3, 3), "b1_3x3")
        b2 = _unit(_unit(x, w2a, (1, 1, 1), "b2_1x1"), w2, (3, 3, 3), "b2_3x3")
        b3 = _unit(_max_pool(x, (3, 3, 3), (1, 1, 1)), w3, (1, 1, 1), "b3_1x1")
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
    """Kinetics logits [B, num_classes] of clips [B, T, 224, 224, 3] in [-1, 1], T >= 9."""

    num_classes: int = 400

    @nn.compact
    def __call__(self, x_BxTxHxWx3: jax.Array) -> jax.Array:
        _, t, h, w, c = x_BxTxHxWx3.shape
        if (h, w, c) != (SIZE, SIZE, 3) or t < MIN_FRAMES:
            raise ValueError(
                f"I3D needs clips [B, T>={MIN_FRAMES}, {SIZE}, {SIZE}, 3], got {x_BxTxHxWx3.shape}"
            )
        x = _unit(x_BxTxHxWx3, 64, (7, 7, 7), "Conv3d_1a_7x7", stride=(2, 2, 2))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = _unit(x, 64, (1, 1, 1), "Conv3d_2b_1x1")
        x = _unit(x, 192, (3, 3, 3), "Conv3d_2c_3x3")
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        for name, widths in _MIXED.items():
            # Downsample before the 4x and 5x stages (time too, from here on).
            if name == "Mixed_4b":
                x = _max_pool(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = _max_pool(x, (2, 2, 2), (2, 2, 2))
            x = Mixed(widths, name=name)(x)
        x_BxTtx1x1x1024 = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
        logits = Conv3D(self.num_classes, (1, 1, 1), name="Logits")(x_BxTtx1x1x1024)
        return jnp.mean(logits, axis=(1, 2, 3))


def weights_path() -> Path:
    assets = importlib.resources.files("sora_jax.metrics") / "assets"
    return Path(str(assets / "i3d_kinetics400.safetensors"))


def load_params(path: str | Path | None = None) -> dict:
    """Reads and sha256-verifies the I3D weights; returns the Flax `params` tree (float32)."""
    path = Path(path) if path is not None else weights_path()
    remake = f"python -m sora_jax.metrics.convert_i3d --out {path}"
    return weights.load_params(path, EXPECTED_SHA256, "I3D", remake)
