"""Prompt expansion: a short, loosely worded prompt rewritten as a detailed Shapes World caption.

Sora rewrites a user's short prompt into the detailed style of its training captions before
generating. Here the rewrite is a grammar, not a learned model: Shapes World's vocabulary is
closed, so a parser with synonym tables covers paraphrases ("a tiny crimson ball heading left
fast") exactly and says precisely which words it could not read, where a small seq2seq trained on
synthetic paraphrases would only learn back the grammar that wrote its data, and could invent
attributes the user never asked for. What the user leaves out (size, colour, motion, speed,
background, start position, cut frames) is drawn from a seeded generator and recorded in
`Expansion.sampled`; the scene is then placed and described by the same code that writes the
training captions (`scenes.place_shot`, `captions.detailed_caption`).

    expand("red ball going left fast", frames=17, height=64, width=64, seed=0).detailed
"""

import dataclasses
import re

import numpy as np

from sora_jax.data.shapes_world import captions, scenes, vocab


class PromptNotUnderstood(ValueError):
    """The prompt uses words or combinations outside Shapes World."""


def _table(groups: dict[str, str]) -> dict[str, str]:
    return {word: value for value, words in groups.items() for word in words.split()}


COLOR_WORDS = _table(
    {
        "red": "red crimson scarlet ruby cherry",
        "green": "green lime emerald",
        "blue": "blue navy azure cobalt sapphire",
        "yellow": "yellow golden gold lemon",
        "purple": "purple violet lavender lilac plum",
        "orange": "orange amber tangerine",
        "cyan": "cyan teal aqua turquoise",
        "pink": "pink rose fuchsia magenta",
    }
)
SHAPE_WORDS = _table(
    {
        "circle": "circle circles ball balls disc disk dot orb sphere",
        "square": "square squares box block cube tile",
        "triangle": "triangle triangles pyramid wedge",
    }
)
SIZE_WORDS = _table(
    {"small": "small tiny little mini smaller", "large": "large big huge giant bigger enormous"}
)
MOTION_WORDS = _table(
    {
        "moves left": "left leftward leftwards westward",
        "moves right": "right rightward rightwards eastward",
        "moves up": "up upward upwards rise rises rising ascend ascends ascending climb climbs "
        "climbing",
        "moves down": "down downward downwards fall falls falling drop drops dropping descend "
        "descends descending sink sinks sinking",
        vocab.STILL: "still stationary static motionless unmoving resting rests sits sitting "
        "staying idle frozen",
    }
)
SPEED_WORDS = _table(
    {
        "slowly": "slow slowly leisurely gently gradually lazily crawls crawling",
        "quickly": "fast quickly quick rapidly rapid swiftly swift briskly speedily zooms "
        "zooming races racing darts darting dashes dashing rushes rushing",
    }
)
BACKGROUND_WORDS = _table({"black": "black", "white": "white", "gray": "gray grey"})
# Words that say "it moves" without a direction, "it hides" (occlusion), or nothing at all.
MOVING_WORDS = frozenset(
    [
        "moves",
        "moving",
        "move",
        "goes",
        "going",
        "heads",
        "heading",
        "travels",
        "travelling",
        "traveling",
        "slides",
        "sliding",
        "glides",
        "gliding",
        "drifts",
        "drifting",
        "rolls",
        "rolling",
        "floats",
        "floating",
        "flies",
        "flying",
        "runs",
        "running",
        "shoots",
        "shooting",
    ]
)
OCCLUSION_WORDS = frozenset(
    ["behind", "wall", "hidden", "hides", "hiding", "occluded", "passes", "passing"]
)
FILLER_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "one",
        "and",
        "with",
        "is",
        "are",
        "it",
        "its",
        "that",
        "which",
        "on",
        "in",
        "of",
        "to",
        "at",
        "into",
        "from",
        "across",
        "along",
        "over",
        "against",
        "while",
        "as",
        "there",
        "this",
        "video",
        "scene",
        "clip",
        "shows",
        "showing",
        "frame",
        "screen",
        "background",
        "backdrop",
        "plain",
        "solid",
        "colored",
        "coloured",
        "shape",
        "object",
        "toward",
        "towards",
        "side",
        "edge",
        "direction",
        "very",
        "then",
    ]
)
_WALL = re.compile(r"\b(?:dark|gray|grey|opaque)\s+wall")
_STILL_PHRASES = re.compile(r"\b(?:does not move|doesn't move|not moving|without moving|stays)\b")
_SHOT_BREAK = re.compile(r"\s*[.,;]?\s*(?:and\s+)?(?:then\s+)?(?:cuts?|switch(?:es)?)\s+to\s+")
_STATED = ("color", "size", "motion", "speed")


