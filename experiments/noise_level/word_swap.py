"""How much each attribute word of a caption moves the DiT's clean-data estimate, by noise level.

    python experiments/noise_level/word_swap.py CHECKPOINT [clips]

The clips and noise are `denoise_by_t.py`'s (the first `clips` train-split clips after the ones
the run encoded, 17x64x64, one noise draw a clip). At each t the DiT's conditional clean-data
estimate x0_hat = x_t - t v for the clip's own caption is compared with the estimate for the
caption with one attribute word swapped (colour to the next colour, circle -> square ->
triangle -> circle, small <-> large, left <-> right and up <-> down), and with the null text
(classifier-free guidance's unconditional branch). Printed: the mean squared change relative to
the latent's variance, and as a share of the null text's change (how much of what the whole
caption does at that t the one word does). A word the model ignores moves nothing at any t.
Last, how far each swap moves the text encoder's own output, which the DiT reads: a word the
encoder barely separates gives the DiT little to steer by.
"""

import argparse
import json
import re

import jax.numpy as jnp
import numpy as np
from denoise_by_t import probe_noise, x0_estimate  # this script's sibling

from sora_jax import dit_lib, probe_eval, vae_lib
from sora_jax.data.shapes_world import render, scenes, vocab
from sora_jax.data.shapes_world.world import ShapesWorldSource
from sora_jax.models import dit

TS = (0.3, 0.5, 0.7, 0.85, 0.95, 1.0)


def _cycle(words) -> dict[str, str]:
    words = list(words)
    return {w: words[(i + 1) % len(words)] for i, w in enumerate(words)}


SWAPS = {
    "colour": _cycle(vocab.COLORS),
    "shape": _cycle(vocab.SHAPES),
    "size": {"small": "large", "large": "small"},
    "motion": {"left": "right", "right": "left", "up": "down", "down": "up"},
}


def swap_word(caption: str, table: dict[str, str]) -> str | None:
    """`caption` with its first word from `table` replaced, or None when it has none."""
    match = re.search(r"\b(" + "|".join(table) + r")\b", caption)
    if match is None:
        return None
    return caption[: match.start()] + table[match[1]] + caption[match.end() :]


def rendered_changes(pipe, data, num: int, variance: float) -> dict[str, float]:
    """The calibration: for one-object clips, the mean squared change of the normalised latent
    when the clip itself is rendered with the colour, shape or size swapped, over `variance`
    (what the swapped word changes in the video itself, not in a model's estimate)."""
    source = ShapesWorldSource(
        num_clips=data.num_clips + num, split="train", seed=data.world_seed, sizes=((17, 64, 64),)
    )
    originals, swapped = [], {name: [] for name in ("colour", "shape", "size")}
    for index in range(data.num_clips, data.num_clips + num):
        clip = source[index]
        labels = json.loads(clip["labels"])
        if len(labels["shots"]) != 1 or len(labels["shots"][0]["objects"]) != 1:
            continue
        obj = labels["shots"][0]["objects"][0]
        size = SWAPS["size"][obj["size"]]
        changes = {
            "colour": {"color": SWAPS["colour"][obj["color"]]},
            "shape": {"shape": SWAPS["shape"][obj["shape"]]},
            "size": {"size": size, "extent": scenes.extent_px(size, 64, 64)},
        }
        originals.append(clip["video"])
        for name, change in changes.items():
            shot = {**labels["shots"][0], "objects": [{**obj, **change}]}
            swapped[name].append(render.render_clip({**labels, "shots": [shot]}, 17, 64, 64))

    def latents(videos):
        encoded = vae_lib.encode(pipe.vae, pipe.vae_params, np.stack(videos))
        return dit_lib.normalize(encoded, pipe.stats)

    base = latents(originals)
    print(f"(calibration on the {len(originals)} one-object clips among them)")
    return {
        name: float(jnp.mean((latents(videos) - base) ** 2)) / variance
        for name, videos in swapped.items()
    }


