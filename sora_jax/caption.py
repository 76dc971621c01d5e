"""`sora-jax caption`: detailed captions for videos, from a trained captioner (recaptioning).

    sora-jax caption --checkpoint C --videos DIR_OR_FILES [--out captions.jsonl] [--beam_size 4]
    sora-jax caption --checkpoint C --heldout 200 --out_dir D

With --videos (a folder, searched recursively, or comma-separated files), every readable video
is captioned at the captioner's training clip size (the centred window at its fps, resized to
cover and centre-cropped, as the video-folder source reads it) and written to `captions.jsonl`
(default: DIR/captions.jsonl for a folder) as `{"file": <path relative to the folder>,
"caption": ...}` lines: the format `data.source='video_folder'` reads, so an uncaptioned folder
can be recaptioned and trained on. An existing captions file is replaced only with --overwrite;
unreadable files are listed and skipped; the file is written whole or not at all.

With --heldout N, it captions N Shapes World clips instead (`--split heldout`: the held-out
colour/shape pairs it never saw; `train`: train-split clips it never trained on) and scores them
against the truth by parsing them back into attributes (`caption_eval.py`): D/report.json with
per-attribute and exact-match accuracy and every caption.
"""

import json
import os
import pathlib

import numpy as np
from absl import flags
from tqdm import tqdm

from sora_jax import atomic, caption_eval, captioner_lib, checkpoints, cli
from sora_jax.data import video_folder

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A train-captioner workdir or bundle.")
_VIDEOS = flags.DEFINE_list("videos", [], "A folder of videos, or video files.")
_OUT = flags.DEFINE_string("out", None, "The captions.jsonl to write (default: in the folder).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing captions file.")
_HELDOUT = flags.DEFINE_integer("heldout", 0, "Score on this many Shapes World clips.")
_SPLIT = flags.DEFINE_enum(
    "split",
    "heldout",
    ["heldout", "train"],
    "--heldout's clips: the held-out (colour, shape) pairs, or train-split clips after the "
    "captioner's data.num_clips (never trained on).",
)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "With --heldout: where report.json goes.")
_BEAM_SIZE = flags.DEFINE_integer("beam_size", 1, "Beam search width (1: greedy decoding).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Videos captioned at once.")


def collect_videos(inputs: list[str]) -> tuple[pathlib.Path, set[str] | None]:
    """(the folder captions.jsonl paths are relative to, the files in it to caption or None
    for all) of one folder or a list of video files."""
    paths = [pathlib.Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0], None
    for p in paths:
        if not p.is_file():
            raise cli.UserError(f"{p} is not a file (pass one folder, or video files)")
    root = pathlib.Path(os.path.commonpath([p.resolve().parent for p in paths]))
    return root, {p.resolve().relative_to(root).as_posix() for p in paths}


def caption_folder(captioner, root, wanted, out: pathlib.Path) -> int:
    """Captions the videos under `root` (those in `wanted`, if given) into `out`."""
    frames, height, width = captioner.config.data.sizes[0]
    with cli.user_errors(ValueError, FileNotFoundError):
        source = video_folder.VideoFolderSource(
            root, fps=captioner.config.data.fps, frame_counts=[frames],
            buckets=[(height, width)], require_captions=False,
        )  # fmt: skip
    for reason, names in sorted(source.skipped.items()):
        for name in names:
            if wanted is None or name in wanted:
                print(f"skipped {name}: {reason}")
    indices = [i for i, f in enumerate(source.files) if wanted is None or f in wanted]
    if not indices:
        raise cli.UserError("no readable video long enough to caption")
    lines = []
    for start in tqdm(range(0, len(indices), _BATCH_SIZE.value), desc="caption", unit="batch"):
        clips = [source[i] for i in indices[start : start + _BATCH_SIZE.value]]
        for clip in clips:
            if "skipped" in clip:
                print(f"skipped {clip['file']}: {clip['skipped']}")
        clips = [c for c in clips if "skipped" not in c]
        if not clips:
            continue
        texts = captioner.caption(np.stack([c["video"] for c in clips]), _BEAM_SIZE.value)
        lines += [
            json.dumps({"file": c["file"], "caption": t}) for c, t in zip(clips, texts, strict=True)
        ]
    atomic.write_text(out, "".join(line + "\n" for line in lines))
    return len(lines)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value:
        raise cli.UserError("--checkpoint is required")
    if bool(_VIDEOS.value) == bool(_HELDOUT.value):
        raise cli.UserError("give either --videos or --heldout N")
    if _BEAM_SIZE.value < 1 or _BATCH_SIZE.value < 1:
        raise cli.UserError("--beam_size and --batch_size must be at least 1")
    if _VIDEOS.value:
        root, wanted = collect_videos(_VIDEOS.value)
        out = pathlib.Path(_OUT.value) if _OUT.value else root / video_folder.CAPTIONS_FILE
        if out.exists() and not _OVERWRITE.value:
            raise cli.UserError(f"{out} exists; pass --overwrite to replace it")
    elif not _OUT_DIR.value:
        raise cli.UserError("--heldout needs --out_dir")
    with cli.user_errors(checkpoints.CheckpointError, FileNotFoundError):
        captioner = captioner_lib.load(_CHECKPOINT.value)
    if _VIDEOS.value:
        print(f"wrote {caption_folder(captioner, root, wanted, out)} captions to {out}")
        return
    data = captioner.config.data
    start = data.num_clips if _SPLIT.value == "train" else 0
    videos, references = caption_eval.clips(
        _HELDOUT.value, data.world_seed, data.sizes[0], _SPLIT.value, start
    )
    summary, rows = caption_eval.evaluate(
        lambda v: captioner.caption(v, _BEAM_SIZE.value),
        videos,
        references,
        batch_size=_BATCH_SIZE.value,
    )
    out_dir = pathlib.Path(_OUT_DIR.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(pathlib.Path(_CHECKPOINT.value).resolve()),
        "step": captioner.step,
        "beam_size": _BEAM_SIZE.value,
        "split": _SPLIT.value,
        "first_clip": start,
        **summary,
        "rows": rows,
    }
    atomic.write_json(out_dir / "report.json", report)
    attributes = ", ".join(f"{a} {v:.1%}" for a, v in summary["attributes"].items())
    print(f"exact {summary['exact']:.1%} on {summary['num_videos']} clips ({attributes})")
    print(f"report in {out_dir / 'report.json'}")


if __name__ == "__main__":
    cli.run(main)
