"""Shapes World captions: the short canonical grammar (write and parse) and detailed captions.

Short captions follow shared/SHAPES_WORLD.md exactly:
  `a {size} {color} {shape} {motion} [{speed}] [and passes behind a {wall} wall]`
  `on a {bg} background`
with objects joined by ` and ` and shots by `. Then cut to `. Detailed captions are full sentences
in the style of a recaptioning model (Sora's DALL-E 3 recipe); they are drawn from varied phrasings
so a model trained on them sees more than one way of saying the same thing.
"""

import re

import numpy as np

from sora_jax.data.shapes_world import vocab

_ORDINALS = ("first", "second", "third")
_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


def short_caption(labels: dict) -> str:
    return vocab.SHOT_SEPARATOR.join(_short_shot(shot) for shot in labels["shots"])


def _short_shot(shot: dict) -> str:
    clauses = []
    for obj in shot["objects"]:
        clause = f"a {obj['size']} {obj['color']} {obj['shape']} {obj['motion']}"
        if obj["speed"]:
            clause += f" {obj['speed']}"
        if obj["occluded_frames"] and "wall" in shot:
            clause += f" and passes behind a {shot['wall']['color']} wall"
        clauses.append(clause)
    return " and ".join(clauses) + f" on a {shot['background']} background"


# ------------------------------------------------------------------------------------------------
# Parsing the short grammar back into attributes (used by the probe and by prompt checks).
# ------------------------------------------------------------------------------------------------
_ALT = "|".join
_OBJECT_RE = re.compile(
    rf"^a (?P<size>{_ALT(vocab.SIZES)}) (?P<color>{_ALT(vocab.COLORS)}) "
    rf"(?P<shape>{_ALT(vocab.SHAPES)}) (?P<motion>{_ALT(vocab.MOTIONS)})"
    rf"(?: (?P<speed>{_ALT(vocab.SPEEDS)}))?"
    rf"(?P<occluded> and passes behind a (?:{_ALT(vocab.WALL_COLORS)}) wall)?$"
)
_SHOT_RE = re.compile(
    rf"^(?P<objects>.+) on a (?P<background>{_ALT(vocab.BACKGROUNDS)}) background$"
)


def parse_caption(caption: str) -> list[dict]:
    """Short caption -> shots `[{"background", "objects": [{color, shape, size, motion, speed,
    occluded}]}]`. Raises ValueError naming the part that does not follow the grammar."""
    text = " ".join(caption.strip().lower().split()).rstrip(".")
    if not text:
        raise ValueError("empty caption")
    shots = []
    for shot_text in text.split(vocab.SHOT_SEPARATOR.lower()):
        match = _SHOT_RE.match(shot_text)
        if not match:
            raise ValueError(f"shot does not follow the Shapes World grammar: {shot_text!r}")
        objects = []
        # Objects are joined by " and a ..."; " and passes behind" stays inside its clause.
        for clause in re.split(r" and (?=a )", match["objects"]):
            obj = _OBJECT_RE.match(clause)
            if not obj:
                raise ValueError(f"object clause does not follow the grammar: {clause!r}")
            if obj["speed"] and obj["motion"] == vocab.STILL:
                raise ValueError(f"a still object has no speed: {clause!r}")
            objects.append(
                {
                    "color": obj["color"],
                    "shape": obj["shape"],
                    "size": obj["size"],
                    "motion": obj["motion"],
                    "speed": obj["speed"],
                    "occluded": bool(obj["occluded"]),
                }
            )
        shots.append({"background": match["background"], "objects": objects})
    return shots


# ------------------------------------------------------------------------------------------------
# Detailed captions.
# ------------------------------------------------------------------------------------------------
_MOVE_VERBS = ("glides", "slides", "travels", "drifts", "moves")
_MANNER = {
    "slowly": ("slowly", "at a slow pace", "gently"),
    "quickly": ("quickly", "at a fast pace", "briskly"),
}
_DIRECTION_PHRASE = {
    "moves left": "to the left",
    "moves right": "to the right",
    "moves up": "upward",
    "moves down": "downward",
}
_STILL_PHRASES = ("stays in place without moving", "remains still", "does not move at all")
_BACKGROUND_PHRASES = (
    "The background is plain {}.",
    "It is set against a plain {} background.",
    "Everything happens on a solid {} background.",
)


