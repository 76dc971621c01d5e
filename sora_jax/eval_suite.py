"""The held-out prompt suite that `sora-jax eval --suite` runs (`eval_suite.jsonl`, built here).

Every row is the caption of a real Shapes World clip of a world no run trains on by default
(`WORLD_SEED`), so every prompt is a scene the world can render, and that clip is the row's FVD
reference (text to video) or its given frames (tasks). A row:

    {"id": "attribute/color/red/0", "category": "attribute", "prompt": "...", "seed": 0,
     "clip": {"split": "train", "world_seed": 1203, "index": 17, "kind": "single",
              "frames": 17, "height": 64, "width": 64}, ...}

Categories (`CATEGORIES`), each a prompt set of the report:
- `attribute`: every value of every attribute (colour, shape, size, motion, speed, background),
  `PER_VALUE` single-object train-split prompts each (row fields `attribute`, `value`);
- `heldout_composition`: the held-out (colour, shape) pairs, never trained on (`pair`);
- `multi_object`: two and three objects in one clip;
- `occlusion`: an object passing behind a wall (object permanence: the probe's `reappears`);
- `task`: every conditioned task of `task_eval.TASKS` on held-out clips (`task`); `multi_shot`
  runs on two-shot clips, the rest on clips of the default scene mix.

Seeds are row numbers: a video depends on its row alone, not on the batch it is sampled in.
The file is generated, never edited: `python -m sora_jax.eval_suite` rewrites it, and
tests/test_eval_suite.py checks that it equals `build()`.
"""

import json
import pathlib

from sora_jax import cli, prompt_files, task_eval
from sora_jax.data.shapes_world import captions, scenes, vocab, world

SUITE_FILE = pathlib.Path(__file__).with_name("eval_suite.jsonl")
WORLD_SEED = 1203
SIZE = (17, 64, 64)  # (frames, height, width) every row's clip is drawn at
PER_VALUE = 2
PER_HELDOUT_PAIR = 3
MULTI_OBJECT = {"two": 4, "three": 4}
OCCLUSION = 6
PER_TASK = 4
CATEGORIES = ("attribute", "heldout_composition", "multi_object", "occlusion", "task")
ATTRIBUTE_VALUES = {
    "color": tuple(vocab.COLORS),
    "shape": vocab.SHAPES,
    "size": tuple(vocab.SIZES),
    "motion": tuple(vocab.MOTIONS),
    "speed": tuple(vocab.SPEEDS),
    "background": tuple(vocab.BACKGROUNDS),
}
_MAX_SEARCH = 10_000  # clips scanned for one category's rows


def build() -> list[dict]:
    """Every row of the suite, in file order (deterministic)."""
    rows = []
    for attribute, values in ATTRIBUTE_VALUES.items():
        for value in values:

            def has_value(labels, attribute=attribute, value=value):
                return _value(labels, attribute) == value

            for j, found in enumerate(_find("train", "single", PER_VALUE, has_value)):
                rows.append(
                    _row(f"attribute/{attribute}/{value}/{j}", "attribute", *found,
                         attribute=attribute, value=value)
                )  # fmt: skip
    for color, shape in sorted(vocab.HELDOUT_PAIRS):

        def has_pair(labels, pair=(color, shape)):
            return _pair(labels) == pair

        for j, found in enumerate(_find("heldout", "single", PER_HELDOUT_PAIR, has_pair)):
            rows.append(
                _row(f"heldout_composition/{color}_{shape}/{j}", "heldout_composition", *found,
                     pair=[color, shape])
            )  # fmt: skip
    for kind, count in MULTI_OBJECT.items():
        for j, found in enumerate(_find("train", kind, count)):
            rows.append(_row(f"multi_object/{kind}/{j}", "multi_object", *found))
    for j, found in enumerate(_find("train", "occlusion", OCCLUSION)):
        rows.append(_row(f"occlusion/{j}", "occlusion", *found))
    for task in task_eval.TASKS:
        kind = "multi_shot" if task == "multi_shot" else "default"
        for j, found in enumerate(_find("heldout", kind, PER_TASK)):
            rows.append(_row(f"task/{task}/{j}", "task", *found, task=task))
    return [{**row, "seed": seed} for seed, row in enumerate(rows)]


