"""Tiny: sized for a 2-core CPU (the shipped model and CI use it); mixes sizes by default.

`--config configs/tiny.py`, or a variant such as `configs/tiny.py:sizes=fixed,frames=9,batch=4`.
"""

import ml_collections

from sora_jax import config_lib


def get_config(arg=None) -> ml_collections.ConfigDict:
    config = config_lib.load_sibling(__file__, "default").get_config(arg, sizes="mixed")
    config.data.num_threads = 1
    return config
