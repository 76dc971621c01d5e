"""Test setup: 8 fake CPU devices, so sharding is exercised on any machine, and a private
SORA_JAX_HOME (the C2PA development chain is created there, not in the user's cache)."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["SORA_JAX_HOME"] = tempfile.mkdtemp(prefix="sora_jax_home_")
