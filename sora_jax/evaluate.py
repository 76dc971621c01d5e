"""`sora-jax eval`: held-out evaluation of a trained text-to-video run (CLI.md).

    sora-jax eval --checkpoint W --out_dir D [--suite default] [--num_prompts 100] [--prompts FILE]

`--suite default` runs the held-out prompt suite (`eval_suite.py`, sora_jax/eval_suite.jsonl):
one prompt set per category (every attribute value, held-out compositions, multi-object,
occlusion) with each row's own seed and FVD against the very clips the rows caption, and every
task on the suite's held-out clips; `--num_prompts` / `--num_task_clips` cap each category /
task. `--suite FILE` runs another file of that format.

Without it, eval generates videos for Shapes World prompts of the train distribution (clips the
run never saw) and of the held-out (colour, shape) pairs, reads each back with the probe, and writes
D/report.json (adherence overall and per attribute for each prompt set, each set's FVD against
the real clips its prompts caption, per-video rows, settings, timings), every video as a GIF, a
grid GIF per set, and D/index.html: a gallery with every video playing inline beside its prompt,
the probe's reading and pass/fail, under summary tables (`eval_lib.py`). `--prompts` replaces
both sets with the prompts of a jsonl file (no FVD then): canonical Shapes World captions, or
looser prompts that prompt expansion can read ("a tiny crimson ball heading left fast"), which
the probe then scores on the attributes they state. `--expand_prompt` has the model read each
prompt's expansion into a detailed caption (`prompt_expansion.py`) instead of the prompt.
`--sizes` runs every set at each given FRAMESxHEIGHTxWIDTH (aspect ratios and resolutions the
run did or did not train on), reported as `<set>_<size>`.

`--tasks` also runs the conditioned tasks on held-out clips (`task_eval.py`: i2v frame-0 PSNR,
seam continuity and identity for extension / interpolation / loops, v2v colour edits, cuts of
multi-shot prompts) into report["tasks"]. `--compare A,B` prints two or more reports side by
side with differences (and writes D/compare.html with --out_dir; `compare.py`). Every prompt
goes through the safety policy first (`--allow_unsafe_prompts` turns it off; report["settings"]
records which).
"""

import functools
import json
import pathlib
import time

import numpy as np
from absl import flags

from sora_jax import (
    cli,
    compare,
    dit_lib,
    eval_lib,
    eval_suite,
    output_flags,
    probe_eval,
    prompt_files,
    sampler_flags,
    task_eval,
)

SPLITS = ("train", "heldout")
# Train-distribution prompts start after the clips the run trained on.
_START = {"train": lambda data: data.num_clips, "heldout": lambda data: 0}

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A `sora-jax train` workdir.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where report.json and the grids go.")
_PROMPTS = flags.DEFINE_string("prompts", None, 'A jsonl file of {"prompt": ...} to evaluate.')
_SUITE = flags.DEFINE_string(
    "suite", None, "A prompt suite jsonl (eval_suite.py); 'default': the held-out suite shipped."
)
_EXPAND_PROMPT = flags.DEFINE_bool(
    "expand_prompt",
    False,
    "Rewrite every prompt into a detailed caption first (prompt_expansion.py); the report "
    "records each expansion and the choices it drew.",
)
_SPLITS = flags.DEFINE_multi_enum("splits", list(SPLITS), SPLITS, "Prompt sets (no --prompts).")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 100, "Prompts per set (no --prompts).")
_SEED = flags.DEFINE_integer(
    "seed", 0, "Added to every video's noise seed (prompt i of a built-in set: seed + i)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Videos sampled at once.")
_GRID = flags.DEFINE_integer("grid", 16, "Videos in each set's grid GIF (0: none).")
_TASKS = flags.DEFINE_string(
    "tasks",
    "auto",
    f"Comma-separated conditioned tasks out of {','.join(task_eval.TASKS)}; 'auto': those the "
    "run trained for (v2v and multi_shot always); 'none'.",
)
_NUM_TASK_CLIPS = flags.DEFINE_integer("num_task_clips", 50, "Held-out clips per task.")
_STRENGTH = flags.DEFINE_float("strength", 0.7, "v2v: SDEdit strength.")
_FVD = flags.DEFINE_bool(
    "fvd", True, "FVD of each built-in set against the real clips its prompts caption."
)
_COMPARE = flags.DEFINE_list(
    "compare", [], "Compare these eval reports (report.json or their directories) instead."
)
_SIZES = flags.DEFINE_list(
    "sizes",
    [],
    "Text-to-video sizes FRAMESxHEIGHTxWIDTH (e.g. 17x64x64,17x48x80,17x96x96), each evaluating "
    "every prompt set; default: the run's first training size (the suite's clip size with "
    "--suite).",
)


