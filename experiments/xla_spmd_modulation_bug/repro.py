"""A wrong result from XLA's SPMD partitioner (jax 0.10.2, CPU, GSPMD and Shardy alike).

    python experiments/xla_spmd_modulation_bug/repro.py

On a (data 2, fsdp 2, tensor 2) mesh, an adaLN-style block (a modulation tensor sliced into
shift and gate, and an output projection sharded over (tensor, fsdp)) comes out wrong; the
same function on one device, or with the modulation constrained to the batch sharding, is
right. `sora_jax.models.dit.DiTBlock` and the DiT's final layer carry that constraint for this
reason; `float64_train_steps.py` tells this kind of error from rounding on whole train steps.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

B, N, D, H, K = 8, 16, 64, 8, 8
auto = (jax.sharding.AxisType.Auto,) * 3
mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=auto)
batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def block(x, w_mod, w_out, constrain):
    mod = jnp.einsum("bnd,dse->bnse", x, w_mod)
    if constrain:
        mod = jax.lax.with_sharding_constraint(mod, batch)
    shift, gate = mod[:, :, 0], mod[:, :, 2]
    h = (x + shift).reshape(B, N, H, K)
    return gate * jnp.einsum("bnhk,hkd->bnd", h, w_out)


rng = np.random.default_rng(0)
x = rng.normal(size=(B, N, D)).astype(np.float32)
w_mod = 0.1 * rng.normal(size=(D, 3, D)).astype(np.float32)
w_out = 0.1 * rng.normal(size=(H, K, D)).astype(np.float32)
want = block(x, w_mod, w_out, constrain=False)
in_shardings = (
    batch,
    NamedSharding(mesh, PartitionSpec()),
    NamedSharding(mesh, PartitionSpec("tensor", None, "fsdp")),
)
for shardy in (True, False):
    jax.config.update("jax_use_shardy_partitioner", shardy)
    for constrain in (False, True):
        step = jax.jit(lambda *a, c=constrain: block(*a, c), in_shardings=in_shardings)
        error = float(np.abs(np.asarray(step(x, w_mod, w_out)) - want).max())
        print(f"shardy={shardy} constrained={constrain}: max error {error:.2e}")
