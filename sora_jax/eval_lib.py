"""Held-out evaluation of a loaded pipeline, shared by `sora-jax eval` and `sora-jax demo`.

Generates every prompt set at every size and every conditioned task, reads each video back with
the probe, and writes into `out_dir`, only once everything has run (a failure leaves nothing
half-written):
- `report.json`: settings, adherence per set / attribute / task, FVD of each set against real
  clips of its split and size (`metrics/fvd.py`), task metrics, timings, and one row per video
  (prompt, the probe's reading, pass/fail, its file);
- `videos/<set>/<i>.gif`, each with a C2PA manifest, and a grid GIF per set;
- `index.html` (`gallery.py`): every video playing inline under the summary tables.
"""

import dataclasses
import functools
import itertools
import pathlib
import time
from collections.abc import Callable

from sora_jax import atomic, dit_lib, gallery, probe_eval, provenance, task_eval
from sora_jax.metrics import fvd
from sora_jax.video_io import tile_videos


@dataclasses.dataclass(frozen=True)
class Settings:
    sizes: tuple[tuple[int, int, int], ...]  # (frames, height, width) of text-to-video sets
    steps: int = 25
    cfg: float = 4.0
    cfg_interval: tuple[float, float] | None = None  # guided t range (samplers.guide); None: all
    shift: float | None = None  # the sampler's timestep shift; None: the run's at the size
    sampler: str = "euler"
    seed: int = 0  # recorded: what every prompt's and clip's own seed was shifted by
    suite: str = ""  # the `eval_suite` file the sets and task clips came from, if any
    batch_size: int = 16
    grid: int = 16  # videos in each set's grid GIF; 0: none
    num_task_clips: int = 50
    strength: float = 0.7  # v2v
    fvd: bool = True  # for the sets given real reference clips
    expand_prompt: bool = False  # the model read each prompt's expansion (prompt_expansion.py)


def evaluate(
    pipe: dit_lib.Pipeline,
    sets: dict[str, probe_eval.PromptSet],
    task_clips: dict[str, task_eval.TaskClips],
    settings: Settings,
    out_dir,
    *,
    checkpoint: str,
    safety: dict,
    signer: provenance.Credentials | None = None,
    references: dict[str, Callable] | None = None,
    timings: dict | None = None,
    title: str = "sora_jax held-out evaluation",
) -> dict:
    """Runs everything and writes `out_dir`; returns the report. `sets` are the text-to-video
    prompt sets, `task_clips` the given clips of each conditioned task (`task_eval`). `safety`
    is what the prompt policy returned (recorded in the settings and every manifest),
    `signer` signs every video (None: `provenance.credentials()`);
    `references` maps a set to a function of the size giving real clips to measure the set's
    FVD against (None: none at that size); `timings` adds to the report's (e.g. loading)."""
    out_dir = pathlib.Path(out_dir)
    signer = signer or provenance.credentials()
    report = {
        "checkpoint": checkpoint,
        "step": pipe.step,
        "settings": {**dataclasses.asdict(settings), **safety},
        "t2v": {},
        "tasks": {},
        "videos": [],
        "timings_s": dict(timings or {}),
    }
    outputs = {}  # set name -> (videos, rows)
    sample = dict(
        steps=settings.steps,
        cfg=settings.cfg,
        cfg_interval=settings.cfg_interval,
        shift=settings.shift,
        sampler=settings.sampler,
    )

    def generate(prompts, seeds, size):
        frames, height, width = size
        return pipe.generate(
            prompts, frames=frames, height=height, width=width, seed=seeds, **sample
        )

    several = len(settings.sizes) > 1
    for size, (set_name, prompts) in itertools.product(settings.sizes, sets.items()):
        # One size keeps the plain set names; several name each set with its size.
        name = f"{set_name}_{'x'.join(map(str, size))}" if several else set_name
        start = time.perf_counter()
        summary, rows, videos = probe_eval.evaluate(
            functools.partial(generate, size=size), prompts, batch_size=settings.batch_size,
            desc=name,
        )  # fmt: skip
        # Includes compiling the sampler for this set's batch shapes.
        report["timings_s"][f"{name}_per_video"] = round(
            (time.perf_counter() - start) / len(prompts.prompts), 3
        )
        real = None  # FVD fits a Gaussian to each side: it needs two videos at least
        if settings.fvd and set_name in (references or {}) and len(videos) > 1:
            real = references[set_name](size)
        if real is not None:
            start = time.perf_counter()
            summary["fvd"] = fvd.fvd(videos, real)
            report["timings_s"][f"{name}_fvd"] = round(time.perf_counter() - start, 3)
        report["t2v"][name] = summary
        outputs[name] = (videos, rows)
        attributes = ", ".join(f"{a} {v:.1%}" for a, v in summary["attributes"].items())
        scores = f"adherence {summary['adherence']:.1%}" + (
            f", FVD {summary['fvd']:.1f}" if "fvd" in summary else ""
        )
        print(f"{name}: {scores} on {len(prompts.prompts)} videos ({attributes})")
    if task_clips:
        start = time.perf_counter()
        results = task_eval.evaluate_tasks(
            pipe, task_clips, sample=sample, batch_size=settings.batch_size,
            strength=settings.strength,
        )  # fmt: skip
        report["timings_s"]["tasks"] = round(time.perf_counter() - start, 3)
        for task, (summary, rows, videos) in results.items():
            report["tasks"][task] = summary
            outputs[f"task_{task}"] = (videos, rows)
            extras = {k: v for k, v in summary.items() if k in task_eval.HEADLINE}
            print(f"{task}: adherence {summary['adherence']:.1%}, {extras}")

    out_dir.mkdir(parents=True, exist_ok=True)
    generation = {"checkpoint_step": pipe.step, **safety}
    fps = pipe.config.data.fps
    for name, (videos, rows) in outputs.items():
        for i, (video, row) in enumerate(zip(videos, rows, strict=True)):
            file = f"videos/{name}/{i:04d}.gif"
            (out_dir / file).parent.mkdir(parents=True, exist_ok=True)
            meta = {"prompt_sha256": provenance.prompt_hash(row["prompt"]), "set": name}
            provenance.write_video(
                out_dir / file,
                video,
                fps=fps,
                generation={**generation, **meta},
                signer=signer,
            )
            report["videos"].append(
                {"set": name, **row, "passed": row["adherence"] == 1.0, "file": file}
            )
        if settings.grid > 0:
            shown = videos[: settings.grid]
            grid = tile_videos(shown, columns=min(4, len(shown)))
            stem = name if name.startswith("task_") else f"t2v_{name}"
            prompts = [r["prompt"] for r in rows[: settings.grid]]
            hashes = {"prompt_sha256": [provenance.prompt_hash(p) for p in prompts]}
            provenance.write_video(
                out_dir / f"{stem}.gif",
                grid,
                fps=fps,
                generation={**generation, **hashes},
                signer=signer,
            )
            atomic.write_json(out_dir / f"{stem}.json", prompts)
    atomic.write_json(out_dir / "report.json", report)
    atomic.write_text(out_dir / "index.html", render(report, title))
    return report


