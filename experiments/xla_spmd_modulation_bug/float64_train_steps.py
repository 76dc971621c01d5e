"""Rounding or a wrong result? Two DiT train steps per mesh in float64, against one device.

    python experiments/xla_spmd_modulation_bug/float64_train_steps.py [64|32] [2,2,2,1 ...]

(from the repository root, with sora_jax installed; meshes are data,fsdp,tensor,sequence.)

Runs the slow test's two SGD steps (tests/test_sequence_parallel.py) with every float32 in the
models computing in float64 (jax x64 on, `jnp.float32` rebound for this process only). Rounding
then shrinks by ~1e9, so a mesh whose step-2 loss still differs from one device's by more than
~1e-11 (relative) is computed wrongly. Prints each mesh's per-step loss difference and the
parameters that differ most (relative to their largest entry; the attention key biases, whose
gradient is zero in exact arithmetic, hold only rounding). `32` runs the same in float32.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
PRECISION = sys.argv[1] if len(sys.argv) > 1 else "64"
MESHES = sys.argv[2:] or ["2,2,1,1", "2,2,2,1"]
if PRECISION not in ("64", "32"):
    sys.exit(f"precision must be 64 or 32, got {PRECISION!r}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if PRECISION == "64":
    jax.config.update("jax_enable_x64", True)
    jnp.float32 = jnp.float64  # the models' explicit float32 casts compute in float64
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
from test_sequence_parallel import _two_sgd_steps  # noqa: E402

dtype = np.float64 if PRECISION == "64" else np.float32
want_losses, want_params = _two_sgd_steps((1, 1, 1, 1), "none", dtype)
for mesh in MESHES:
    degrees = tuple(int(d) for d in mesh.split(","))
    losses, params = _two_sgd_steps(degrees, "none", dtype)
    gap = np.abs(np.subtract(losses, want_losses)) / np.abs(want_losses)
    print(f"float{PRECISION} mesh {degrees}: loss relative difference per step {gap}")
    rows = []
    leaves = jax.tree_util.tree_flatten_with_path(want_params)[0]
    for (path, want), got in zip(leaves, jax.tree.leaves(params), strict=True):
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        scale = np.abs(want).max()
        rows.append(
            (np.abs(got - want).max() / max(scale, 1e-30), scale, jax.tree_util.keystr(path))
        )
    for relative, scale, name in sorted(rows, reverse=True)[:3]:
        print(f"  {name}: max difference {relative:.2e} of its largest entry ({scale:.2e})")
