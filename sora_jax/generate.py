"""`sora-jax generate`: videos from a trained run, for every task (CLI.md).

    sora-jax generate --checkpoint W --prompt "a small red circle moves left" --out O.mp4
    sora-jax generate --checkpoint W --task i2v --image first.png --prompt P --out O.mp4
    sora-jax generate --checkpoint W --task extend --video V.mp4 --direction backward ...
    sora-jax generate --checkpoint W --task interpolate --video A.mp4 --end_image B.png ...
    sora-jax generate --checkpoint W --task loop|v2v ... ; --frames 1 --out O.png: an image
    sora-jax generate --checkpoint W --prompts prompts.jsonl --out_dir D

`--frames` beyond the run's clip length (t2v, i2v) generates a long video by sliding-window
extension. Lines of a prompts file may carry their own task fields ("task", "image", "video",
"end_image", "end_video", "direction", "strength", "frames"). Each video is written with a
sidecar JSON (O.json: prompt, seed, task and its inputs, sampler settings, the run's config and
checkpoint, safety policy, timings), and the video itself carries signed C2PA credentials
(`provenance.py`; `sora-jax verify` reads them). `--expand_prompt` rewrites each prompt into the
detailed caption style the model trained on (`prompt_expansion.py`), recording the expansion and
the choices it drew in the sidecar. Prompts go through the safety policy
(`safety/policy.py`) first; `--allow_unsafe_prompts` turns it off and the sidecar and the
credentials say so. Every input is read and checked before anything is sampled, and files are
written atomically, so bad input never leaves partial output.
"""

import pathlib
import time

import numpy as np
from absl import flags

from sora_jax import (
    atomic,
    cli,
    output_flags,
    prompt_expansion,
    prompt_files,
    provenance,
    sampler_flags,
    task_generation,
)
from sora_jax.video_io import VideoDecodeError, read_image, read_video

TASKS = ("t2v", "i2v", "extend", "interpolate", "loop", "v2v")
_INPUTS = ("image", "end_image", "video", "end_video")

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A `sora-jax train` workdir.")
_PROMPT = flags.DEFINE_string("prompt", None, "The text prompt (one video).")
_OUT = flags.DEFINE_string("out", None, "Output video (.mp4/.gif/.mov; .png: 1 frame).")
_PROMPTS = flags.DEFINE_string("prompts", None, 'A jsonl file: {"prompt": ..., "seed": ...}.')
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory for --prompts.")
_TASK = flags.DEFINE_enum("task", "t2v", TASKS, "Generation task.")
_IMAGE = flags.DEFINE_string("image", None, "i2v: the first frame; interpolate/loop: the start.")
_END_IMAGE = flags.DEFINE_string("end_image", None, "interpolate: the frame to end on.")
_VIDEO = flags.DEFINE_string("video", None, "extend / v2v: the input; interpolate: the start.")
_END_VIDEO = flags.DEFINE_string("end_video", None, "interpolate: the clip to lead into.")
_DIRECTION = flags.DEFINE_enum("direction", "forward", ["forward", "backward"], "extend.")
_STRENGTH = flags.DEFINE_float("strength", 0.7, "v2v: how much of the input to redraw (0..1].")
_FRAMES = flags.DEFINE_integer(
    "frames", None, "Frames (1 + 4k; more than the run's clips: a long video); default: the run's."
)
_HEIGHT = flags.DEFINE_integer("height", None, "Height (multiple of 16); default: the run's.")
_WIDTH = flags.DEFINE_integer("width", None, "Width (multiple of 16); default: the run's.")
_FPS = flags.DEFINE_float("fps", None, "Frames per second of the file; default: the run's.")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed (per-line seeds in --prompts win).")
_EXPAND_PROMPT = flags.DEFINE_bool(
    "expand_prompt",
    False,
    "Rewrite each prompt into a detailed caption before generating (prompt_expansion.py); the "
    "sidecar records the expansion and every choice it drew.",
)


def _flag_job() -> dict:
    return {
        "task": _TASK.value,
        "image": _IMAGE.value,
        "end_image": _END_IMAGE.value,
        "video": _VIDEO.value,
        "end_video": _END_VIDEO.value,
        "direction": _DIRECTION.value,
        "strength": _STRENGTH.value,
        "frames": _FRAMES.value,
    }


