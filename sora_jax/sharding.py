"""Device meshes and logical-axis rules: the one place that decides how arrays are laid out.

Models never name mesh axes. Every weight carries logical axis names
(`nn.with_logical_partitioning`) and every block-boundary activation a logical constraint
(`nn.with_logical_constraint`); the rule tables below map those names onto the
`('data', 'fsdp', 'tensor', 'sequence')` mesh (the MaxText / Flax-partitioning scheme). The DiT
and the VAE have separate tables (as in MaxDiffusion) because a conv stack wants different
parallelism than a transformer.

DIT_RULES (transformer over spacetime tokens, text via cross-attention)::

    logical name   dimension                                     mesh axes
    ------------   -------------------------------------------   -----------------
    batch          examples (activations)                        ('data', 'fsdp')
    length         video tokens N (activations)                  'sequence'
    text_length    text tokens L (activations)                   None
    embed          model width D (weights; activations lose it)  'fsdp'
    text_embed     text-encoder width Dt (cross-attn k/v input)  'fsdp'
    mlp            MLP hidden width F                            'tensor'
    heads          attention heads H                             'tensor'
    kv             per-head width K                              None
    adaln          adaLN-Zero modulation outputs (6 x D)         'tensor'
    vocab          token vocabulary (small text encoder)         'tensor'
    patch          pt*ph*pw*c of one latent patch                None
    freq           sinusoidal timestep / clip-place features     None
    norm           LayerNorm / RMSNorm scales                    None
    layers         scanned block axis                            None
    frames         latent frames t (before patchify)             'sequence'
    height, width  latent rows / columns                         None
    channels       latent channels                               None

VAE_RULES (causal 3D conv autoencoder, activations x_BxTxHxWxC)::

    logical name   dimension                                     mesh axes
    ------------   -------------------------------------------   -----------------
    batch          examples                                      ('data', 'fsdp')
    frames         frames T                                      'sequence'
    height, width  rows H / columns W                            None
    channels       activation channels C                         None
    conv_in        conv kernel input channels                    'fsdp'
    conv_out       conv kernel output channels                   'tensor'
    kernel_t/h/w   conv kernel taps                              None
    latent         latent channels c                             None
    embed          width inside the mid-block attention          'fsdp'
    heads          attention heads                               'tensor'
    kv             per-head width                                None
    length         tokens of the mid-block attention             'sequence'
    norm           GroupNorm / RMSNorm scales                    None
    layers         scanned block axis                            None

Order matters: Flax assigns rules first to last and never gives one mesh axis to two dimensions
of the same array. `batch` comes first, so an activation `(batch, length, embed)` is sharded
over (data, fsdp) on its batch dimension and replicated on `embed`, while a weight
`(embed, mlp)` (which has no batch) is FSDP-sharded on `embed`. A name missing from the table
means "replicated".

Always enter the mesh with `jax.set_mesh(mesh)` (see `mesh_context`): the old `with mesh:` no
longer sets the abstract mesh that Flax checks, so logical constraints silently become no-ops.
"""

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

# Mesh axes an input batch is split over. `sequence` is left out: every device in a sequence
# group holds the whole example and the model constrains its tokens onto `sequence` itself.
BATCH_AXES = ("data", "fsdp")

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

