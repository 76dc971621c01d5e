"""Small linen layers shared by the DiT and the VAE, with logical axis names built in.

Every weight is created through `nn.with_logical_partitioning` and every block output passes
through `nn.with_logical_constraint`, so `sora_jax.sharding`'s rule tables alone decide the
layout. Names follow the rules' vocabulary (`embed`, `mlp`, `heads`, `kv`, `batch`, `length`).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sora_jax.models import mixed_precision

Initializer = Callable[..., jax.Array]
Axes = tuple[str | None, ...]


def _as_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return (x,) if isinstance(x, int) else tuple(x)


def _matrix_init(init: Initializer, n_in: int) -> Initializer:
    """Runs `init` on the kernel flattened to (fan_in, fan_out), then reshapes.

    Variance-scaling initializers read fan-in/fan-out from the last two dims, which is wrong for
    a multi-head kernel such as (embed, heads, kv).
    """

    def init_fn(key, shape, dtype=jnp.float32):
        flat = (math.prod(shape[:n_in]), math.prod(shape[n_in:]))
        return jnp.reshape(init(key, flat, dtype), shape)

    return init_fn


class Dense(nn.Module):
    """A linear map over one or more trailing input axes, with named kernel axes.

    `kernel_axes` names the kernel's dimensions: first the contracted input axes, then the
    output `features`. E.g. a q-projection x_BxNxD -> q_BxNxHxK is
    `Dense((H, K), kernel_axes=("embed", "heads", "kv"))`, and its output projection back is
    `Dense(D, kernel_axes=("heads", "kv", "embed"), axis=(-2, -1))`.
    """

    features: int | tuple[int, ...]
    kernel_axes: Axes
    axis: int | tuple[int, ...] = -1
    use_bias: bool = True
    # Computation dtype; None = promote inputs and params. bfloat16 on a CPU, contracting
    # trailing axes: bf16 operands with f32 accumulation in both passes (mixed_precision.py),
    # the result cast to bf16.
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = _as_tuple(self.features)
        axis = tuple(a % x.ndim for a in _as_tuple(self.axis))
        if len(self.kernel_axes) != len(axis) + len(features):
            raise ValueError(
                f"kernel_axes {self.kernel_axes} must name {len(axis)} input and "
                f"{len(features)} output dims"
            )
        in_shape = tuple(x.shape[a] for a in axis)
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                _matrix_init(self.kernel_init, len(axis)), self.kernel_axes
            ),
            in_shape + features,
            self.param_dtype,
        )
        bias = None
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(self.bias_init, self.kernel_axes[len(axis) :]),
                features,
                self.param_dtype,
            )
        trailing = axis == tuple(range(x.ndim - len(axis), x.ndim))
        if mixed_precision.applies_to(self.dtype) and trailing:
            # bf16 operands, f32 accumulation in the forward and backward dots.
            y = mixed_precision.dense(x, kernel, len(axis))
            return (y if bias is None else y + bias).astype(self.dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        contract = (axis, tuple(range(len(axis))))
        y = jax.lax.dot_general(x, kernel, (contract, ((), ())))
        if bias is not None:
            y = y + bias
        return y


class Mlp(nn.Module):
    """Transformer feed-forward block on x_BxNxD (or x_BxD), returning the same shape.

    `activation`: "gelu" (tanh approximation, as in DiT / PixArt) or "swiglu" (Shazeer 2020,
    "GLU Variants Improve Transformer"; give it ~2/3 the hidden width for equal parameters).
    """

    hidden_dim: int | None = None  # overrides mlp_ratio when set
    mlp_ratio: float = 4.0
    activation: str = "gelu"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = nn.initializers.xavier_uniform()

    @nn.compact
    def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
        if x_BxNxD.ndim == 3:
            act_axes = ("batch", "length")
        elif x_BxNxD.ndim == 2:  # e.g. the timestep embedder's MLP on x_BxD
            act_axes = ("batch",)
        else:
            raise ValueError(f"Mlp takes x_BxNxD or x_BxD, got shape {x_BxNxD.shape}")
        d = x_BxNxD.shape[-1]
        f = self.hidden_dim or int(round(self.mlp_ratio * d))
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init)
        if self.activation == "gelu":
            h_BxNxF = Dense(f, ("embed", "mlp"), name="wi", **dense)(x_BxNxD)
            h_BxNxF = nn.gelu(h_BxNxF, approximate=True)
        elif self.activation == "swiglu":
            gate_BxNxF = Dense(f, ("embed", "mlp"), name="wi_gate", **dense)(x_BxNxD)
            up_BxNxF = Dense(f, ("embed", "mlp"), name="wi_up", **dense)(x_BxNxD)
            h_BxNxF = nn.silu(gate_BxNxF) * up_BxNxF
        else:
            raise ValueError(f"activation must be 'gelu' or 'swiglu', got {self.activation!r}")
        # Pin the hidden layer to tensor-parallel so XLA does the Megatron split (column-parallel
        # in, row-parallel out, one reduction) rather than choosing a layout per op.
        h_BxNxF = nn.with_logical_constraint(h_BxNxF, (*act_axes, "mlp"))
        y_BxNxD = Dense(d, ("mlp", "embed"), name="wo", **dense)(h_BxNxF)
        return nn.with_logical_constraint(y_BxNxD, (*act_axes, "embed"))


class RMSNorm(nn.Module):
    """RMS norm over the last axis (Zhang & Sennrich 2019), computed in float32.

    It mixes nothing across tokens, frames or pixels, which the causal VAE's chunked processing
    relies on; the DiT uses it for QK-norm.
    """

    eps: float = 1e-6
    scale_axis: str = "norm"

    @nn.compact
    def __call__(self, x):
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, (self.scale_axis,)),
            (x.shape[-1],),
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (x32 * scale).astype(x.dtype)
