"""Measures every conditioned task on real Shapes World clips with the probe (issue #5's targets).

Each task is given frames of held-out clips (`heldout` split: colour/shape pairs never trained
on) and their captions, and is scored on what it generates:

- `i2v`: PSNR of generated frame 0 against the given image; probe adherence of the frames
  after it.
- `extend_forward`, `extend_backward`, `interpolate`, `loop`: **continuity** and **identity**.
  Continuity: at every seam (given -> generated, or a loop's last -> first frame) the mean
  absolute frame difference, divided by the median frame difference inside the generated frames
  (floored at `_MOTION_FLOOR`, so a still object does not make any seam look infinite); a seam
  passes at <= 1.5. Identity: the probe reads the generated frames' colour, shape and size
  against the caption (the given frames are the clip itself, which the probe reads exactly), and
  every task's adherence is read from its generated frames alone.
  Interpolation also reports the PSNR of its last frame against the given end frame.
- `v2v`: the caption with the object's colour swapped for the next palette colour; the probe
  reads the edited video against the new caption (every prompted attribute).
- `long_video`: text to video over `LONG_WINDOWS` sliding windows; continuity at every window
  boundary, identity read from the last window (the subject must survive the extensions).
- `multi_shot`: text to video from the captions of held-out two-shot clips ("... Then cut to
  ..."); the probe reads each shot, and the cut it finds must sit within one latent frame
  (the VAE's temporal factor in pixel frames) of the clip's.
"""

import dataclasses
import json
import re

import numpy as np
from tqdm import tqdm

from sora_jax import probe_eval, task_generation
from sora_jax.data.shapes_world import probe, scenes, vocab
from sora_jax.data.shapes_world.world import ShapesWorldSource
from sora_jax.metrics.video_metrics import psnr

TASKS = (
    "i2v", "extend_forward", "extend_backward", "interpolate", "loop", "v2v", "multi_shot",
    "long_video",
)  # fmt: skip
LONG_WINDOWS = 4  # windows of a `long_video` (17-frame clips: 53 frames)
SEAM_RATIO = 1.5
IDENTITY = ("color", "shape", "size")
HEADLINE = (
    "frame0_psnr", "seam_ratio_median", "seams_continuous", "identity", "end_psnr", "cuts_ok"
)  # fmt: skip
_MOTION_FLOOR = 1.0  # mean absolute difference (0..255) below which a clip counts as still