def read_jobs() -> list[dict]:
    """[{prompt, seed, out, task fields}] from --prompt/--out or --prompts/--out_dir."""
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
        if out.suffix.lower() not in provenance.SIGNABLE_SUFFIXES:
            raise cli.UserError(
                f"--out {out}: the suffix must be one of {provenance.SIGNABLE_SUFFIXES} (formats "
                "that carry C2PA credentials)"
            )
        return [{**_flag_job(), "prompt": _PROMPT.value, "seed": _SEED.value, "out": out}]
    if not _PROMPTS.value or not _OUT_DIR.value:
        raise cli.UserError("--prompts and --out_dir go together")
    path = pathlib.Path(_PROMPTS.value)
    jobs = []
    for entry in prompt_files.read_prompts(path):
        job = {**_flag_job(), **{k: v for k, v in entry.items() if k in _flag_job()}}
        if job["task"] not in TASKS:
            raise cli.UserError(f"{path}:{entry['line']}: unknown task {job['task']!r}")
        suffix = ".png" if job["frames"] == 1 else ".mp4"
        job["out"] = pathlib.Path(_OUT_DIR.value) / f"{len(jobs):04d}{suffix}"
        job.update(prompt=entry["prompt"], seed=int(entry.get("seed", _SEED.value)))
        jobs.append(job)
    return jobs


def load_inputs(job: dict) -> dict:
    """The job's image/video files read to uint8 [T, H, W, 3] (an image: T = 1), checked."""
    needs = {
        "t2v": (),
        "i2v": ("image",),
        "extend": ("video",),
        "interpolate": (("image", "video"), ("end_image", "end_video")),
        "loop": (),
        "v2v": ("video",),
    }[job["task"]]
    for need in needs:
        options = need if isinstance(need, tuple) else (need,)
        if sum(job[o] is not None for o in options) != 1:
            names = " or ".join(f"--{o}" for o in options)
            raise cli.UserError(f"--task {job['task']} needs exactly one of {names}")
    inputs = {}
    for name in _INPUTS:
        if job[name] is None:
            continue
        path = pathlib.Path(job[name])
        with cli.user_errors(FileNotFoundError, VideoDecodeError, ValueError):
            frames = read_image(path)[None] if "image" in name else read_video(path)[0]
        _, h, w, _ = frames.shape
        if h % 16 or w % 16:
            raise cli.UserError(f"{path}: {h}x{w} frames; height and width must be multiples of 16")
        inputs[name] = frames
    return inputs


def check_job(pipe, job: dict, inputs: dict, frames: int, height: int, width: int) -> None:
    """Raises ValueError for a job that cannot run, before anything is sampled."""
    if job["out"].suffix.lower() == ".png" and (frames != 1 or job["task"] != "t2v"):
        raise ValueError(f"{job['out']}: a .png holds one text-to-image frame; use --frames 1")
    start = inputs.get("video", inputs.get("image"))
    if start is not None:
        height, width = start.shape[1:3]
    if job["task"] == "v2v":
        frames = len(start)
    elif job["task"] in ("t2v", "i2v") and frames > pipe.config.data.sizes[0][0]:
        return  # a long video: any length, in windows of the run's clip length
    pipe.latent_shape(1, frames, height, width)
    if job["task"] == "extend" and frames <= task_generation.context_frames(pipe):
        raise ValueError(
            f"--frames {frames}: an extension clip must be longer than the "
            f"{task_generation.context_frames(pipe)} frames it continues from"
        )
    if job["task"] == "v2v" and not 0.0 < job["strength"] <= 1.0:
        raise ValueError(f"--strength must be in (0, 1], got {job['strength']}")


def sampled_frames(pipe, job: dict, inputs: dict, frames: int) -> int:
    """Frames of each clip the sampler generates for a job of `frames` frames: one window of a
    long video, the whole of the video that v2v edits, else the job's own length."""
    if job["task"] == "v2v":
        return int(inputs["video"].shape[0])
    window = pipe.config.data.sizes[0][0]
    return window if job["task"] in ("t2v", "i2v") and frames > window else frames


