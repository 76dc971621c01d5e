"""Multi-host runs: `jax.distributed.initialize` from flags, the environment, or not at all.

Every training command accepts

    --coordinator_address HOST:PORT --num_processes N --process_id I

(one process per host, started by the user's launcher), or reads the same from the environment
variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`. On Cloud TPU pods
and SLURM clusters `--auto_distributed` lets JAX detect everything itself. With none of these the
run is one process. After initialization `jax.devices()` lists every host's devices, the mesh
spans them all, each process loads its own rows of each global batch (`data/pipeline.py`),
Orbax writes checkpoints from all processes together, and only process 0 writes logs and samples.
On CPU the cross-process collectives go through gloo.
"""

import os

import jax
from absl import flags

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0 for a multi-host run."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..N-1.")
_AUTO = flags.DEFINE_bool(
    "auto_distributed", False, "Let JAX detect the cluster (Cloud TPU pods, SLURM)."
)

# setting -> (its flag, its environment variable)
_SOURCES = {
    "coordinator_address": (_COORDINATOR, "JAX_COORDINATOR_ADDRESS"),
    "num_processes": (_NUM_PROCESSES, "JAX_NUM_PROCESSES"),
    "process_id": (_PROCESS_ID, "JAX_PROCESS_ID"),
}


def settings() -> dict | None:
    """{coordinator_address, num_processes, process_id} from flags, else the environment;
    None for a single-process run. ValueError when only some are given."""
    given = {
        key: flag.value if flag.value is not None else os.environ.get(env)
        for key, (flag, env) in _SOURCES.items()
    }
    if all(v is None for v in given.values()):
        return None
    missing = [f"--{k}" for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"a multi-host run needs {', '.join(missing)} too")
    count, index = int(given["num_processes"]), int(given["process_id"])
    if not 0 <= index < count:
        raise ValueError(f"--process_id {index} is outside 0..{count - 1}")
    return dict(given, num_processes=count, process_id=index)


def initialize() -> None:
    """Joins the multi-host run the flags or environment describe (no-op for one process)."""
    if _AUTO.value:
        jax.distributed.initialize()
        return
    config = settings()
    if config is not None and config["num_processes"] > 1:
        jax.distributed.initialize(**config)
