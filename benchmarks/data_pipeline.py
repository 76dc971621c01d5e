"""Input pipeline throughput: Shapes World generation and the full Grain pipeline.

    python benchmarks/data_pipeline.py [--config configs/tiny.py] [--seconds 10]

Prints clips/s for (1) rendering clips alone, (2) the whole pipeline (shuffle, bucket, load,
caption mix, batch) at the config's shapes and batch size, with the config's thread count.
The training step's consumption rate is compared against this once a train step exists
(benchmarks/train_step.py).
"""

import argparse
import time

import grain
import numpy as np

from sora_jax import config_lib
from sora_jax.data import pipeline, sources
from sora_jax.data.shapes_world import world


def clips_per_second(fn, seconds: float) -> float:
    fn()  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += fn()
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.py")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    config = config_lib.load_config(args.config)

    print(
        f"config {args.config}: sizes {list(config.data.sizes)}, global batch "
        f"{config.batch_size}, {config.data.num_threads} read thread(s)"
    )
    for frames, height, width in config.data.sizes:
        clip_indices = iter(range(10**9))

        def render_one(f=frames, h=height, w=width, indices=clip_indices):
            world.generate_clip(next(indices), frames=f, height=h, width=w)
            return 1

        rate = clips_per_second(render_one, args.seconds / 2)
        print(f"  render only   {frames:3d}x{height}x{width}: {rate:8.1f} clips/s")

    source = sources.make_source(config.data)
    ds = pipeline.make_dataset(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        detailed_caption_prob=config.data.detailed_caption_prob,
    )
    iterator = iter(
        ds.to_iter_dataset(
            grain.ReadOptions(
                num_threads=config.data.num_threads,
                prefetch_buffer_size=config.data.prefetch_buffer_size,
            )
        )
    )
    rate = clips_per_second(lambda: len(next(iterator)["caption"]), args.seconds)
    batch = next(iterator)
    print(
        f"  full pipeline (mixed shapes, e.g. {tuple(np.shape(batch['video']))}): "
        f"{rate:8.1f} clips/s = {rate / config.batch_size:.1f} batches/s"
    )


if __name__ == "__main__":
    main()
