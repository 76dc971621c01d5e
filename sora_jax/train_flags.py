"""The `--config` and `--workdir` flags of the training commands (`train`, `train-vae`,
`train-captioner`) and of `plan`; `plots` reads --workdir too.

absl flags are process-global, so the commands share these definitions instead of each defining
its own: the trainers can then be imported in one process (tests, notebooks).
"""

from absl import flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/dit_tiny.py[:arg=value,...].", lock_config=True
)
WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
