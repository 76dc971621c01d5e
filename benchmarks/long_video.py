"""Long video by sliding-window extension: time and peak memory vs length.

    python benchmarks/long_video.py [--lengths 17,65,161,481] [--steps 4]

Each length runs in a fresh process: the tiny DiT (random weights; memory and speed do not depend
on training) generates a 64x64 text-to-video of that many frames at 8 fps, window after 17-frame
window (`task_generation.long_video`), each window continuing from the last 5 frames of the one
before and decoded on its own. Peak resident memory should stay flat as the length grows (only
the uint8 result grows: 481 frames of 64x64 are 5.9 MB). `--steps` sampler steps per window.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from child_process import print_peak_rss, run_child
from flax import linen as nn

from sora_jax import config_lib, dit_lib, task_generation, vae_lib
from sora_jax.text import encoders


def _pipeline() -> dit_lib.Pipeline:
    config = config_lib.load_config("configs/dit_tiny.py")
    model = dit_lib.make_model(config.model)
    text = encoders.make_text_encoder(config.model.text)
    vae = vae_lib.make_model(config_lib.load_config("configs/vae_tiny.py").model)
    vae_params = nn.unbox(vae.init(jax.random.key(1), jnp.zeros((1, 1, 64, 64, 3)))["params"])
    latent = vae.latent_shape((1, 17, 64, 64, 3))
    params = nn.unbox(dit_lib.init_params(model, text, latent, jax.random.key(0)))
    stats = (np.zeros(latent[-1], np.float32), np.ones(latent[-1], np.float32))
    return dit_lib.Pipeline(config, model, params, text, vae, vae_params, stats, step=0)


def child(frames: int, steps: int) -> None:
    pipe = _pipeline()
    sample = dict(steps=steps, cfg=4.0, seed=0, sampler="euler")
    start = time.perf_counter()
    video = task_generation.long_video(
        pipe, ["a small red circle moves right on a black background"],
        frames=frames, window=17, height=64, width=64, sample=sample,
    )  # fmt: skip
    assert video.shape == (1, frames, 64, 64, 3), video.shape
    print_peak_rss(seconds=time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="17,65,161,481")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        child(*map(int, args.child))
        return
    for frames in map(int, args.lengths.split(",")):
        result = run_child(__file__, frames, args.steps)
        print(
            f"{frames:4d} frames ({frames / 8:5.1f} s at 8 fps): peak RSS "
            f"{result['peak_mib']:6.0f} MiB, {result['seconds']:6.1f} s "
            f"({args.steps} steps a window, compile included)"
        )


if __name__ == "__main__":
    main()
