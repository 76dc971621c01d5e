"""Video VAE speed and memory: encode/decode frames/s, and peak memory vs video length.

    python benchmarks/vae.py [--variants tiny/t4s4c16,base/t4s8c16] [--lengths 17,65,257]

For each variant: frames/s of one-pass encode and decode of a 17x64x64 clip (batch 1, after
compilation). Then, for each length, the peak resident memory of a fresh process that encodes
and decodes a 64x64 video of that length chunk by chunk (`ChunkedCodec`) and, for comparison,
in one pass. Chunked peak memory should stay flat as length grows; one pass grows with it.
Parameters are random (speed and memory do not depend on training).
"""

import argparse
import time

import jax
import jax.numpy as jnp
from child_process import print_peak_rss, run_child


def _model(variant):
    from sora_jax.models import vae

    model = vae.vae_from_variant(variant, conv_impl="xla")  # the inference path (load_vae)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1, 64, 64, 3)))["params"]
    return vae, model, vae.nn.unbox(params)


def speed(variant: str, repeats: int = 3) -> dict:
    _, model, params = _model(variant)
    video = jax.random.uniform(jax.random.key(1), (1, 17, 64, 64, 3), minval=-1, maxval=1)
    encode = jax.jit(lambda v: model.apply({"params": params}, v, method=model.encode)[0])
    decode = jax.jit(lambda z: model.apply({"params": params}, z, method=model.decode))
    latent = encode(video).block_until_ready()
    decode(latent).block_until_ready()
    result = {}
    for name, fn, arg in (("encode", encode, video), ("decode", decode, latent)):
        start = time.perf_counter()
        for _ in range(repeats):
            fn(arg).block_until_ready()
        result[f"{name}_frames_per_s"] = 17 * repeats / (time.perf_counter() - start)
    return result


def peak_memory_child(variant: str, frames: int, chunked: bool) -> None:
    """Runs in a fresh process; prints JSON with its peak RSS."""
    vae, model, params = _model(variant)
    video = jax.random.uniform(jax.random.key(1), (1, frames, 64, 64, 3), minval=-1, maxval=1)
    if chunked:
        codec = vae.ChunkedCodec(model, latent_frames_per_chunk=2)
        recon = codec.decode(params, codec.encode(params, video))
    else:
        latent = model.apply({"params": params}, video, method=model.encode)[0]
        recon = model.apply({"params": params}, latent, method=model.decode)
    recon.block_until_ready()
    print_peak_rss()


def peak_memory(variant: str, frames: int, chunked: bool) -> float:
    return run_child(__file__, variant, frames, int(chunked))["peak_mib"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="tiny/t4s4c16,tiny/t4s8c16,base/t4s8c16")
    parser.add_argument("--lengths", default="17,65,257")
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        variant, frames, chunked = args.child
        peak_memory_child(variant, int(frames), bool(int(chunked)))
        return
    for variant in args.variants.split(","):
        s = speed(variant)
        print(
            f"{variant}: encode {s['encode_frames_per_s']:.1f} frames/s, decode "
            f"{s['decode_frames_per_s']:.1f} frames/s (17x64x64, batch 1, one pass)"
        )
        for frames in map(int, args.lengths.split(",")):
            chunked = peak_memory(variant, frames, True)
            whole = peak_memory(variant, frames, False)
            print(
                f"  {frames:4d} frames 64x64: peak RSS chunked {chunked:7.0f} MiB, "
                f"one pass {whole:7.0f} MiB"
            )


if __name__ == "__main__":
    main()
