"""Test setup: 8 fake CPU devices, so sharding is exercised on any machine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