def frame_differences(video_TxHxWx3: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames, [T - 1]."""
    v = video_TxHxWx3.astype(np.float32)
    return np.mean(np.abs(v[1:] - v[:-1]), axis=(1, 2, 3))


def seam_ratio(before_HxWx3, after_HxWx3, generated_TxHxWx3) -> float:
    """A seam's frame difference over the median one inside the generated frames."""
    seam = float(np.mean(np.abs(after_HxWx3.astype(np.float32) - before_HxWx3)))
    inside = float(np.median(frame_differences(generated_TxHxWx3)))
    return seam / max(inside, _MOTION_FLOOR)


def swap_color(caption: str) -> str:
    """The caption with its first object colour replaced by the next colour of the palette."""
    colors = list(vocab.COLORS)
    match = re.search(r"\b(" + "|".join(colors) + r")\b", caption)
    if match is None:
        raise ValueError(f"no object colour in {caption!r}")
    new = colors[(colors.index(match[1]) + 1) % len(colors)]
    return caption[: match.start()] + new + caption[match.end() :]


def multi_shot_clips(data, num: int):
    """(videos, captions, labels) of `num` held-out multi-shot clips at the run's clip size."""
    source = ShapesWorldSource(
        num_clips=num,
        split="heldout",
        seed=data.world_seed,
        sizes=(tuple(data.sizes[0]),),
        mix=scenes.only("multi_shot"),
    )
    clips = [source[i] for i in range(num)]
    return (
        np.stack([c["video"] for c in clips]),
        [str(c["caption"]) for c in clips],
        [json.loads(c["labels"]) for c in clips],
    )


def _identity_counts(counts: dict) -> np.ndarray:
    """(correct, prompted) over the identity attributes of a probe reading's counts."""
    return sum((np.asarray(counts[a]) for a in IDENTITY if a in counts), np.zeros(2, np.int64))


def run_task(pipe, task: str, videos, captions, *, sample, strength: float = 0.7, labels=None):
    """(outputs [B, T', H, W, 3], per-video metric rows) of one task on clips `videos`
    (`labels`: their Shapes World labels, which `multi_shot` needs)."""
    frames = videos.shape[1]
    overlap = task_generation.context_frames(pipe)
    if task == "multi_shot":
        _, t, h, w, _ = videos.shape
        out = task_generation.text_to_video(
            pipe, captions, frames=t, height=h, width=w, sample=sample
        )
        tolerance = pipe.vae.temporal_factor
        rows = []
        for o, c, label in zip(out, captions, labels, strict=True):
            row = _probe_row(o, c)
            true_cuts = [shot["start_frame"] for shot in label["shots"][1:]]
            errors = [abs(a - b) for a, b in zip(row.pop("cuts"), true_cuts, strict=True)]
            rows.append({**row, "cut_errors": errors, "cuts_ok": max(errors) <= tolerance})
        return out, rows
    if task == "i2v":
        out = task_generation.image_to_video(
            pipe, captions, videos[:, 0], frames=frames, sample=sample
        )
        return out, [
            {"frame0_psnr": min(psnr(v[:1], o[:1]), 100.0), **_probe_row(o[1:], c)}
            for v, o, c in zip(videos, out, captions, strict=True)
        ]
    if task == "v2v":
        edited = [swap_color(c) for c in captions]
        out = task_generation.video_to_video(pipe, edited, videos, strength=strength, sample=sample)
        return out, [
            {"edited_prompt": e, **_probe_row(o, e)} for o, e in zip(out, edited, strict=True)
        ]
    if task in ("extend_forward", "extend_backward"):
        direction = task.removeprefix("extend_")
        out = task_generation.extend(
            pipe, captions, videos, direction=direction, frames=frames, sample=sample
        )
        new = frames - overlap
        # (last frame before the seam, first after, the generated frames)
        if direction == "forward":
            seams = [[(o[frames - 1], o[frames], o[frames:])] for o in out]
            generated = [o[frames:] for o in out]
        else:
            seams = [[(o[new - 1], o[new], o[:new])] for o in out]
            generated = [o[:new] for o in out]
    elif task == "interpolate":
        out = task_generation.interpolate(
            pipe, captions, videos[:, :1], videos[:, -1:], frames=frames, sample=sample
        )
        seams = [[(o[0], o[1], o[1:-1]), (o[-2], o[-1], o[1:-1])] for o in out]
        generated = [o[1:-1] for o in out]
    elif task == "long_video":
        step = frames - overlap
        total = frames + (LONG_WINDOWS - 1) * step
        out = task_generation.long_video(
            pipe, captions, frames=total, window=frames, height=videos.shape[2],
            width=videos.shape[3], sample=sample,
        )  # fmt: skip
        bounds = [frames + i * step for i in range(LONG_WINDOWS - 1)]
        seams = [[(o[b - 1], o[b], o[b : b + step]) for b in bounds] for o in out]
        generated = [o[-frames:] for o in out]
    elif task == "loop":
        out = task_generation.loop(
            pipe, captions, frames=frames, height=videos.shape[2], width=videos.shape[3],
            sample=sample, images=videos[:, 0],
        )  # fmt: skip
        seams = [[(o[-1], o[0], o)] for o in out]
        generated = list(out)
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    rows = []
    for i, (o, c) in enumerate(zip(out, captions, strict=True)):
        ratios = [seam_ratio(*seam) for seam in seams[i]]
        reading = _probe_row(generated[i], c)
        row = {
            "seam_ratios": [round(r, 3) for r in ratios],
            "identity_counts": _identity_counts(reading["counts"]).tolist(),
            **reading,
        }
        if task == "interpolate":
            row["end_psnr"] = min(psnr(videos[i, -1:], o[-1:]), 100.0)
        rows.append(row)
    return out, rows


def _probe_row(video, caption) -> dict:
    reading = probe.probe(video, caption)
    row = {
        "prompt": caption,
        "adherence": reading["adherence"],
        "counts": reading["counts"],
        "reading": probe.describe(reading),
    }
    return {**row, "cuts": reading["cuts"]} if len(reading["shots"]) > 1 else row


def summarize(task: str, rows: list[dict]) -> dict:
    """Per-task means and pass rates over the per-video rows."""
    summary = probe_eval.summarize(rows)
    if task == "i2v":
        summary["frame0_psnr"] = float(np.mean([r["frame0_psnr"] for r in rows]))
    if "seam_ratios" in rows[0]:
        ratios = np.concatenate([r["seam_ratios"] for r in rows])
        summary["seam_ratio_median"] = float(np.median(ratios))
        summary["seams_continuous"] = float(np.mean(ratios <= SEAM_RATIO))
        correct, prompted = np.sum([r["identity_counts"] for r in rows], axis=0)
        summary["identity"] = float(correct / max(prompted, 1))
    if task == "interpolate":
        summary["end_psnr"] = float(np.mean([r["end_psnr"] for r in rows]))
    if task == "multi_shot":
        summary["cuts_ok"] = float(np.mean([r["cuts_ok"] for r in rows]))
    return summary


@dataclasses.dataclass(frozen=True)
class TaskClips:
    """The given clips of one task: uint8 videos [B, T, H, W, 3], their captions, a noise seed
    each, and their Shapes World labels (`multi_shot` reads the true cuts from them)."""

    videos: np.ndarray
    captions: list[str]
    seeds: list[int]
    labels: list[dict]


def default_clips(data, task_names, num_clips: int, seed: int = 0) -> dict[str, TaskClips]:
    """{task: the first `num_clips` held-out clips of the run's world} (multi-shot ones for
    `multi_shot`); clip i gets seed `seed + i`."""
    seeds = [seed + i for i in range(num_clips)]
    clips = {}
    if "multi_shot" in task_names:
        videos, captions, labels = multi_shot_clips(data, num_clips)
        clips["multi_shot"] = TaskClips(videos, captions, seeds, labels)
    others = [t for t in task_names if t != "multi_shot"]
    if others:  # every other task is given the same clips: rendered once
        videos, captions = probe_eval.probe_clips(data, "heldout", num_clips)
        heldout = TaskClips(videos, captions, seeds, [None] * num_clips)
        clips.update({task: heldout for task in others})
    return {task: clips[task] for task in task_names}


def evaluate_tasks(pipe, clips: dict[str, TaskClips], *, sample, batch_size, strength=0.7):
    """{task: (summary, rows, outputs)} of each task on its clips; `sample` without a seed."""
    results = {}
    for task, given in clips.items():
        rows, outputs = [], []
        batches = range(0, len(given.videos), batch_size)
        for start in tqdm(batches, desc=task, unit="batch"):
            part = slice(start, start + batch_size)
            out, part_rows = run_task(
                pipe, task, given.videos[part], given.captions[part],
                sample={**sample, "seed": given.seeds[part]}, strength=strength,
                labels=given.labels[part],
            )  # fmt: skip
            outputs.append(out)
            rows += part_rows
        for row in rows:
            row["counts"] = {a: list(map(int, c)) for a, c in row["counts"].items()}
        results[task] = (summarize(task, rows), rows, np.concatenate(outputs))
    return results
