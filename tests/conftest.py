"""Test setup: 8 fake CPU devices, so sharding is exercised on any machine, and a private
SORA_JAX_HOME (the C2PA development chain is created there, not in the user's cache)."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["SORA_JAX_HOME"] = tempfile.mkdtemp(prefix="sora_jax_home_")

# The heaviest modules first: `--dist loadfile` hands whole files to the two workers in this
# order, so the long ones start early instead of leaving one worker busy at the end.
_HEAVY_FIRST = (
    "test_train_dit.py",
    "test_train_vae.py",
    "test_sequence_parallel.py",
    "test_vae.py",
    "test_dit.py",
    "test_plan.py",
    "test_notebooks.py",
    "test_fvd.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