def detailed_caption(labels: dict, height: int, width: int, rng: np.random.Generator) -> str:
    shots = labels["shots"]
    parts = [_detailed_shot(s, height, width, rng) for s in shots]
    if len(parts) == 1:
        return parts[0]
    text = f"The video has {_COUNT_WORDS[len(parts)]} shots. In the first shot, " + _lower(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        cut = shots[i]["start_frame"]
        text += f" Then the scene cuts, at frame {cut}, to the {_ORDINALS[i]} shot: " + _lower(part)
    return text


def _detailed_shot(shot: dict, height: int, width: int, rng: np.random.Generator) -> str:
    objects = shot["objects"]
    sentences = []
    if len(objects) > 1:
        sentences.append(f"There are {_COUNT_WORDS[len(objects)]} objects.")
    for i, obj in enumerate(objects):
        name = f"{obj['size']} {obj['color']} {obj['shape']}"
        subject = f"The {_ORDINALS[i]} object, a {name}," if len(objects) > 1 else f"A {name}"
        start = next(c for c in obj["centroids"] if c is not None)
        where = _position_phrase(start, height, width, obj["motion"])
        if obj["motion"] == vocab.STILL:
            sentences.append(f"{subject} sits {where} and {rng.choice(_STILL_PHRASES)}.")
            continue
        verb = rng.choice(_MOVE_VERBS)
        sentences.append(
            f"{subject} starts {where} and {verb} steadily {_DIRECTION_PHRASE[obj['motion']]}."
        )
        pronoun = "It" if len(objects) == 1 else f"The {obj['color']} {obj['shape']}"
        sentences.append(f"{pronoun} moves {rng.choice(_MANNER[obj['speed']])}.")
        if obj["occluded_frames"] and "wall" in shot:
            wall = shot["wall"]["color"]
            sentences.append(
                f"Along the way it passes behind an opaque {wall} wall, disappears "
                "for a moment, and comes out on the other side unchanged."
            )
    sentences.append(str(rng.choice(_BACKGROUND_PHRASES)).format(shot["background"]))
    return " ".join(sentences)


def _position_phrase(centroid: list[float], height: int, width: int, motion: str) -> str:
    """Where the object starts, naming the edge a mover starts from when it starts near one."""
    y, x = centroid[0] / height, centroid[1] / width
    near_trailing_edge = {
        "moves left": (x > 0.7, "the right edge"),
        "moves right": (x < 0.3, "the left edge"),
        "moves up": (y > 0.7, "the bottom edge"),
        "moves down": (y < 0.3, "the top edge"),
    }.get(motion)
    if near_trailing_edge and near_trailing_edge[0]:
        return f"near {near_trailing_edge[1]} of the frame"
    vertical = "upper" if y < 1 / 3 else "lower" if y > 2 / 3 else "middle"
    horizontal = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "center"
    if vertical == "middle" and horizontal == "center":
        return "in the center of the frame"
    if vertical == "middle":
        return f"on the {horizontal} side of the frame"
    if horizontal == "center":
        return f"in the {vertical} part of the frame"
    return f"in the {vertical} {horizontal} part of the frame"


def _lower(sentence: str) -> str:
    return sentence[0].lower() + sentence[1:]


# ------------------------------------------------------------------------------------------------
# Parsing detailed captions back into attributes (how the captioner's output is scored).
# ------------------------------------------------------------------------------------------------
_SHOT_CUT_RE = re.compile(r" then the scene cuts, at frame (\d+), to the \w+ shot: ")
_MULTI_SHOT_INTRO_RE = re.compile(r"^the video has \w+ shots\. in the first shot, ")
_OBJECT_INTRO_RE = re.compile(
    rf"\ba ({_ALT(vocab.SIZES)}) ({_ALT(vocab.COLORS)}) ({_ALT(vocab.SHAPES)})\b"
)
_POSITION_RE = re.compile(r"\b(?:starts|sits) (.+?) and ")
_DETAILED_BACKGROUND_RE = re.compile(rf"\b(?:plain|solid) ({_ALT(vocab.BACKGROUNDS)})\b")
_DIRECTION_MOTION = {phrase: motion for motion, phrase in _DIRECTION_PHRASE.items()}
_MANNER_SPEED = {phrase: speed for speed, phrases in _MANNER.items() for phrase in phrases}


def parse_detailed_caption(caption: str) -> list[dict]:
    """Detailed caption -> shots `[{"background", "cut_frame", "objects": [{color, shape, size,
    position, motion, speed, occluded}]}]` (`cut_frame`: None for the first shot). Lenient about
    wording (any of the phrasings `detailed_caption` draws), strict about content: raises
    ValueError when a shot names no object or no background."""
    text = " ".join(caption.strip().lower().split())
    text = _MULTI_SHOT_INTRO_RE.sub("", text)
    pieces = _SHOT_CUT_RE.split(text)  # [shot, cut, shot, cut, shot, ...]
    shots = []
    for i in range(0, len(pieces), 2):
        cut = int(pieces[i - 1]) if i else None
        shots.append({"cut_frame": cut, **_parse_detailed_shot(pieces[i])})
    return shots


def _parse_detailed_shot(text: str) -> dict:
    background = _DETAILED_BACKGROUND_RE.findall(text)
    if len(background) != 1:
        raise ValueError(f"no single background named in {text!r}")
    intros = list(_OBJECT_INTRO_RE.finditer(text))
    if not intros:
        raise ValueError(f"no object (a <size> <color> <shape>) named in {text!r}")
    objects = []
    for intro, following in zip(intros, [*intros[1:], None], strict=True):
        about = text[intro.end() : following.start() if following else len(text)]
        position = _POSITION_RE.search(about)
        motion = next((m for p, m in _DIRECTION_MOTION.items() if f"steadily {p}" in about), None)
        if motion is None and any(p in about for p in _STILL_PHRASES):
            motion = vocab.STILL
        speed = next((s for p, s in _MANNER_SPEED.items() if f"moves {p}." in about), None)
        objects.append(
            {
                "size": intro[1],
                "color": intro[2],
                "shape": intro[3],
                "position": position[1] if position else None,
                "motion": motion,
                "speed": speed,
                "occluded": "passes behind an opaque" in about,
            }
        )
    return {"background": background[0], "objects": objects}
