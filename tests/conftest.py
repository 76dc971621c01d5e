"""Test setup: 8 fake CPU devices, so sharding is exercised on any machine; a private
SORA_JAX_HOME (the C2PA development chain is created there, not in the user's cache); and
compilation made cheaper, since tests are mostly compiling: XLA's CPU backend without its
expensive LLVM passes (numerics unchanged; the benchmarks measure speed with the defaults) and
one persistent compilation cache for the session's processes (the xdist workers and the command
subprocesses they start), so a program compiled once is not compiled again."""

import os
import pathlib
import tempfile

_XLA_FLAGS = (
    "--xla_force_host_platform_device_count=8",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
)
_given = os.environ.get("XLA_FLAGS", "").split()
_names = {flag.split("=")[0] for flag in _given}
os.environ["XLA_FLAGS"] = " ".join(
    _given + [f for f in _XLA_FLAGS if f.split("=")[0] not in _names]
)
os.environ["SORA_JAX_HOME"] = tempfile.mkdtemp(prefix="sora_jax_home_")
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_cache = pathlib.Path(tempfile.gettempdir()) / f"sora_jax_test_xla_{_run}" if _run else None
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(_cache) if _cache else tempfile.mkdtemp(prefix="xla_")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

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
