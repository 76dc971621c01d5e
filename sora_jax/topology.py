"""Accelerator topologies for ahead-of-time planning: the devices to compile for and their limits.

`sora-jax plan --topology T` accepts a TPU slice (`v5p-128`, `v5e-256`, or libtpu's own
`v5p:4x4x4` form) or `cpu:N`. A TPU slice is compiled for with the real TPU compiler when the
optional `libtpu` package is installed (`pip install -e '.[tpu]'`); without it the plan falls back
to N fake CPU devices of the same count, whose memory figures are only indicative (the CPU compiler
fuses and schedules differently), while the memory limit and peak FLOP/s stay the TPU's.

Per-device figures are public spec-sheet numbers (dense bf16 peak, HBM capacity). A v4 slice
exposes each chip's two TensorCores as two devices; v5p chips are one (megacore) device each.
"""

import dataclasses
import importlib.util
import math
import re

import jax

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    name: str
    hbm_bytes: int
    peak_bf16_flops: float  # per device, dense


TPU_SPECS = {
    "v4": DeviceSpec("TPU v4 (one TensorCore)", 16 * GIB, 137.5e12),
    "v5e": DeviceSpec("TPU v5e", 16 * GIB, 197e12),
    "v5p": DeviceSpec("TPU v5p", 95 * GIB, 459e12),
    "v6e": DeviceSpec("TPU v6e", 32 * GIB, 918e12),
}

# Slice names (`v5p-128`: 128 TensorCores for v4/v5p, 256 chips for v5e/v6e) -> libtpu topology.
SLICES = {
    "v4-8": "v4:2x2x1",
    "v4-16": "v4:2x2x2",
    "v4-32": "v4:2x2x4",
    "v4-64": "v4:2x4x4",
    "v4-128": "v4:4x4x4",
    "v5p-8": "v5p:2x2x1",
    "v5p-16": "v5p:2x2x2",
    "v5p-32": "v5p:2x2x4",
    "v5p-64": "v5p:2x4x4",
    "v5p-128": "v5p:4x4x4",
    "v5p-256": "v5p:4x4x8",
    "v5p-512": "v5p:4x8x8",
    "v5e-8": "v5e:2x4",
    "v5e-16": "v5e:4x4",
    "v5e-32": "v5e:4x8",
    "v5e-64": "v5e:8x8",
    "v5e-128": "v5e:8x16",
    "v5e-256": "v5e:16x16",
    "v6e-8": "v6e:2x4",
    "v6e-16": "v6e:4x4",
    "v6e-64": "v6e:8x8",
    "v6e-256": "v6e:16x16",
}


@dataclasses.dataclass(frozen=True)
class Target:
    """What a plan compiles for."""

    name: str  # as the user wrote it
    devices: list  # jax devices (TPU topology devices, or CPU devices)
    spec: DeviceSpec | None  # None for a plain CPU target: no memory limit, no peak
    compiler: str  # "tpu" or "cpu"
    note: str  # caveats the report must print


def libtpu_available() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def _parse(name: str) -> tuple[str, list[int]] | None:
    """'v5p-128' or 'v5p:4x4x4' -> ('v5p', [4, 4, 4]); None for an unknown name."""
    match = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+)+)", SLICES.get(name, name))
    return (match[1], [int(d) for d in match[2].split("x")]) if match else None


def cpu_devices_needed(name: str) -> int:
    """How many CPU devices planning for `name` takes (0: none, the TPU compiler is used)."""
    cpu = re.fullmatch(r"cpu:(\d+)", name)
    if cpu:
        return int(cpu[1])
    parsed = _parse(name)
    if parsed is None or libtpu_available():
        return 0
    generation, dims = parsed
    return math.prod(dims) * (2 if generation == "v4" else 1)


def use_cpu_devices(count: int) -> None:
    """Makes jax start its CPU backend alone with `count` devices, if it has not started yet
    (once started, `resolve` reports a shortfall). Never tries to start a TPU backend."""
    try:
        jax.config.update("jax_platforms", "cpu")
        if count:
            jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
        pass  # backends already running (tests, notebooks): use the devices they have


def resolve(name: str) -> Target:
    """Devices and limits for `name` (see the module docstring). Raises ValueError if unknown."""
    if re.fullmatch(r"cpu:(\d+)", name):
        return Target(name, _cpu_devices(cpu_devices_needed(name)), None, "cpu", "")
    parsed = _parse(name)
    if parsed is None:
        raise ValueError(
            f"unknown topology {name!r}; use a slice ({', '.join(SLICES)}), a libtpu topology "
            "such as v5p:4x4x4, or cpu:N"
        )
    topology, spec = SLICES.get(name, name), TPU_SPECS[parsed[0]]
    count = cpu_devices_needed(name)
    if not count:
        from jax.experimental import topologies

        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
        return Target(name, list(desc.devices), spec, "tpu", "")
    note = (
        f"libtpu is not installed (pip install -e '.[tpu]'): compiled for {count} fake CPU "
        f"devices standing in for {topology}; argument memory is exact, activation (temporary) "
        "memory only indicative"
    )
    return Target(name, _cpu_devices(count), spec, "cpu", note)


def _cpu_devices(count: int) -> list:
    have = jax.devices("cpu")
    if len(have) < count:
        raise ValueError(
            f"this process has {len(have)} CPU devices but the plan needs {count}: start it "
            f"with XLA_FLAGS=--xla_force_host_platform_device_count={count}"
        )
    return list(have[:count])
