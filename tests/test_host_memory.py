"""host_memory.py: with freed memory kept in the process, repeated jitted calls stop
page-faulting XLA's scratch."""

import os
import subprocess
import sys

import pytest

_FAULTS = """
import resource, sys
import jax, jax.numpy as jnp
from sora_jax import host_memory
if sys.argv[1] == "retain":
    assert host_memory.retain_freed_memory()
f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x.T) @ x))  # ~17 MiB of scratch a call
x = jnp.ones((4096, 512))
f(x).block_until_ready()
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    f(x).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_retained_memory_stops_per_call_page_faults():
    """Without the setting glibc maps XLA's scratch afresh every call (a page fault per 4 KiB
    page); with it the scratch is reused."""

    env = {k: v for k, v in os.environ.items() if k != "SORA_JAX_SYSTEM_MALLOC"}

    def faults(mode):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return int(out.stdout.split()[-1])

    system, retained = faults("system"), faults("retain")
    assert system > 3 * 3_000  # seen: 3 calls x 4,352 pages of 4 KiB
    assert retained < system / 10