def text_changes(own_text, swapped_text, swapped) -> dict[str, tuple[float, float, int]]:
    """{word: (1 - cosine of the caption's mean text state, own vs swapped; the relative squared
    change of the most-changed token state, over captions whose swap keeps the token count;
    that count)}: how far the text encoder separates the swapped word, before any DiT."""

    def pooled(states, mask):  # what `model.pooled_text` feeds adaLN
        return np.asarray(dit.pool_text(states, mask)[:, 0])

    own, own_mask = (np.asarray(x) for x in own_text)
    own_pooled = pooled(own, own_mask)
    changes = {}
    for name, swaps in swapped.items():
        states, mask = (np.asarray(x) for x in swapped_text[name])
        keep = np.asarray([s is not None for s in swaps])
        a, b = own_pooled[keep], pooled(states, mask)[keep]
        cosine = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        same = keep & np.all(mask == own_mask, -1)
        relative = np.sum((states - own) ** 2, -1) / np.maximum(np.sum(own**2, -1), 1e-12)
        most = np.max(np.where(own_mask > 0, relative, 0.0), -1)[same]
        changes[name] = (float(1.0 - cosine.mean()), float(most.mean()), int(same.sum()))
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("clips", nargs="?", type=int, default=64)
    args = parser.parse_args()
    pipe = dit_lib.load_pipeline(args.checkpoint)
    data = pipe.config.data
    videos, captions = probe_eval.probe_clips(
        data, "train", args.clips, start=data.num_clips, size=(17, 64, 64)
    )
    latent = dit_lib.normalize(vae_lib.encode(pipe.vae, pipe.vae_params, videos), pipe.stats)
    x0, coords, _, _, grid = dit_lib.token_inputs(
        pipe.model, latent, jnp.zeros(latent.shape[:2], bool)
    )
    variance = float(jnp.var(x0))
    eps = probe_noise(pipe, x0, coords)
    swapped = {name: [swap_word(c, table) for c in captions] for name, table in SWAPS.items()}
    print(f"{args.checkpoint}: {args.clips} unseen train clips, 17x64x64, conditional estimates")
    print("(clips whose caption has the word: " + ", ".join(
        f"{name} {sum(s is not None for s in swaps)}" for name, swaps in swapped.items()
    ) + ")\n")  # fmt: skip
    names = list(SWAPS)
    print("| t | null text / variance | " + " | ".join(f"{n} / variance" for n in names)
          + " | " + " | ".join(f"{n} / null" for n in names) + " |")  # fmt: skip
    print("|---" * (2 + 2 * len(names)) + "|")

    def states(texts):
        return dit_lib.text_states(pipe.params, pipe.text_batch(texts), pipe.text)

    own_text = states(captions)
    swapped_text = {
        name: states([s if s is not None else c for s, c in zip(swaps, captions, strict=True)])
        for name, swaps in swapped.items()
    }
    for t in TS:
        x_t = (1.0 - t) * x0 + t * eps
        own = x0_estimate(pipe, x_t, t, coords, grid, *own_text)
        null = x0_estimate(pipe, x_t, t, coords, grid, *own_text, drop_text=True)
        null_change = jnp.mean((null - own) ** 2, axis=(1, 2))
        by_variance, by_null = [], []
        for name in names:
            keep = np.asarray([s is not None for s in swapped[name]])
            estimate = x0_estimate(pipe, x_t, t, coords, grid, *swapped_text[name])
            change = jnp.mean((estimate - own) ** 2, axis=(1, 2))
            by_variance.append(float(change[keep].mean()) / variance)
            by_null.append(float(change[keep].mean() / null_change[keep].mean()))
        print(f"| {t} | {float(null_change.mean()) / variance:.4f} | "
              + " | ".join(f"{x:.4f}" for x in by_variance) + " | "
              + " | ".join(f"{x:.2f}" for x in by_null) + " |")  # fmt: skip
    calibration = rendered_changes(pipe, data, args.clips, variance)
    print("\nthe clip rendered with the word swapped, latent change / variance: " + ", ".join(
        f"{name} {change:.4f}" for name, change in calibration.items()
    ))  # fmt: skip
    print("\n| text encoder | " + " | ".join(names) + " |\n" + "|---" * (1 + len(names)) + "|")
    changes = text_changes(own_text, swapped_text, swapped)
    print("| mean state, 1 - cosine | " + " | ".join(
        f"{changes[n][0]:.4f}" for n in names) + " |")  # fmt: skip
    print("| most-changed token, relative squared change | " + " | ".join(
        f"{changes[n][1]:.3f} ({changes[n][2]} captions)" for n in names) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
