"""Does a captioner read a shape from the video, or guess it from the colour word before it?

    python experiments/captioner_shortcut/shape_probe.py CHECKPOINT [train|heldout] [clips]

For each clip whose caption opens "A <size> <colour> <shape>", the captioner is teacher-forced
with "A <size> <colour>" and its likeliest shape word is read, once with the clip's true colour
and once with another colour, drawn at random, that the training split pairs with the clip's
true shape. `train` clips are the train split's after the ones the captioner trained on. On the
held-out (colour, shape) pairs, a captioner that reads shapes from the video scores the same
both ways; one that learned "this colour is never that shape" scores far better with the
substituted colour.
"""

import re
import sys

import jax.numpy as jnp
import numpy as np

from sora_jax import caption_eval, captioner_lib
from sora_jax.caption_tokenizer import PAD
from sora_jax.data.shapes_world import vocab


def first_shapes(captioner, videos, prefixes: list[str]) -> list[str]:
    """The likeliest of the shape words after each prefix."""
    shape_ids = captioner_lib.word_token_ids(captioner.tokenizer, vocab.SHAPES)
    ids = captioner.tokenizer.encode(prefixes)
    last = (ids != PAD).sum(1) - 2  # the prefix's last token (EOS follows it)
    logits = captioner.model.apply(
        {"params": captioner.params},
        captioner_lib.to_model_input(videos),
        jnp.asarray(ids[:, :-1]),
    )
    scores = np.asarray(logits)[np.arange(len(ids)), last][:, shape_ids]
    return [vocab.SHAPES[i] for i in scores.argmax(1)]


def main(checkpoint: str, split: str = "heldout", num: int = 256) -> None:
    captioner = captioner_lib.load(checkpoint)
    data = captioner.config.data
    start = data.num_clips if split == "train" else 0
    videos, references = caption_eval.clips(
        num, data.world_seed, data.sizes[0], split=split, start=start
    )
    draw = np.random.default_rng(0)
    rows = []
    for video, reference in zip(videos, references, strict=True):
        opening = re.match(r"A (small|large) (\w+) (\w+)", reference)
        if opening:
            size, color, shape = opening.groups()
            others = [
                c for c in vocab.COLORS if c != color and (c, shape) not in vocab.HELDOUT_PAIRS
            ]
            other = others[draw.integers(len(others))]
            rows.append((video, f"A {size} {color}", f"A {size} {other}", shape))
    if not rows:
        raise SystemExit('no clip caption opens with "A <size> <colour> <shape>"')
    videos = np.stack([r[0] for r in rows])
    truth = [r[3] for r in rows]
    for label, column in (("its true colour", 1), ("a colour trained with that shape", 2)):
        read = first_shapes(captioner, videos, [r[column] for r in rows])
        right = np.mean([a == b for a, b in zip(read, truth, strict=True)])
        print(f"{split}, {len(rows)} clips: first shape right after {label}: {right:.1%}")


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:3], *(int(a) for a in sys.argv[3:4]))
