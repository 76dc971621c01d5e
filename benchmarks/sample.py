"""Sampling latency of a 17-frame 64x64 video, and compile time vs depth (scanned vs unrolled).

    python benchmarks/sample.py [--steps 25] [--depths 2,4,8,16]

Latency: the tiny DiT (random weights; speed does not depend on training) samples a
latent [1, 5, 16, 16, 16] (80 tokens of 1x4x4 patches) with Euler and classifier-free guidance
(one doubled-batch model call per step), then the tiny VAE decodes it. Printed after
compilation, as the median of 3 runs.
Compile time: the whole jitted sampler for the tiny width at several depths, with `nn.scan` over
layers and unrolled; the scanned compile should stay flat as depth grows.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from sora_jax import config_lib, dit_lib, host_memory, vae_lib
from sora_jax.text import encoders

LATENT = (1, 5, 16, 16, 16)  # the tiny VAE's latent of 17x64x64
TEXT_TOKENS = 32


def _pipeline_parts(depth=None, scan=True):
    config = config_lib.load_config("configs/dit_tiny.py")
    config.model.scan_layers = scan
    model = dit_lib.make_model(config.model)
    if depth is not None:
        model = model.clone(depth=depth)
    text = encoders.make_text_encoder(config.model.text)
    params = nn.unbox(dit_lib.init_params(model, text, LATENT, jax.random.key(0)))
    return config, model, text, params


def _sample(model, text, params, steps):
    return dit_lib.sample_latents(
        model,
        text,
        params,
        jax.random.normal(jax.random.key(1), (1, TEXT_TOKENS, text.width)),
        jnp.ones((1, TEXT_TOKENS), bool),
        jax.random.key(2),
        latent_shape=LATENT,
        steps=steps,
        sampler="euler",
        shift=1.0,
        cfg=4.0,
        stats=(jnp.zeros(LATENT[-1]), jnp.ones(LATENT[-1])),
    )


def latency(steps: int) -> dict:
    _, model, text, params = _pipeline_parts()
    vae = vae_lib.make_model(config_lib.load_config("configs/vae_tiny.py").model)
    vae_params = nn.unbox(vae.init(jax.random.key(3), jnp.zeros((1, 17, 64, 64, 3)))["params"])
    latent = _sample(model, text, params, steps).block_until_ready()
    vae_lib.decode(vae, vae_params, latent).block_until_ready()
    dit_times, vae_times = [], []
    for _ in range(3):
        start = time.perf_counter()
        latent = _sample(model, text, params, steps).block_until_ready()
        middle = time.perf_counter()
        vae_lib.decode(vae, vae_params, latent).block_until_ready()
        dit_times.append(middle - start)
        vae_times.append(time.perf_counter() - middle)
    dit_s, vae_s = float(np.median(dit_times)), float(np.median(vae_times))
    return {
        "video": "17x64x64",
        "steps": steps,
        "dit_s": round(dit_s, 3),
        "vae_decode_s": round(vae_s, 3),
        "total_s": round(dit_s + vae_s, 3),
    }


def compile_time(depth: int, scan: bool, steps: int) -> dict:
    _, model, text, params = _pipeline_parts(depth, scan)
    start = time.perf_counter()
    _sample(model, text, params, steps).block_until_ready()
    return {"depth": depth, "scan": scan, "first_call_s": round(time.perf_counter() - start, 1)}


def main():
    host_memory.retain_freed_memory()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--depths", default="2,4,8,16")
    args = parser.parse_args()
    print(json.dumps(latency(args.steps)), flush=True)
    for depth in map(int, args.depths.split(",")):
        for scan in (True, False):
            print(json.dumps(compile_time(depth, scan, args.steps)), flush=True)


if __name__ == "__main__":
    main()
