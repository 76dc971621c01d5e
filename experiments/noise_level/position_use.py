"""How much does a DiT use its token positions? The one-step clean-data error with the rotary
coordinates intact, shuffled, or with the time or space axes zeroed.

    python experiments/noise_level/position_use.py CHECKPOINT [clips] [--start N]

`clips` (default 16) 17x64x64 train-split clips from `--start` on (default: the first after
the ones the run encoded), each with its own caption. At each t, every clip's latent is
noised once (the same noise for every variant) and the DiT's estimate x0_hat = x_t - t v is
compared with x0 in the normalised latent space, as the error over the latent's variance
(`denoise_by_t.one_step_errors`). A model that reads where or when a token is from its
coordinates loses accuracy when they are taken away; one that ignores an axis does not.
With `model.absolute_position` the coordinates also give each token its place in the clip,
so zeroing an axis removes that signal too (every token at fraction 0 along it).
Full attention only: factorized attention groups tokens into frames by their order.
"""

import argparse

import numpy as np
from denoise_by_t import one_step_errors  # this script's sibling

from sora_jax import dit_lib, probe_eval, vae_lib

TS = (0.3, 0.5, 0.7, 0.9)


def _shuffled(coords_BxNx3):
    return coords_BxNx3[:, np.random.default_rng(0).permutation(coords_BxNx3.shape[1])]


VARIANTS = {
    "intact": lambda c: c,
    "shuffled": _shuffled,
    "all zero": lambda c: c * 0.0,
    "time zero": lambda c: c.at[..., 0].set(0.0),
    "space zero": lambda c: c.at[..., 1:].set(0.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("clips", nargs="?", type=int, default=16)
    parser.add_argument("--start", type=int, default=None, help="default: the run's num_clips")
    args = parser.parse_args()
    pipe = dit_lib.load_pipeline(args.checkpoint)
    if pipe.model.attention != "full":
        raise SystemExit(f"{args.checkpoint}: full attention only, not {pipe.model.attention!r}")
    data = pipe.config.data
    start = data.num_clips if args.start is None else args.start
    videos, captions = probe_eval.probe_clips(
        data, "train", args.clips, start=start, size=(17, 64, 64)
    )
    latent = vae_lib.encode(pipe.vae, pipe.vae_params, videos)
    columns = {
        name: [error for _, error, _ in one_step_errors(pipe, latent, captions, TS, positions)]
        for name, positions in VARIANTS.items()
    }
    print(f"{args.checkpoint}: train clips {start}-{start + args.clips - 1}, 17x64x64\n")
    print("| t | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for i, t in enumerate(TS):
        print(f"| {t} | " + " | ".join(f"{errors[i]:.4f}" for errors in columns.values()) + " |")


if __name__ == "__main__":
    main()