def video_sizes(pipe: dit_lib.Pipeline, suite: list[dict] | None) -> list[tuple[int, int, int]]:
    """--sizes parsed and checked against the VAE and patch factors (default: the suite's clip
    size, else the training size)."""
    if not _SIZES.value:
        return [eval_suite.size_of(suite) if suite else tuple(pipe.config.data.sizes[0])]
    sizes = []
    for text in _SIZES.value:
        try:
            size = tuple(int(n) for n in text.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 3:
            raise cli.UserError(f"--sizes {text!r}: expected FRAMESxHEIGHTxWIDTH, e.g. 17x48x80")
        with cli.user_errors(ValueError):
            pipe.latent_shape(1, *size)
        sizes.append(size)
    return sizes


def task_names(pipe: dit_lib.Pipeline) -> list[str]:
    """The --tasks to run; 'auto' keeps those the run's task mixture trained."""
    if _TASKS.value == "none":
        return []
    if _TASKS.value != "auto":
        names = [t.strip() for t in _TASKS.value.split(",") if t.strip()]
        unknown = sorted(set(names) - set(task_eval.TASKS))
        if unknown:
            raise cli.UserError(f"unknown --tasks {unknown}; expected some of {task_eval.TASKS}")
        return names
    weights = pipe.config.tasks.weights.to_dict() if "tasks" in pipe.config else {}
    trained = {t for t, w in weights.items() if w > 0}
    if "interpolate" in trained:
        trained.add("loop")  # a loop is an interpolation back to its first frame
    if "extend_forward" in trained:
        trained.add("long_video")  # forward extensions, window after window
    # v2v (SDEdit) needs no training of its own; multi-shot is text to video.
    return [t for t in task_eval.TASKS if t in trained or t in ("v2v", "multi_shot")]


def suite_rows() -> list[dict] | None:
    """The rows of --suite ('default': the shipped held-out suite), or None."""
    if not _SUITE.value:
        return None
    if _PROMPTS.value:
        raise cli.UserError("--suite and --prompts are alternatives; pass one")
    return eval_suite.load(suite_path())


def suite_path():
    return eval_suite.SUITE_FILE if _SUITE.value == "default" else _SUITE.value


def prompt_sets(pipe: dit_lib.Pipeline, suite: list[dict] | None) -> dict:
    """{set name: PromptSet} from --suite (a set a category), --prompts, or the probe's train /
    held-out sets."""
    if _NUM_PROMPTS.value < 1:
        raise cli.UserError(f"--num_prompts must be at least 1, got {_NUM_PROMPTS.value}")
    if suite:
        t2v, _ = eval_suite.groups(suite, _NUM_PROMPTS.value)
        return {
            category: probe_eval.PromptSet(
                [r["prompt"] for r in rows], [r["seed"] + _SEED.value for r in rows]
            )
            for category, rows in t2v.items()
        }
    if _PROMPTS.value:
        entries = prompt_files.read_prompts(_PROMPTS.value)
        return {
            "prompts": probe_eval.PromptSet.numbered([e["prompt"] for e in entries], _SEED.value)
        }
    data = pipe.config.data
    if data.source != "shapes_world":
        raise cli.UserError(
            f"the run trained on data.source={data.source!r}: the built-in prompt sets are "
            "Shapes World's; pass --prompts"
        )
    return {
        split: probe_eval.PromptSet.numbered(
            probe_eval.probe_prompts(data, split, _NUM_PROMPTS.value, _START[split](data)),
            _SEED.value,
        )
        for split in _SPLITS.value
    }


def task_clips(pipe: dit_lib.Pipeline, tasks: list[str], suite: list[dict] | None) -> dict:
    """{task: TaskClips}: the suite's clips of each task, or the run world's held-out clips."""
    if not tasks:
        return {}
    if _NUM_TASK_CLIPS.value < 1:
        raise cli.UserError(f"--num_task_clips must be at least 1, got {_NUM_TASK_CLIPS.value}")
    if not suite:
        if pipe.config.data.source != "shapes_world":
            raise cli.UserError("--tasks runs on Shapes World clips; the run trained on other data")
        return task_eval.default_clips(pipe.config.data, tasks, _NUM_TASK_CLIPS.value, _SEED.value)
    _, by_task = eval_suite.groups(suite, _NUM_TASK_CLIPS.value)
    clips = {}
    for task in tasks:
        rows = by_task.get(task)
        if not rows:
            raise cli.UserError(f"the suite has no clips for task {task!r}; pass --tasks")
        with cli.user_errors(ValueError):
            given = [eval_suite.clip(r) for r in rows]
        clips[task] = task_eval.TaskClips(
            np.stack([c["video"] for c in given]),
            [c["caption"] for c in given],
            [r["seed"] + _SEED.value for r in rows],
            [c["labels"] for c in given],
        )
    return clips


def reference_clips(pipe: dit_lib.Pipeline, suite: list[dict] | None) -> dict:
    """{set: size -> real clips or None} for FVD: the very clips whose captions are the set's
    prompts, rendered at the size evaluated (a suite's only at its clip size; none for
    --prompts)."""
    if _PROMPTS.value or not _FVD.value:
        return {}
    if suite:
        t2v, _ = eval_suite.groups(suite, _NUM_PROMPTS.value)

        def suite_clips(rows, size):
            if size != eval_suite.size_of(rows):
                return None
            return np.stack([eval_suite.clip(r)["video"] for r in rows])

        return {category: functools.partial(suite_clips, rows) for category, rows in t2v.items()}
    data = pipe.config.data

    def clips(split, size):
        start = _START[split](data)
        return probe_eval.probe_clips(data, split, _NUM_PROMPTS.value, start, size)[0]

    return {split: functools.partial(clips, split) for split in _SPLITS.value}


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if _COMPARE.value:
        with cli.user_errors(FileNotFoundError, ValueError, json.JSONDecodeError):
            reports = compare.load(_COMPARE.value)
        print(compare.text_table(reports))
        if _OUT_DIR.value:
            print(f"wrote {compare.write(reports, _OUT_DIR.value)}")
        return
    if not _CHECKPOINT.value or not _OUT_DIR.value:
        raise cli.UserError("--checkpoint and --out_dir are required")
    sampling = sampler_flags.settings()
    if _BATCH_SIZE.value < 1:
        raise cli.UserError(f"--batch_size must be at least 1, got {_BATCH_SIZE.value}")
    suite = suite_rows()
    start = time.perf_counter()
    pipe = sampler_flags.load_pipeline(_CHECKPOINT.value)
    load_s = time.perf_counter() - start
    sets = prompt_sets(pipe, suite)
    clips = task_clips(pipe, task_names(pipe), suite)
    sizes = video_sizes(pipe, suite)
    with cli.user_errors(ValueError, OSError):
        for name, prompt_set in sets.items():  # reads every prompt: fails fast on one it cannot
            sets[name] = probe_eval.with_expansions(prompt_set, _EXPAND_PROMPT.value, *sizes[0])
        prompts = [p for s in sets.values() for p in s.prompts]
        captions = [c for g in clips.values() for c in g.captions]
        safety = output_flags.enforce_policy(prompts + captions)
        signer = output_flags.signer()

    settings = eval_lib.Settings(
        sizes=tuple(sizes),
        **sampling,
        seed=_SEED.value,
        batch_size=_BATCH_SIZE.value,
        grid=_GRID.value,
        num_task_clips=_NUM_TASK_CLIPS.value,
        strength=_STRENGTH.value,
        fvd=_FVD.value,
        expand_prompt=_EXPAND_PROMPT.value,
        suite=str(
            pathlib.Path(
                eval_suite.SUITE_FILE if _SUITE.value == "default" else _SUITE.value
            ).resolve()
        )
        if suite
        else "",
    )
    checkpoint = str(pathlib.Path(_CHECKPOINT.value).resolve())
    out_dir = pathlib.Path(_OUT_DIR.value)
    eval_lib.evaluate(
        pipe, sets, clips, settings, out_dir, checkpoint=checkpoint, safety=safety,
        signer=signer,
        references=reference_clips(pipe, suite), timings={"load": round(load_s, 3)},
    )  # fmt: skip
    print(f"report in {out_dir / 'report.json'}, gallery in {out_dir / 'index.html'}")


if __name__ == "__main__":
    cli.run(main)
