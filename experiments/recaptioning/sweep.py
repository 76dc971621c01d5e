"""Ablation: train the DiT on short captions or on the captioner's detailed recaptions.

Sora (after DALL-E 3) trains on highly descriptive captions written by a video captioner, and
expands the user's short prompt into that style at sampling time. Here both arms train the tiny
DiT from scratch on the same 2,048 Shapes World train clips, saved as a folder of GIFs (the
`video_folder` source, as a user's own videos would be), with the shipped DiT's model and
timestep settings (data prediction, the pooled caption, timesteps towards noise;
checkpoints/tiny/MODEL_CARD.md) on fixed 17x64x64 clips, and the same seed, batch, schedule and
steps; only the captions differ:

- `short`: the clips' canonical short captions;
- `recaptioned`: captions written by the trained captioner (`sora-jax caption`, greedy) from
  the pixels alone.

`prepare(root)` renders the folder and recaptions it; each arm is then evaluated on 100 short
prompts of unseen train clips and 100 of held-out (colour, shape) pairs, and the recaptioned arm
once more with `--expand_prompt` (the short prompts rewritten in the detailed style).

    python experiments/run.py experiments/recaptioning
"""

import json
import os
import pathlib
import subprocess
import sys

NUM_CLIPS = 2048
# clips=NUM_CLIPS: the train-split prompts `prepare` writes start after the clips trained on.
BASE = f"configs/dit_tiny.py:batch=32,steps=2000,clips={NUM_CLIPS},vae=checkpoints/vae_tiny"
CAPTIONER = "checkpoints/captioner"
COMMON = {
    "data.source": "video_folder",
    # The shipped DiT's model fields and timesteps (checkpoints/tiny/MODEL_CARD.md).
    "model.prediction": "data",
    "model.pooled_text": True,
    "diffusion.t_mean": 0.8,
    "diffusion.t_std": 0.8,
    "optimizer.learning_rate": 5e-4,
    "optimizer.warmup_steps": 200,
    "model.dtype": "bfloat16",
    "model.remat_policy": "full",
    "log_every": 50,
    "checkpoint_every": 250,
    "sample_every": 100_000,  # the end of the run only: eval measures the arms
}
# Adherence is the question here; FVD (3.5 min an eval here) is left out. `eval`'s built-in
# prompt sets are refused for a video-folder run, so `prepare` writes the same ones to files:
# 100 held-out (colour, shape) pairs, and (the arms' "_train" evals) 100 unseen train clips.
EVAL = ["--prompts={root}/prompts_heldout.jsonl", "--tasks=none", "--nofvd"]
_TRAIN_PROMPTS = ["--prompts={root}/prompts_train.jsonl"]  # the later --prompts wins


def get_sweep() -> list[dict]:
    """One dict of config overrides an arm: "name" names its workdir, "{root}" is the
    experiment's root, "extra_evals" ({name: extra eval arguments}) evaluates it again."""
    return [
        # Different captions of the same clips: each arm caches its own latents and captions.
        {
            "name": "short",
            "data.video_dir": "{root}/clips_short",
            "latent_cache_dir": "{root}/latent_cache_short",
            "extra_evals": {"short_train": _TRAIN_PROMPTS},
        },
        {
            "name": "recaptioned",
            "data.video_dir": "{root}/clips_recaptioned",
            "latent_cache_dir": "{root}/latent_cache_recaptioned",
            "extra_evals": {
                "recaptioned_train": _TRAIN_PROMPTS,
                "recaptioned_expanded": ["--expand_prompt"],
                "recaptioned_train_expanded": [*_TRAIN_PROMPTS, "--expand_prompt"],
            },
        },
    ]


def _true_detailed_caption(file: str) -> str:
    from sora_jax.data.shapes_world import world

    return world.generate_clip(int(pathlib.Path(file).stem), split="train", seed=0)[
        "detailed_caption"
    ]


def prepare(root: pathlib.Path) -> None:
    """Renders the clips into root/clips_short (short captions), recaptions the same files
    into root/clips_recaptioned (hard links, captions.jsonl by `sora-jax caption`), writes the
    evaluations' prompts (root/prompts_heldout.jsonl, root/prompts_train.jsonl) and scores the
    recaptions against the clips' true attributes into root/recaption_scores.json. Each step is
    skipped when its file exists: a root is reused as it is, so give a new one a new --root."""
    from sora_jax import caption_eval, config_lib, video_io
    from sora_jax.data.shapes_world import world
    from sora_jax.probe_eval import probe_prompts

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
    data = config_lib.load_config(BASE).data
    for split, start in (("heldout", 0), ("train", data.num_clips)):
        prompts = root / f"prompts_{split}.jsonl"
        if not prompts.exists():
            lines = [json.dumps({"prompt": p}) for p in probe_prompts(data, split, 100, start)]
            prompts.write_text("".join(line + "\n" for line in lines))
    scores_file = root / "recaption_scores.json"
    if not scores_file.exists():
        lines = (recaptioned / "captions.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        scores = [
            caption_eval.score_caption(row["caption"], _true_detailed_caption(row["file"]))
            for row in rows
        ]
        scores_file.write_text(json.dumps(caption_eval.summarize(scores), indent=1))