def render(report: dict, title: str) -> str:
    """The gallery page of a report."""
    tables = {}
    if report["t2v"]:
        attributes = [a for a in probe_eval.ATTRIBUTES if _any_has(report["t2v"], a)]
        tables["Text to video: probe adherence and FVD"] = gallery.table(
            ["set", "videos", "adherence", "all correct", *attributes, "FVD"],
            [
                [name, s["num_videos"], s["adherence"], s["all_correct"]]
                + [s["attributes"].get(a) for a in attributes]
                + [s.get("fvd")]
                for name, s in report["t2v"].items()
            ],
        )
    if report["tasks"]:
        metrics = [m for m in task_eval.HEADLINE if any(m in s for s in report["tasks"].values())]
        tables["Conditioned tasks"] = gallery.table(
            ["task", "videos", "adherence", *metrics],
            [
                [task, s["num_videos"], s["adherence"], *(s.get(m) for m in metrics)]
                for task, s in report["tasks"].items()
            ],
        )
    tables["Timings (s)"] = gallery.table(["what", "seconds"], report["timings_s"].items())
    sections = {}
    for row in report["videos"]:
        meta = f"{row['set']} · adherence {row['adherence']:.0%}"
        sections.setdefault(row["set"], []).append(
            gallery.card(row["file"], row["prompt"], row["reading"], row["passed"], meta)
        )
    s = report["settings"]
    interval = s.get("cfg_interval")
    guided = f" for t in [{interval[0]}, {interval[1]}]" if interval else ""
    guided += f", shift {s['shift']}" if s.get("shift") else ""
    intro = (
        f"<p>Checkpoint <code>{report['checkpoint']}</code> at step {report['step']}; "
        f"{s['sampler']} sampler, {s['steps']} steps, guidance {s['cfg']}{guided}, "
        f"seed {s['seed']}. "
        "Each card is one generated video with its prompt and what the probe reads from its "
        "pixels; it passes when every prompted attribute reads back.</p>"
    )
    return gallery.page(title, intro, tables, sections)


def _any_has(summaries: dict, attribute: str) -> bool:
    return any(attribute in s["attributes"] for s in summaries.values())