DIT_RULES: LogicalRules = (
    ("batch", BATCH_AXES),
    ("length", "sequence"),
    ("text_length", None),
    ("embed", "fsdp"),
    ("text_embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("adaln", "tensor"),
    ("vocab", "tensor"),
    ("patch", None),
    ("freq", None),
    ("norm", None),
    ("layers", None),
    ("frames", "sequence"),
    ("height", None),
    ("width", None),
    ("channels", None),
)

VAE_RULES: LogicalRules = (
    ("batch", BATCH_AXES),
    ("frames", "sequence"),
    ("height", None),
    ("width", None),
    ("channels", None),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("kernel_t", None),
    ("kernel_h", None),
    ("kernel_w", None),
    ("latent", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("length", "sequence"),
    ("norm", None),
    ("layers", None),
)


def make_mesh(degrees: Mapping[str, int] | Any, devices: Sequence[Any] | None = None):
    """Builds the `('data', 'fsdp', 'tensor', 'sequence')` mesh from per-axis degrees.

    Args:
      degrees: axis name -> degree (a dict or an ml_collections ConfigDict such as
        `config.mesh`). Missing axes get 1; at most one axis may be -1, meaning "all devices the
        other axes leave".
      devices: the devices to lay out; all of `jax.devices()` by default.

    Returns:
      A `jax.sharding.Mesh` with `AxisType.Auto` on every axis (jax's default is Explicit,
      which the logical-rules scheme does not use).
    """
    devices = list(jax.devices() if devices is None else devices)
    # ConfigDict is not a collections.abc.Mapping but has `.items()`.
    given = {name: int(value) for name, value in degrees.items()}
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; the mesh axes are {MESH_AXES}")
    shape = [given.get(name, 1) for name in MESH_AXES]
    if any(d == 0 or d < -1 for d in shape):
        raise ValueError(f"mesh degrees must be positive or -1, got {_named(shape)}")
    fill = [i for i, d in enumerate(shape) if d == -1]
    if len(fill) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {_named(shape)}")
    if fill:
        rest = math.prod(d for d in shape if d != -1)
        if len(devices) % rest:
            raise ValueError(
                f"cannot fill axis {MESH_AXES[fill[0]]!r}: {len(devices)} devices are not "
                f"divisible by the other degrees' product {rest}"
            )
        shape[fill[0]] = len(devices) // rest
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh degrees {_named(shape)} multiply to {math.prod(shape)}, "
            f"but there are {len(devices)} devices"
        )
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    try:
        return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=auto, devices=devices)
    except NotImplementedError:
        # No layout of this shape keeps every physical torus axis whole (e.g. 8 x 8 on a 4x4x4
        # v5p slice): let mesh axes span parts of physical axes.
        grid = mesh_utils.create_device_mesh(tuple(shape), devices, allow_split_physical_axes=True)
        return jax.sharding.Mesh(grid, MESH_AXES, axis_types=auto)


def _named(shape: Sequence[int]) -> dict[str, int]:
    return dict(zip(MESH_AXES, shape, strict=True))


@contextlib.contextmanager
def mesh_context(mesh: jax.sharding.Mesh, rules: LogicalRules | None = None) -> Iterator[None]:
    """The context every trace of a sharded model must run in: the mesh plus the rules."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules or ()):
        yield


def logical_shardings(tree: Any, mesh: jax.sharding.Mesh, rules: LogicalRules) -> Any:
    """Maps a (possibly abstract) tree boxed with logical names to `NamedSharding`s.

    Unboxed leaves become replicated. The result has the structure of the unboxed tree.
    """
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, rules)


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) axis over ('data', 'fsdp'); the other `ndim - 1` axes replicated."""
    if ndim == 0:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def sharded_init(
    init_fn: Callable[..., Any], mesh: jax.sharding.Mesh, rules: LogicalRules, *args
) -> tuple[Any, Any]:
    """Initializes directly into shards, never materializing the full tree on one device.

    The canonical Flax pattern: `eval_shape` the init for its logical names, turn them into
    shardings, then `jit(init, out_shardings=...)`. `init_fn(*args)` may return any tree with
    logically boxed leaves (`model.init(...)`, or a whole train state built from boxed params,
    whose optimizer moments inherit the boxes).

    Returns:
      (variables with the boxes removed, the matching tree of `NamedSharding`s).
    """
    with mesh_context(mesh, rules):
        abstract = jax.eval_shape(init_fn, *args)
        shardings = logical_shardings(abstract, mesh, rules)
        unboxed_init = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)
        variables = unboxed_init(*args)
    return variables, shardings


def host_copy(tree: Any) -> Any:
    """Numpy copies of (possibly multi-host sharded) arrays, whole and equal on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (a no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def agree_max(value: int) -> int:
    """The largest of `value` over all processes (each process must call it, in step)."""
    if jax.process_count() == 1:
        return int(value)
    return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def host_to_global(batch: Any, mesh: jax.sharding.Mesh) -> Any:
    """Turns this process's slice of a numpy batch (a pytree) into global `jax.Array`s.

    Every leaf's leading axis is this process's share of the global batch; the global batch is
    their concatenation over processes, sharded by `batch_sharding`.
    """

    def to_global(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree.map(to_global, batch)


class MeshJitted:
    """A jitted function whose every call and `lower` run inside `mesh_context`.

    Tracing is what reads the mesh and the logical rules, so both must be live whenever jax
    might trace; wrapping the calls means callers cannot forget.
    """

    def __init__(self, jitted: Callable[..., Any], mesh: jax.sharding.Mesh, rules: LogicalRules):
        self.jitted, self.mesh, self.rules = jitted, mesh, rules

    def __call__(self, *args, **kwargs):
        with mesh_context(self.mesh, self.rules):
            return self.jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with mesh_context(self.mesh, self.rules):
            return self.jitted.lower(*args, **kwargs)
