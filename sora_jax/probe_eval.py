"""Text-to-video prompt adherence: generate from Shapes World prompts, read back with the probe.

The prompts are short captions of Shapes World clips: the `train` split's (colour, shape) pairs
for train-distribution prompts, the `heldout` split's for compositional generalisation. Scores
pool every prompted attribute over all videos (correct / prompted), per attribute and overall,
exactly as the probe scores one video.
"""

import dataclasses
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

from sora_jax import prompt_expansion
from sora_jax.data.shapes_world import probe
from sora_jax.data.shapes_world.captions import parse_caption
from sora_jax.data.shapes_world.world import ShapesWorldSource

# Attributes in the order reports list them; the probe adds speed/reappears only when prompted.
ATTRIBUTES = ("color", "shape", "size", "motion", "speed", "background", "reappears")


def probe_clips(data: ml_collections.ConfigDict, split: str, num: int, start: int = 0, size=None):
    """(uint8 videos [num, T, H, W, 3], short captions) of Shapes World `split` clips start..
    of the run's world seed, at `size` (frames, height, width; default the run's first)."""
    source = ShapesWorldSource(
        num_clips=start + num,
        split=split,
        seed=data.world_seed,
        sizes=(tuple(size or data.sizes[0]),),
    )
    clips = [source[i] for i in range(start, start + num)]
    return np.stack([c["video"] for c in clips]), [str(c["caption"]) for c in clips]


def probe_prompts(data: ml_collections.ConfigDict, split: str, num: int, start: int = 0):
    """`num` short captions of Shapes World `split` (clips start.. of the run's world seed)."""
    return probe_clips(data, split, num, start)[1]


def summarize(readings: Sequence[dict]) -> dict:
    """Pooled adherence over probe readings: overall, per attribute, and whole-video."""
    totals: dict[str, np.ndarray] = {}
    for reading in readings:
        for attribute, counts in reading["counts"].items():
            totals[attribute] = totals.get(attribute, np.zeros(2, np.int64)) + counts
    correct = sum(int(c) for c, _ in totals.values())
    prompted = sum(int(n) for _, n in totals.values())
    return {
        "num_videos": len(readings),
        "adherence": correct / max(prompted, 1),
        "attributes": {a: float(totals[a][0] / totals[a][1]) for a in ATTRIBUTES if a in totals},
        "attribute_counts": {a: totals[a].tolist() for a in ATTRIBUTES if a in totals},
        "all_correct": float(np.mean([r["adherence"] == 1.0 for r in readings])),
    }


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """Prompts to generate, each with its own noise seed.

    `expansions` (`prompt_expansion.Expansion`, one a prompt) are how the probe reads prompts
    outside the canonical grammar: it checks the video against the expansion's canonical
    caption, scoring only the attributes the prompt stated. `expand`: the model reads the
    expansions' detailed captions instead of the prompts themselves.
    """

    prompts: list[str]
    seeds: list[int]
    expansions: list | None = None
    expand: bool = False

    @classmethod
    def numbered(cls, prompts: Sequence[str], seed: int = 0) -> "PromptSet":
        """Prompt i gets seed `seed + i`."""
        return cls(list(prompts), [seed + i for i in range(len(prompts))])

    @property
    def model_prompts(self) -> list[str]:
        return [e.detailed for e in self.expansions] if self.expand else self.prompts

    def read(self, video: np.ndarray, i: int) -> dict:
        """The probe's reading of video `i` against prompt `i`."""
        if self.expansions is None:
            return probe.probe(video, self.prompts[i])
        expansion = self.expansions[i]
        return probe.restrict(probe.probe(video, expansion.canonical), expansion.stated)


def evaluate(
    generate: Callable[[list[str], list[int]], np.ndarray],
    prompts: PromptSet,
    *,
    batch_size: int,
    desc: str = "t2v probe",
) -> tuple[dict, list[dict], np.ndarray]:
    """Generates every prompt in batches and probes it.

    `generate(prompts, seeds)` returns uint8 videos [B, T, H, W, 3], one seed a prompt.
    Returns (summary, per-video rows, the videos).
    """
    if not prompts.prompts:
        raise ValueError("no prompts to evaluate")
    if len(prompts.seeds) != len(prompts.prompts):
        raise ValueError(f"{len(prompts.prompts)} prompts but {len(prompts.seeds)} seeds")
    readings, videos = [], []
    model_prompts = prompts.model_prompts
    with tqdm(total=len(prompts.prompts), desc=desc, unit="video") as progress:
        for start in range(0, len(prompts.prompts), batch_size):
            batch = model_prompts[start : start + batch_size]
            seeds = prompts.seeds[start : start + batch_size]
            for i, video in enumerate(generate(batch, seeds), start=start):
                readings.append(prompts.read(video, i))
                videos.append(video)
            progress.update(len(batch))
    rows = [
        {
            "prompt": p,
            "adherence": r["adherence"],
            "attributes": r["attributes"],
            "reading": probe.describe(r),
        }
        for p, r in zip(prompts.prompts, readings, strict=True)
    ]
    for row, expansion in zip(rows, prompts.expansions or [None] * len(rows), strict=True):
        if expansion is not None:
            row.update(read_as=expansion.canonical, sampled=expansion.sampled)
        if prompts.expand:
            row["expanded_prompt"] = expansion.detailed
    return summarize(readings), rows, np.stack(videos)


def is_canonical(prompt: str) -> bool:
    """Whether `prompt` follows the short Shapes World grammar the probe reads directly."""
    try:
        parse_caption(prompt)
    except ValueError:
        return False
    return True


def with_expansions(prompts: PromptSet, expand: bool, frames: int, height: int, width: int):
    """`prompts` readable by the probe: through prompt expansion (each prompt with its own seed)
    when `expand` or when a prompt is outside the canonical grammar; raises
    `prompt_expansion.PromptNotUnderstood` for a prompt expansion cannot read either."""
    if not expand and all(is_canonical(p) for p in prompts.prompts):
        return prompts
    expansions = [
        prompt_expansion.expand(p, frames=frames, height=height, width=width, seed=seed)
        for p, seed in zip(prompts.prompts, prompts.seeds, strict=True)
    ]
    return dataclasses.replace(prompts, expansions=expansions, expand=expand)
