"""At which noise levels does a DiT lose what a clip shows? Two readings on real clips.

    python experiments/noise_level/denoise_by_t.py CHECKPOINT [clips] [--cfg 4]

Both use the first `clips` train-split clips after the ones the run encoded (17x64x64), each
with its own caption, so the text and the noisy clip agree:

1. One step: the clip's latent is noised to t (one noise draw a clip) and the DiT's clean-data
   estimate x0_hat = x_t - t v is compared with x0 in the normalised latent space. Printed as
   the error relative to the latent's variance, beside the best linear estimate a x_t (what a
   denoiser that knows nothing of the data gets).
2. Round trip (SDEdit): the clip is noised to t = strength and sampled back to t = 0 with its
   caption (Euler, 25 steps); the probe reads the result. Strength 1 is text-to-video; a
   perfect model keeps near the probe's reading of the VAE's reconstruction at every strength,
   and the strength where adherence falls is where the model stops using the signal that is
   still there.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax import dit_lib, probe_eval, task_generation, vae_lib
from sora_jax.data.shapes_world import probe
from sora_jax.diffusion import rectified_flow

ONE_STEP_TS = (0.3, 0.5, 0.7, 0.85, 0.95)
STRENGTHS = (0.3, 0.5, 0.7, 0.85, 0.93, 1.0)
BATCH = 16


def x0_estimate(pipe, x_t, t, coords, grid, text_in, mask, drop_text=False) -> jnp.ndarray:
    """The DiT's clean-data estimate x_t - t v at one t for every token (conditional, or with
    `drop_text` the null text's)."""
    v = pipe.model.apply(
        {"params": pipe.params["dit"]}, x_t, jnp.full(x_t.shape[:2], t), coords, text_in, mask,
        drop_text_B=jnp.full(x_t.shape[0], drop_text), grid=grid,
    )  # fmt: skip
    return x_t - t * v


def probe_noise(pipe, x0, coords) -> jnp.ndarray:
    """The noise these probes add to tokens x0 [B, N, D] at grid `coords`: a fixed draw from
    the run's own prior (`rectified_flow.prior_noise`)."""
    return rectified_flow.prior_noise(jax.random.key(0), x0.shape, coords, pipe.frame_correlation)


def one_step_errors(
    pipe, latent, captions, ts=ONE_STEP_TS, positions=lambda coords: coords
) -> list[tuple[float, float, float]]:
    """(t, the DiT's relative x0 error, the best linear estimate's) at each t, from the clips'
    VAE latents; `positions` may alter the tokens' rotary coordinates [B, N, 3] first."""
    normalized = dit_lib.normalize(latent, pipe.stats)
    x0, coords, _, _, grid = dit_lib.token_inputs(
        pipe.model, normalized, jnp.zeros(latent.shape[:2], bool)
    )
    # The run's prior at the real positions: the same noise whatever `positions` does.
    eps = probe_noise(pipe, x0, coords)
    coords = positions(coords)
    text_in, mask = dit_lib.text_states(pipe.params, pipe.text_batch(captions), pipe.text)
    variance = float(jnp.var(x0))
    rows = []
    for t in ts:
        x_t = (1.0 - t) * x0 + t * eps
        error = float(jnp.mean((x0_estimate(pipe, x_t, t, coords, grid, text_in, mask) - x0) ** 2))
        error /= variance
        # For unit-variance x0 and eps, a = (1-t) / ((1-t)^2 + t^2) minimises E|a x_t - x0|^2.
        a = (1.0 - t) / ((1.0 - t) ** 2 + t**2)
        linear = float(jnp.mean((a * x_t - x0) ** 2)) / variance
        rows.append((t, error, linear))
    return rows


def round_trip(pipe, videos, captions, strength: float, cfg: float) -> dict:
    """The probe's summary of each clip noised to `strength` and sampled back with its caption."""
    outputs = []
    for start in range(0, len(videos), BATCH):
        part = slice(start, start + BATCH)
        sample = dict(steps=25, cfg=cfg, seed=list(range(start, start + len(videos[part]))))
        outputs.append(
            task_generation.video_to_video(
                pipe, captions[part], videos[part], strength=strength, sample=sample
            )
        )
    readings = zip(np.concatenate(outputs), captions, strict=True)
    return probe_eval.summarize([probe.probe(v, c) for v, c in readings])


def _row(summary: dict) -> str:
    shown = ("color", "shape", "size", "motion", "speed")
    return f"{summary['adherence']:.1%} | " + " | ".join(
        f"{summary['attributes'].get(a, float('nan')):.0%}" for a in shown
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("clips", nargs="?", type=int, default=32)
    parser.add_argument("--cfg", type=float, default=4.0)
    args = parser.parse_args()
    pipe = dit_lib.load_pipeline(args.checkpoint)
    data = pipe.config.data
    videos, captions = probe_eval.probe_clips(
        data, "train", args.clips, start=data.num_clips, size=(17, 64, 64)
    )
    latent = vae_lib.encode(pipe.vae, pipe.vae_params, videos)
    reconstructed = vae_lib.decode(pipe.vae, pipe.vae_params, latent)
    reference = probe_eval.summarize(
        [probe.probe(np.asarray(v), c) for v, c in zip(reconstructed, captions, strict=True)]
    )
    print(f"{args.checkpoint}: {args.clips} unseen train clips, 17x64x64, CFG {args.cfg}\n")
    print("| t | DiT x0 error / variance | best linear estimate |\n|---|---|---|")
    for t, error, linear in one_step_errors(pipe, latent, captions):
        print(f"| {t} | {error:.3f} | {linear:.3f} |")
    print("\n| strength | adherence | colour | shape | size | motion | speed |")
    print("|---|---|---|---|---|---|---|")
    print(f"| VAE reconstruction | {_row(reference)} |")
    for strength in STRENGTHS:
        print(f"| {strength} | {_row(round_trip(pipe, videos, captions, strength, args.cfg))} |")


if __name__ == "__main__":
    main()
