"""Ablation: how the DiT reads the prompt.

- `cross`: self-attention over the video tokens, then cross-attention to the text states
  (PixArt-alpha, Wan; the project's default);
- `joint`: MM-DiT joint attention over [text; video] with a text stream of its own (SD3,
  Esser et al. 2024).

Both arms train the tiny DiT from scratch on the same latent cache (the shipped tiny VAE's
latents of the same Shapes World clips, one 17x64x64 size) with the same seed, batch, schedule
and steps, and are evaluated on the held-out prompt suite (`sora-jax eval --suite default`).

    python experiments/run.py experiments/text_attention
"""

BASE = "configs/dit_tiny.py:batch=16,steps=300,clips=384,vae=checkpoints/tiny"
COMMON = {
    "optimizer.warmup_steps": 50,
    "log_every": 25,
    "checkpoint_every": 100,
    "sample_every": 100_000,  # the end of the run only: eval measures the arms
}
EVAL = ["--suite=default", "--tasks=none", "--steps=25", "--batch_size=16"]


def get_sweep() -> list[dict]:
    """One dict of config overrides an arm; "name" names its workdir."""
    return [
        {"name": "cross", "model.text_mode": "cross"},
        {"name": "joint", "model.text_mode": "joint"},
    ]
