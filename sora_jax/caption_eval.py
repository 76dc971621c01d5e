"""Caption accuracy: a generated detailed caption parsed back into attributes, against the truth.

Both the generated and the reference caption go through
`captions.parse_detailed_caption`; the reference's attributes are the truth (the parser reads
every real Shapes World caption exactly, see tests). Scored per video: the number of shots, and
per shot its background, cut frame and number of objects, and per object (in the caption's
order) color, shape, size, start position, motion, speed (moving objects) and occlusion. A
caption that does not parse, or that misses an object, scores every attribute it fails to state
as wrong. `exact` is the fraction of videos whose parsed captions agree on everything.

Objects are matched within a shot, not read in order: the world lists a shot's objects in the
order it sampled them, which nothing in the video shows, so "the first object" of a correct
caption may be the truth's second. Each shot's generated objects are assigned to the true ones by
the assignment that gets the most attributes right (at most 3 objects: 3! = 6 candidates).
"""

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from sora_jax.data.shapes_world import captions
from sora_jax.data.shapes_world.world import ShapesWorldSource

SHOT_ATTRIBUTES = ("background", "cut_frame", "num_objects")
OBJECT_ATTRIBUTES = ("color", "shape", "size", "position", "motion", "speed", "occluded")
ATTRIBUTES = ("num_shots", *SHOT_ATTRIBUTES, *OBJECT_ATTRIBUTES)


def _parse(caption: str) -> list[dict] | None:
    try:
        return captions.parse_detailed_caption(caption)
    except ValueError:
        return None


def _object_tallies(got: dict | None, want: dict) -> dict[str, bool]:
    """{attribute: correct} for one true object (speed only for movers)."""
    return {
        a: got is not None and got[a] == want[a]
        for a in OBJECT_ATTRIBUTES
        if not (a == "speed" and want["speed"] is None)
    }


def _match_objects(got: list[dict], want: list[dict]) -> list[dict[str, bool]]:
    """Per true object, its attribute tallies under the best assignment of generated objects."""
    candidates = [*got, *[None] * len(want)]
    best = None
    for assignment in itertools.permutations(range(len(candidates)), len(want)):
        tallies = [_object_tallies(candidates[i], w) for i, w in zip(assignment, want, strict=True)]
        correct = sum(sum(t.values()) for t in tallies)
        if best is None or correct > best[0]:
            best = (correct, tallies)
    return best[1]


def score_caption(generated: str, reference: str) -> dict:
    """{attribute: [correct, stated in the reference]}, "exact" and "parsed" for one video."""
    truth = captions.parse_detailed_caption(reference)
    got = _parse(generated)
    counts = {a: [0, 0] for a in ATTRIBUTES}

    def tally(attribute, ok):
        counts[attribute][0] += int(ok)
        counts[attribute][1] += 1

    tally("num_shots", got is not None and len(got) == len(truth))
    for s, want_shot in enumerate(truth):
        shot = got[s] if got is not None and s < len(got) else None
        tally("background", shot is not None and shot["background"] == want_shot["background"])
        if s:
            tally("cut_frame", shot is not None and shot["cut_frame"] == want_shot["cut_frame"])
        same_count = shot is not None and len(shot["objects"]) == len(want_shot["objects"])
        tally("num_objects", same_count)
        got_objects = shot["objects"] if shot is not None else []
        for tallies in _match_objects(got_objects, want_shot["objects"]):
            for attribute, ok in tallies.items():
                tally(attribute, ok)
    counts = {a: c for a, c in counts.items() if c[1]}
    exact = got is not None and all(correct == total for correct, total in counts.values())
    return {"counts": counts, "exact": exact, "parsed": got is not None}


def summarize(scores: Sequence[dict]) -> dict:
    totals: dict[str, np.ndarray] = {}
    for s in scores:
        for attribute, counts in s["counts"].items():
            totals[attribute] = totals.get(attribute, np.zeros(2, np.int64)) + counts
    return {
        "num_videos": len(scores),
        "exact": float(np.mean([s["exact"] for s in scores])),
        "parsed": float(np.mean([s["parsed"] for s in scores])),
        "attributes": {a: float(totals[a][0] / totals[a][1]) for a in ATTRIBUTES if a in totals},
        "attribute_counts": {a: totals[a].tolist() for a in ATTRIBUTES if a in totals},
    }


def clips(num: int, world_seed: int, size: Sequence[int], split: str = "heldout", start: int = 0):
    """(uint8 videos [num, T, H, W, 3], their true detailed captions) of Shapes World clips
    start.. of `split`."""
    source = ShapesWorldSource(
        num_clips=start + num, split=split, seed=world_seed, sizes=(tuple(size),)
    )
    clips = [source[i] for i in range(start, start + num)]
    return np.stack([c["video"] for c in clips]), [str(c["detailed_caption"]) for c in clips]


def evaluate(
    caption: Callable[[np.ndarray], list[str]],
    videos: np.ndarray,
    references: Sequence[str],
    *,
    batch_size: int,
    desc: str = "captions",
) -> tuple[dict, list[dict]]:
    """Captions `videos` in batches with `caption(videos) -> texts` and scores them.

    Returns (summary, per-video rows with reference, generated caption and its scores)."""
    rows = []
    with tqdm(total=len(videos), desc=desc, unit="video") as progress:
        for start in range(0, len(videos), batch_size):
            texts = caption(videos[start : start + batch_size])
            for text, reference in zip(texts, references[start : start + batch_size], strict=True):
                rows.append(
                    {"reference": reference, "caption": text, **score_caption(text, reference)}
                )
            progress.update(len(texts))
    return summarize(rows), rows
