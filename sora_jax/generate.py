"""`sora-jax generate`: videos from text with a trained run (CLI.md).

    sora-jax generate --checkpoint W --prompt "a small red circle moves left" --out O.mp4
    sora-jax generate --checkpoint W --prompts prompts.jsonl --out_dir D

Each video is written with a sidecar JSON (O.json: prompt, seed, task, sampler settings, the
run's config and checkpoint, timings). Every input is checked before anything is sampled, and
files are written atomically, so bad input never leaves partial output. Tasks other than
text-to-video (image-to-video, extension, interpolation, looping, video-to-video) are issue #5.
"""

import pathlib
import time

from absl import flags

from sora_jax import atomic, checkpoints, cli, dit_lib, prompt_files
from sora_jax.diffusion import samplers
from sora_jax.video_io import WRITABLE_SUFFIXES, write_video

TASKS = ("t2v", "i2v", "extend", "interpolate", "loop", "v2v")

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A `sora-jax train` workdir.")
_PROMPT = flags.DEFINE_string("prompt", None, "The text prompt (one video).")
_OUT = flags.DEFINE_string("out", None, "Output video (.mp4/.gif/.webm/.mov) for --prompt.")
_PROMPTS = flags.DEFINE_string("prompts", None, 'A jsonl file: {"prompt": ..., "seed": ...}.')
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory for --prompts.")
_TASK = flags.DEFINE_enum("task", "t2v", TASKS, "Generation task.")
_FRAMES = flags.DEFINE_integer("frames", None, "Frames (1 + 4k); default: the run's clips.")
_HEIGHT = flags.DEFINE_integer("height", None, "Height (multiple of 16); default: the run's.")
_WIDTH = flags.DEFINE_integer("width", None, "Width (multiple of 16); default: the run's.")
_FPS = flags.DEFINE_float("fps", None, "Frames per second of the file; default: the run's.")
_STEPS = flags.DEFINE_integer("steps", 25, "Sampler steps.")
_CFG = flags.DEFINE_float("cfg", 4.0, "Classifier-free guidance scale (1 = none).")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed (per-line seeds in --prompts win).")
_SAMPLER = flags.DEFINE_enum("sampler", "euler", samplers.METHODS, "ODE solver.")


def read_jobs() -> list[dict]:
    """[{prompt, seed, out}] from --prompt/--out or --prompts/--out_dir; validated up front."""
    single = _PROMPT.value is not None or _OUT.value is not None
    batch = _PROMPTS.value is not None or _OUT_DIR.value is not None
    if single == batch:
        raise cli.UserError("give either --prompt and --out, or --prompts and --out_dir")
    if single:
        if not _PROMPT.value or not _PROMPT.value.strip():
            raise cli.UserError("empty prompt")
        if not _OUT.value:
            raise cli.UserError("--out is required with --prompt")
        out = pathlib.Path(_OUT.value)
        if out.suffix.lower() not in WRITABLE_SUFFIXES:
            raise cli.UserError(f"--out {out}: the suffix must be one of {WRITABLE_SUFFIXES}")
        return [{"prompt": _PROMPT.value, "seed": _SEED.value, "out": out}]
    if not _PROMPTS.value or not _OUT_DIR.value:
        raise cli.UserError("--prompts and --out_dir go together")
    path = pathlib.Path(_PROMPTS.value)
    jobs = []
    for entry in prompt_files.read_prompts(path):
        if entry.get("task", "t2v") != "t2v":
            raise cli.UserError(
                f"{path}:{entry['line']}: task {entry['task']!r} is not implemented yet (issue #5)"
            )
        out = pathlib.Path(_OUT_DIR.value) / f"{len(jobs):04d}.mp4"
        seed = int(entry.get("seed", _SEED.value))
        jobs.append({"prompt": entry["prompt"], "seed": seed, "out": out})
    return jobs


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if _TASK.value != "t2v":
        raise cli.UserError(f"--task {_TASK.value} is not implemented yet (issue #5)")
    if not _CHECKPOINT.value:
        raise cli.UserError("--checkpoint is required")
    if _STEPS.value < 1:
        raise cli.UserError(f"--steps must be at least 1, got {_STEPS.value}")
    jobs = read_jobs()
    start = time.perf_counter()
    with cli.user_errors(checkpoints.CheckpointError, FileNotFoundError):
        pipe = dit_lib.load_pipeline(_CHECKPOINT.value)
    load_s = time.perf_counter() - start
    frames, height, width = pipe.config.data.sizes[0]
    frames, height, width = (
        _FRAMES.value or frames,
        _HEIGHT.value or height,
        _WIDTH.value or width,
    )
    if height % 16 or width % 16:
        raise cli.UserError(f"height and width must be multiples of 16, got {height}x{width}")
    with cli.user_errors(ValueError):
        pipe.latent_shape(1, frames, height, width)
        pipe.embed([job["prompt"] for job in jobs])  # tokenizes: empty prompts fail here
    fps = _FPS.value or pipe.config.data.fps
    for job in jobs:
        job["out"].parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        video = pipe.generate(
            [job["prompt"]],
            frames=frames,
            height=height,
            width=width,
            steps=_STEPS.value,
            cfg=_CFG.value,
            seed=job["seed"],
            method=_SAMPLER.value,
        )[0]
        sample_s = time.perf_counter() - start
        with cli.user_errors(ValueError):
            write_video(job["out"], video, fps=fps)
        record = {
            "prompt": job["prompt"],
            "seed": job["seed"],
            "task": "t2v",
            "frames": frames,
            "height": height,
            "width": width,
            "fps": fps,
            "steps": _STEPS.value,
            "cfg": _CFG.value,
            "sampler": _SAMPLER.value,
            "checkpoint": str(pathlib.Path(_CHECKPOINT.value).resolve()),
            "step": pipe.step,
            "config": pipe.config.to_dict(),
            "timings_s": {"load": round(load_s, 3), "generate": round(sample_s, 3)},
        }
        atomic.write_json(job["out"].with_suffix(".json"), record)
        print(f"wrote {job['out']} ({sample_s:.1f} s)")


if __name__ == "__main__":
    cli.run(main)
