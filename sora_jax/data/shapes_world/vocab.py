"""Shapes World vocabulary: the canonical words and their pixel meaning.

This file is the single source of the contract in shared/SHAPES_WORLD.md: the generator, the
caption grammar and the probe all read these tables, so they cannot drift apart.
"""

from typing import Final

BACKGROUNDS: Final = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}

COLORS: Final = {
    "red": (230, 25, 25),
    "green": (25, 200, 25),
    "blue": (30, 60, 230),
    "yellow": (240, 220, 20),
    "purple": (150, 40, 200),
    "orange": (255, 140, 0),
    "cyan": (0, 210, 210),
    "pink": (255, 105, 180),
}

SHAPES: Final = ("circle", "square", "triangle")

# Object extent (bounding-box side) as a fraction of min(H, W).
SIZES: Final = {"small": 1 / 6, "large": 1 / 3}

# (dy, dx) unit direction of each motion; image rows grow downwards.
MOTIONS: Final = {
    "moves left": (0, -1),
    "moves right": (0, 1),
    "moves up": (-1, 0),
    "moves down": (1, 0),
    "stays still": (0, 0),
}
STILL: Final = "stays still"

# Speed in pixels per frame as a fraction of the frame's extent along the motion axis (the width
# for horizontal motion, the height for vertical motion, so that non-square frames keep the
# object on screen for the default clip).
SPEEDS: Final = {"slowly": 1 / 48, "quickly": 1 / 24}

# Occluding wall: a vertical opaque bar. On a gray background the wall is darker and captions call
# it a "dark wall" so that it stays distinguishable from the background.
WALL_COLORS: Final = {"gray": (90, 90, 90), "dark": (40, 40, 40)}


def wall_name(background: str) -> str:
    """The caption word for the wall drawn on `background`."""
    return "dark" if background == "gray" else "gray"


HELDOUT_PAIRS: Final = frozenset(
    {("purple", "triangle"), ("orange", "circle"), ("cyan", "square"), ("green", "triangle")}
)

SPLITS: Final = ("train", "heldout")
SPLIT_IDS: Final = {"train": 0, "heldout": 1}

SHOT_SEPARATOR: Final = ". Then cut to "


def allowed_pairs(split: str) -> list[tuple[str, str]]:
    """(color, shape) pairs whose objects may appear in `split`."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown Shapes World split {split!r}; expected one of {SPLITS}")
    all_pairs = [(c, s) for c in COLORS for s in SHAPES]
    if split == "heldout":
        return [p for p in all_pairs if p in HELDOUT_PAIRS]
    return [p for p in all_pairs if p not in HELDOUT_PAIRS]