def run_job(pipe, job: dict, inputs: dict, *, frames, height, width, sample) -> np.ndarray:
    """The finished video for one job (see `task_generation`)."""
    task, prompts = job["task"], [job.get("model_prompt", job["prompt"])]
    batched = {name: given[None] for name, given in inputs.items()}
    start = batched.get("video", batched.get("image"))
    if start is not None:
        height, width = start.shape[2:4]
    image = None if start is None else start[:, 0]
    size = dict(frames=frames, height=height, width=width)
    window = sampled_frames(pipe, job, inputs, frames)
    if task in ("t2v", "i2v") and window < frames:
        videos = task_generation.long_video(
            pipe, prompts, frames=frames, window=window, height=height, width=width,
            sample=sample, images=image,
        )  # fmt: skip
    elif task == "t2v":
        videos = task_generation.text_to_video(pipe, prompts, **size, sample=sample)
    elif task == "i2v":
        videos = task_generation.image_to_video(pipe, prompts, image, frames=frames, sample=sample)
    elif task == "extend":
        videos = task_generation.extend(
            pipe, prompts, start, direction=job["direction"], frames=frames, sample=sample
        )
    elif task == "interpolate":
        end = batched.get("end_video", batched.get("end_image"))
        videos = task_generation.interpolate(
            pipe, prompts, start, end, frames=frames, sample=sample
        )
    elif task == "loop":
        videos = task_generation.loop(pipe, prompts, **size, sample=sample, images=image)
    else:
        videos = task_generation.video_to_video(
            pipe, prompts, start, strength=job["strength"], sample=sample
        )
    return videos[0]


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value:
        raise cli.UserError("--checkpoint is required")
    sampling = sampler_flags.settings()
    jobs = read_jobs()
    with cli.user_errors(ValueError, OSError):
        safety = output_flags.enforce_policy([job["prompt"] for job in jobs])
        signer = output_flags.signer()
    inputs = [load_inputs(job) for job in jobs]
    start = time.perf_counter()
    pipe = sampler_flags.load_pipeline(_CHECKPOINT.value)
    load_s = time.perf_counter() - start
    run_frames, run_height, run_width = pipe.config.data.sizes[0]
    height, width = _HEIGHT.value or run_height, _WIDTH.value or run_width
    if height % 16 or width % 16:
        raise cli.UserError(f"height and width must be multiples of 16, got {height}x{width}")
    with cli.user_errors(ValueError):
        for job in jobs:
            job["model_prompt"] = job["prompt"]
            if _EXPAND_PROMPT.value:
                size = dict(frames=job["frames"] or run_frames, height=height, width=width)
                job["expansion"] = prompt_expansion.expand(job["prompt"], **size, seed=job["seed"])
                job["model_prompt"] = job["expansion"].detailed
        pipe.embed([job["model_prompt"] for job in jobs])  # tokenizes: empty prompts fail here
        for job, given in zip(jobs, inputs, strict=True):
            check_job(pipe, job, given, job["frames"] or run_frames, height, width)
    fps = _FPS.value or pipe.config.data.fps

    for job, given in zip(jobs, inputs, strict=True):
        job["out"].parent.mkdir(parents=True, exist_ok=True)
        frames = job["frames"] or run_frames
        start = time.perf_counter()
        generation = {
            "prompt_sha256": provenance.prompt_hash(job["prompt"]),
            "task": job["task"],
            "checkpoint_step": pipe.step,
            "seed": job["seed"],
            "prompt_expansion": "expansion" in job,
            **safety,
        }
        with cli.user_errors(ValueError):
            video = run_job(
                pipe, job, given, frames=frames, height=height, width=width,
                sample={**sampling, "seed": job["seed"]},
            )  # fmt: skip
            sample_s = time.perf_counter() - start
            provenance.write_video(job["out"], video, fps=fps, generation=generation, signer=signer)
        record = {
            **{k: job[k] for k in ("prompt", "seed", "task")},
            **{k: str(pathlib.Path(job[k]).resolve()) for k in _INPUTS if job[k] is not None},
            **({"direction": job["direction"]} if job["task"] == "extend" else {}),
            **({"strength": job["strength"]} if job["task"] == "v2v" else {}),
            **(
                {
                    "expanded_prompt": job["expansion"].detailed,
                    "expansion_sampled": job["expansion"].sampled,
                }
                if "expansion" in job
                else {}
            ),
            "frames": int(video.shape[0]),
            "height": int(video.shape[1]),
            "width": int(video.shape[2]),
            "fps": fps,
            "steps": sampling["steps"],
            "cfg": sampling["cfg"],
            "cfg_interval": sampling["cfg_interval"],
            # The shift the sampler used: the flag's, or the run's at this clip's token count.
            "shift": pipe.default_shift(
                sampled_frames(pipe, job, given, frames), int(video.shape[1]), int(video.shape[2])
            )
            if sampling["shift"] is None
            else sampling["shift"],
            "sampler": sampling["sampler"],
            "checkpoint": str(pathlib.Path(_CHECKPOINT.value).resolve()),
            "step": pipe.step,
            "config": pipe.config.to_dict(),
            **safety,
            "timings_s": {"load": round(load_s, 3), "generate": round(sample_s, 3)},
        }
        atomic.write_json(job["out"].with_suffix(".json"), record)
        print(f"wrote {job['out']} ({sample_s:.1f} s)")


if __name__ == "__main__":
    cli.run(main)
