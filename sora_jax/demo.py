"""`sora-jax demo`: the shipped tiny model doing every task on held-out prompts, as a gallery.

    sora-jax demo [--out_dir demo_out] [--checkpoint checkpoints/tiny] [--cfg 7 --steps 25 ...]

Loads the bundle committed under `checkpoints/` (see its MODEL_CARD.md), generates text to video
for held-out Shapes World prompts (colour/shape pairs never trained on) at a square and a
non-square size, and every conditioned task on held-out clips (image to video, extension both
ways, interpolation, loop, video to video, multi-shot, long video), reads each video back with
the probe, and writes `index.html` (every video inline with its prompt, the probe's reading and
pass/fail), `report.json` and the videos, each with C2PA credentials. The same code as
`sora-jax eval` (`eval_lib.py`) with small counts, sized to finish in a few minutes on 2 cores.
"""

import pathlib
import time

from absl import flags

from sora_jax import (
    cli,
    eval_lib,
    output_flags,
    probe_eval,
    sampler_flags,
    task_eval,
)

SHIPPED = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "tiny"

_OUT_DIR = flags.DEFINE_string("out_dir", "demo_out", "Where to write the gallery.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", str(SHIPPED), "A bundle or `train` workdir; default: the shipped model."
)
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 8, "Held-out text-to-video prompts per size.")
_NUM_TASK_CLIPS = flags.DEFINE_integer("num_task_clips", 4, "Held-out clips per task.")
_TASKS = flags.DEFINE_list("tasks", list(task_eval.TASKS), "Conditioned tasks to show.")


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if _NUM_PROMPTS.value < 1 or _NUM_TASK_CLIPS.value < 1:
        raise cli.UserError("--num_prompts and --num_task_clips must be at least 1")
    sampling = sampler_flags.settings()  # the sampler flags of `generate` and `eval`
    unknown = sorted(set(_TASKS.value) - set(task_eval.TASKS))
    if unknown:
        raise cli.UserError(f"unknown --tasks {unknown}; expected some of {task_eval.TASKS}")
    start = time.perf_counter()
    pipe = sampler_flags.load_pipeline(_CHECKPOINT.value)
    load_s = time.perf_counter() - start
    frames, height, width = pipe.config.data.sizes[0]
    prompts = probe_eval.probe_prompts(pipe.config.data, "heldout", _NUM_PROMPTS.value)
    with cli.user_errors(ValueError, OSError):
        safety = output_flags.enforce_policy(prompts)
        signer = output_flags.signer()
    settings = eval_lib.Settings(
        # The training size, and a landscape one of about its pixel count.
        sizes=(
            (frames, height, width),
            (frames, _round16(height * 3 // 4), _round16(width * 5 // 4)),
        ),
        **sampling,
        batch_size=max(_NUM_PROMPTS.value, _NUM_TASK_CLIPS.value),
        grid=0,
        num_task_clips=_NUM_TASK_CLIPS.value,
        fvd=False,  # meaningless on a handful of clips (see `sora-jax eval`)
    )
    with cli.user_errors(ValueError):
        for size in settings.sizes:
            pipe.latent_shape(1, *size)
    out_dir = pathlib.Path(_OUT_DIR.value)
    clips = task_eval.default_clips(pipe.config.data, _TASKS.value, _NUM_TASK_CLIPS.value)
    report = eval_lib.evaluate(
        pipe, {"heldout": probe_eval.PromptSet.numbered(prompts)}, clips, settings, out_dir,
        checkpoint=_CHECKPOINT.value, safety=safety, signer=signer,
        timings={"load": round(load_s, 3)},
        title="sora_jax demo: the shipped tiny model on held-out prompts",
    )  # fmt: skip
    print(
        f"wrote {len(report['videos'])} videos to {out_dir / 'index.html'} in "
        f"{time.perf_counter() - start:.0f} s"
    )


def _round16(pixels: int) -> int:
    return max(16, pixels // 16 * 16)


if __name__ == "__main__":
    cli.run(main)
