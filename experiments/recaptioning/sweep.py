"""Ablation: train the DiT on short captions or on the captioner's detailed recaptions.

Sora (after DALL-E 3) trains on highly descriptive captions written by a video captioner, and
expands the user's short prompt into that style at sampling time. Here both arms train the tiny
DiT from scratch on the same 384 Shapes World train clips, saved as a folder of GIFs (the
`video_folder` source, as a user's own videos would be), with the same seed, batch, schedule and
steps; only the captions differ:

- `short`: the clips' canonical short captions;
- `recaptioned`: captions written by the trained captioner (`sora-jax caption`, greedy) from
  the pixels alone.

`prepare(root)` renders the folder and recaptions it; each arm is then evaluated on the held-out
prompt suite (short prompts), and the recaptioned arm once more with `--expand_prompt`.

    python experiments/run.py experiments/recaptioning
"""

import json
import os
import pathlib
import subprocess
import sys

BASE = "configs/dit_tiny.py:batch=16,steps=300,vae=checkpoints/tiny"
CAPTIONER = "checkpoints/captioner"
NUM_CLIPS = 384
COMMON = {
    "data.source": "video_folder",
    "optimizer.warmup_steps": 50,
    "log_every": 25,
    "checkpoint_every": 100,
    "sample_every": 100_000,  # the end of the run only: eval measures the arms
}
# Adherence is the question here; FVD (3.5 min an eval on this CPU) is left out.
EVAL = ["--suite=default", "--tasks=none", "--steps=25", "--batch_size=16", "--nofvd"]


def get_sweep() -> list[dict]:
    """One dict of config overrides an arm: "name" names its workdir, "{root}" is the
    experiment's root, "extra_evals" ({name: extra eval arguments}) evaluates it again."""
    return [
        # Different captions of the same clips: each arm caches its own latents and captions.
        {
            "name": "short",
            "data.video_dir": "{root}/clips_short",
            "latent_cache_dir": "{root}/latent_cache_short",
        },
        {
            "name": "recaptioned",
            "data.video_dir": "{root}/clips_recaptioned",
            "latent_cache_dir": "{root}/latent_cache_recaptioned",
            "extra_evals": {"recaptioned_expanded": ["--expand_prompt"]},
        },
    ]


def prepare(root: pathlib.Path) -> None:
    """Renders the clips into root/clips_short (short captions) and recaptions the same files
    into root/clips_recaptioned (hard links, captions.jsonl by `sora-jax caption`)."""
    from sora_jax import video_io
    from sora_jax.data.shapes_world import world

    short, recaptioned = root / "clips_short", root / "clips_recaptioned"
    if not (short / "captions.jsonl").exists():
        short.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(NUM_CLIPS):
            clip = world.generate_clip(i, split="train", seed=0)
            video_io.write_video(short / f"{i:04d}.gif", clip["video"], fps=8)
            lines.append(json.dumps({"file": f"{i:04d}.gif", "caption": clip["caption"]}))
        (short / "captions.jsonl").write_text("".join(line + "\n" for line in lines))
    if not (recaptioned / "captions.jsonl").exists():
        recaptioned.mkdir(parents=True, exist_ok=True)
        for gif in sorted(short.glob("*.gif")):
            if not (recaptioned / gif.name).exists():
                os.link(gif, recaptioned / gif.name)
        subprocess.run(
            [sys.executable, "-m", "sora_jax.caption", f"--checkpoint={CAPTIONER}",
             f"--videos={recaptioned}"],
            check=True,
        )  # fmt: skip