def write(path=SUITE_FILE) -> pathlib.Path:
    path = pathlib.Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in build()))
    return path


def load(path=SUITE_FILE) -> list[dict]:
    """The suite's rows, checked (`cli.UserError` names the first bad line)."""
    rows = prompt_files.read_prompts(path)
    for row in rows:
        where = f"{path}:{row['line']}"
        if row.get("category") not in CATEGORIES:
            raise cli.UserError(
                f"{where}: category {row.get('category')!r} is not one of {CATEGORIES}"
            )
        if row["category"] == "task" and row.get("task") not in task_eval.TASKS:
            raise cli.UserError(
                f"{where}: task {row.get('task')!r} is not one of {task_eval.TASKS}"
            )
        if not isinstance(row.get("seed"), int) or not isinstance(row.get("clip"), dict):
            raise cli.UserError(f'{where}: needs an integer "seed" and a "clip"')
    return rows


def clip(row: dict) -> dict:
    """The Shapes World clip a row's prompt captions (`world.generate_clip`), with its labels;
    ValueError when the world no longer draws that caption (the suite needs rebuilding)."""
    spec = row["clip"]
    out = world.generate_clip(
        spec["index"], split=spec["split"], seed=spec["world_seed"], frames=spec["frames"],
        height=spec["height"], width=spec["width"], mix=scenes.only(spec["kind"]),
    )  # fmt: skip
    if out["caption"] != row["prompt"]:
        raise ValueError(
            f"suite row {row['id']}: the world now draws {out['caption']!r} for its clip, not "
            f"{row['prompt']!r}; rebuild the suite (python -m sora_jax.eval_suite)"
        )
    return out


def size_of(rows: list[dict]) -> tuple[int, int, int]:
    """The one (frames, height, width) the rows' clips share."""
    sizes = {(r["clip"]["frames"], r["clip"]["height"], r["clip"]["width"]) for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"rows of several clip sizes: {sorted(sizes)}")
    return sizes.pop()


def groups(rows: list[dict], limit: int | None = None) -> tuple[dict, dict]:
    """({category: rows} of text to video, {task: rows}), each at most `limit` rows long."""
    t2v, tasks = {}, {}
    for row in rows:
        group = (
            tasks.setdefault(row["task"], [])
            if row["category"] == "task"
            else t2v.setdefault(row["category"], [])
        )
        if limit is None or len(group) < limit:
            group.append(row)
    return t2v, tasks


def _find(split: str, kind: str, count: int, accept=lambda labels: True) -> list[tuple]:
    """(split, kind, index, labels) of the first `count` clips of (split, kind) whose labels
    `accept` takes."""
    frames, height, width = SIZE
    found = []
    for index in range(_MAX_SEARCH):
        labels = world.generate_clip(
            index, split=split, seed=WORLD_SEED, frames=frames, height=height, width=width,
            mix=scenes.only(kind), draw=False,
        )["labels"]  # fmt: skip
        if accept(labels):
            found.append((split, kind, index, labels))
            if len(found) == count:
                return found
    raise ValueError(f"only {len(found)} of {count} {split}/{kind} clips in {_MAX_SEARCH} tried")


def _row(row_id, category, split, kind, index, labels, **fields) -> dict:
    frames, height, width = SIZE
    spec = dict(split=split, world_seed=WORLD_SEED, index=index, kind=kind, frames=frames,
                height=height, width=width)  # fmt: skip
    return {"id": row_id, "category": category, "prompt": captions.short_caption(labels),
            **fields, "clip": spec}  # fmt: skip


def _value(labels: dict, attribute: str):
    if attribute == "background":
        return labels["background"]
    (obj,) = labels["shots"][0]["objects"]
    return obj[attribute]


def _pair(labels: dict) -> tuple[str, str]:
    (obj,) = labels["shots"][0]["objects"]
    return obj["color"], obj["shape"]


if __name__ == "__main__":
    print(f"wrote {write()}")
