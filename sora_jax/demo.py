"""`sora-jax demo`: the embedded default, written as a browsable gallery.

Until a trained model ships (issue #7), the demo shows the data world the model learns from and
the measuring stick it is judged by: it renders Shapes World clips from both splits at several
sizes (one or more objects, occlusion, multi-shot, non-square, a single image), runs the probe on
each against its caption, and writes `index.html` with every clip playing inline, its short and
detailed captions, the probe's reading and pass/fail, plus `report.json`.
"""

import html
import json
import pathlib
import time

import numpy as np
from absl import flags
from tqdm import tqdm

from sora_jax import cli, provenance
from sora_jax.data.shapes_world import probe, world

_OUT_DIR = flags.DEFINE_string("out_dir", "demo_out", "Where to write the gallery.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 24, "Clips to render (spread over splits/sizes).")
_FPS = 8

# (split, frames, height, width) cycled over the clips.
_SHOWCASE = (
    ("train", 17, 64, 64),
    ("heldout", 17, 64, 64),
    ("train", 17, 48, 80),
    ("heldout", 17, 80, 48),
    ("train", 33, 64, 96),
    ("train", 1, 64, 64),
)


def render_gallery(out_dir: pathlib.Path, num_clips: int) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "clips").mkdir(exist_ok=True)
    rows, scores = [], []
    for i in tqdm(range(num_clips), desc="rendering + probing", unit="clip"):
        split, frames, height, width = _SHOWCASE[i % len(_SHOWCASE)]
        clip = world.generate_clip(i, split=split, frames=frames, height=height, width=width)
        reading = probe.probe(clip["video"], clip["caption"])
        stem = f"clips/{i:03d}_{split}_{frames}x{height}x{width}"
        # Upscaled for viewing; GIF plays inline everywhere, mp4 is there to download.
        big = np.repeat(np.repeat(clip["video"], 3, axis=1), 3, axis=2)
        # Rendered by the Shapes World program, not a trained model: algorithmicMedia.
        generation = {"prompt_sha256": provenance.prompt_hash(str(clip["caption"])), "clip": i}
        for suffix in (".gif", ".mp4"):
            provenance.write_video(
                out_dir / f"{stem}{suffix}", big, fps=_FPS, generation=generation,
                source_type=provenance.ALGORITHMIC,
            )  # fmt: skip
        scores.append(reading["adherence"])
        rows.append(
            {
                "index": i,
                "split": split,
                "size": [frames, height, width],
                "file": stem,
                "caption": clip["caption"],
                "detailed_caption": clip["detailed_caption"],
                "probe": reading,
            }
        )
    report = {"num_clips": num_clips, "probe_adherence_mean": float(np.mean(scores)), "clips": rows}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=_jsonable))
    (out_dir / "index.html").write_text(_html(rows, report["probe_adherence_mean"]))
    return report


def _jsonable(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def _reading_text(reading: dict) -> str:
    parts = []
    for s, shot in enumerate(reading["shots"]):
        prefix = f"shot {s + 1}: " if len(reading["shots"]) > 1 else ""
        objects = []
        for obj in shot["objects"]:
            got = obj["detected"]
            if got is None:
                objects.append("(not found)")
                continue
            words = [got["size"], got["color"], got["shape"], got["motion"], got["speed"] or ""]
            if obj["prompted"]["occluded"]:
                words.append("reappears" if got["reappears"] else "does not reappear")
            wrong = [a for a, ok in obj["correct"].items() if not ok]
            objects.append(
                " ".join(w for w in words if w) + (f" [wrong: {wrong}]" if wrong else "")
            )
        parts.append(prefix + "; ".join(objects) + f" on {shot['background']}")
    return " | ".join(parts)


def _html(rows: list[dict], mean: float) -> str:
    cards = []
    for row in rows:
        ok = row["probe"]["adherence"] == 1.0
        cards.append(f"""
<div class="card">
  <img src="{row["file"]}.gif" alt="clip {row["index"]}">
  <p class="meta">#{row["index"]} · {row["split"]} · {"x".join(map(str, row["size"]))}
     · <a href="{row["file"]}.mp4">mp4</a></p>
  <p><b>{html.escape(row["caption"])}</b></p>
  <p class="detail">{html.escape(row["detailed_caption"])}</p>
  <p class="{"pass" if ok else "fail"}">probe {row["probe"]["adherence"]:.0%}:
     {html.escape(_reading_text(row["probe"]))}</p>
</div>""")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sora_jax demo: Shapes World</title>
<style>
 body {{ font-family: sans-serif; margin: 2em; }}
 .grid {{ display: flex; flex-wrap: wrap; gap: 1em; }}
 .card {{ width: 300px; border: 1px solid #ccc; padding: .5em; border-radius: 6px; }}
 .card img {{ max-width: 100%; image-rendering: pixelated; }}
 .meta, .detail {{ color: #555; font-size: 85%; }}
 .pass {{ color: #176f2c; }} .fail {{ color: #b00020; }}
</style></head><body>
<h1>Shapes World, read back by the probe</h1>
<p>{len(rows)} clips from the train and held-out splits at several sizes. Each card shows the
clip, its short caption, its detailed (recaptioned) caption, and what the probe reads from the
pixels. Mean probe adherence: <b>{mean:.1%}</b>.</p>
<div class="grid">{"".join(cards)}</div>
</body></html>
"""


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if _NUM_CLIPS.value < 1:
        raise cli.UserError("--num_clips must be at least 1")
    start = time.time()
    out_dir = pathlib.Path(_OUT_DIR.value)
    report = render_gallery(out_dir, _NUM_CLIPS.value)
    print(
        f"wrote {report['num_clips']} clips to {out_dir / 'index.html'} in "
        f"{time.time() - start:.1f}s; probe adherence {report['probe_adherence_mean']:.1%}"
    )


if __name__ == "__main__":
    cli.run(main)