@dataclasses.dataclass(frozen=True)
class Expansion:
    prompt: str  # as the user wrote it
    detailed: str  # the detailed caption the DiT reads
    canonical: str  # the short canonical caption of the same scene (what the probe reads)
    stated: list  # per shot: {"background": bool, "objects": [{attribute: bool}]}
    sampled: dict  # "shot 1 object 2 size" -> the value drawn for what the prompt left out


def expand(prompt: str, *, frames: int, height: int, width: int, seed: int) -> Expansion:
    """Raises PromptNotUnderstood naming what it could not read."""
    scenes.check_clip_geometry(frames, height, width)
    shots = parse(prompt)
    if len(shots) > 1 and any(o["occluded"] for shot in shots for o in shot["objects"]):
        raise PromptNotUnderstood("occlusion (a wall) is shown in single-shot clips only")
    cuts = scenes.sample_cuts(np.random.default_rng([seed, 1]), frames, len(shots) - 1)
    if len(cuts) != len(shots) - 1:
        raise PromptNotUnderstood(
            f"{len(shots)} shots do not fit {frames} frames (at most {len(cuts) + 1})"
        )
    rng = np.random.default_rng(seed)
    sampled, stated, labels_shots = {}, [], []
    for s, ((start, end), shot) in enumerate(
        zip(zip([0, *cuts], [*cuts, frames], strict=True), shots, strict=True)
    ):
        where = f"shot {s + 1}" if len(shots) > 1 else ""
        labels_shots.append(_fill_shot(rng, shot, start, end, height, width, where, sampled))
        stated.append(
            {
                "background": shot["background"] is not None,
                "objects": [{a: o[a] is not None for a in _STATED} for o in shot["objects"]],
            }
        )
    labels = {"background": labels_shots[0]["background"], "shots": labels_shots}
    return Expansion(
        prompt=prompt,
        detailed=captions.detailed_caption(labels, height, width, rng),
        canonical=captions.short_caption(labels),
        stated=stated,
        sampled=sampled,
    )


def parse(prompt: str) -> list[dict]:
    """Prompt -> shots [{"background", "objects": [{shape, color, size, motion, speed,
    occluded}]}] with None for what it leaves out."""
    text = " ".join(prompt.lower().split())
    if not text:
        raise PromptNotUnderstood("empty prompt")
    text = _STILL_PHRASES.sub("still", _WALL.sub("wall", text))
    return [_parse_shot(part, prompt) for part in _SHOT_BREAK.split(text) if part.strip(" .")]


def _parse_shot(text: str, prompt: str) -> dict:
    words = re.findall(r"[a-z]+", text)
    unknown = [w for w in words if not _known(w)]
    if unknown:
        raise PromptNotUnderstood(
            f"cannot read {sorted(set(unknown))} in {prompt!r}: Shapes World prompts name "
            "shapes (circle, square, triangle), colours, sizes, a direction or 'still', a "
            "speed, a background and walls"
        )
    backgrounds = {BACKGROUND_WORDS[w] for w in words if w in BACKGROUND_WORDS}
    if len(backgrounds) > 1:
        raise PromptNotUnderstood(f"more than one background in {prompt!r}: {sorted(backgrounds)}")
    anchors = [i for i, w in enumerate(words) if w in SHAPE_WORDS]
    if not anchors:
        raise PromptNotUnderstood(f"no shape (circle, square, triangle or a synonym) in {prompt!r}")
    # An object's words run from the adjectives before its shape to the next object's.
    starts = []
    for i in anchors:
        j = i
        while j > 0 and (words[j - 1] in COLOR_WORDS or words[j - 1] in SIZE_WORDS):
            j -= 1
        starts.append(j)
    starts[0] = 0  # words before the first shape ("a still circle") are about it
    objects = []
    for k, anchor in enumerate(anchors):
        span = words[starts[k] : starts[k + 1] if k + 1 < len(anchors) else len(words)]
        objects.append(_parse_object(words[anchor], span, prompt))
    return {"background": backgrounds.pop() if backgrounds else None, "objects": objects}


def _known(word: str) -> bool:
    tables = (COLOR_WORDS, SHAPE_WORDS, SIZE_WORDS, MOTION_WORDS, SPEED_WORDS, BACKGROUND_WORDS)
    sets = (MOVING_WORDS, OCCLUSION_WORDS, FILLER_WORDS)
    return any(word in t for t in tables) or any(word in s for s in sets)


def _parse_object(shape_word: str, span: list[str], prompt: str) -> dict:
    def one(table, what):
        values = {table[w] for w in span if w in table}
        if len(values) > 1:
            raise PromptNotUnderstood(f"one object with two {what}s in {prompt!r}: {values}")
        return values.pop() if values else None

    motion = one(MOTION_WORDS, "motion")
    speed = one(SPEED_WORDS, "speed")
    if motion == vocab.STILL and speed is not None:
        raise PromptNotUnderstood(f"a still object has no speed, in {prompt!r}")
    return {
        "shape": SHAPE_WORDS[shape_word],
        "color": one(COLOR_WORDS, "colour"),
        "size": one(SIZE_WORDS, "size"),
        "motion": motion,
        "moving": motion is None and any(w in MOVING_WORDS for w in span),
        "speed": speed,
        "occluded": any(w in OCCLUSION_WORDS for w in span),
    }


def _fill_shot(rng, shot, start, end, height, width, where, sampled) -> dict:
    """The shot's labels, with what the prompt left out drawn from `rng` into `sampled`."""

    def draw(key, options):
        value = str(rng.choice(options))
        sampled[" ".join(p for p in (where, key) if p)] = value
        return value

    background = shot["background"] or draw("background", list(vocab.BACKGROUNDS))
    occluded = any(o["occluded"] for o in shot["objects"])
    if occluded and len(shot["objects"]) > 1:
        raise PromptNotUnderstood("an occlusion shot shows a single object passing a wall")
    taken = [o["color"] for o in shot["objects"] if o["color"]]
    if len(taken) != len(set(taken)):
        raise PromptNotUnderstood("objects in one shot need different colours")
    objects = []
    for i, obj in enumerate(shot["objects"]):
        name = f"object {i + 1}" if len(shot["objects"]) > 1 else "object"
        color = obj["color"] or draw(f"{name} color", [c for c in vocab.COLORS if c not in taken])
        taken.append(color)
        if occluded:
            size, speed = obj["size"] or "small", obj["speed"] or "quickly"
            motion = obj["motion"] or draw(f"{name} motion", list(scenes.OCCLUSION_MOTIONS))
        else:
            size = obj["size"] or draw(f"{name} size", list(vocab.SIZES))
            moves = [m for m in vocab.MOTIONS if m != vocab.STILL]
            still_ok = not (obj["moving"] or obj["speed"])
            motion = obj["motion"] or draw(
                f"{name} motion",
                [vocab.STILL] if end - start == 1 else moves + [vocab.STILL] * still_ok,
            )
            speed = None
            if motion != vocab.STILL:
                speed = obj["speed"] or draw(f"{name} speed", list(vocab.SPEEDS))
        if end - start == 1 and motion != vocab.STILL:
            raise PromptNotUnderstood("a single frame cannot show motion")
        objects.append(
            {"color": color, "shape": obj["shape"], "size": size, "motion": motion, "speed": speed}
        )
    try:
        if occluded:
            return scenes.place_occlusion_shot(
                rng, objects[0], background, end - start, height, width
            )
        return scenes.place_shot(rng, objects, background, start, end, height, width)
    except ValueError as e:
        raise PromptNotUnderstood(str(e)) from e
