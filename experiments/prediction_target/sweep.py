"""Ablation: what the DiT's last layer predicts, the velocity or the clean latent.

- `velocity`: v = eps - x0 directly (rectified flow as in SD3; the project's default);
- `data`: the clean tokens x0, turned into the velocity they imply, (x_t - x0) / t, so the loss
  (velocity MSE), the sampler and the guidance are unchanged (x-prediction with a v-loss, Li & He
  2025, "Back to Basics: Let Denoising Generative Models Denoise").

The question is the paper's: the tiny DiT's tokens are 1x4x4 patches of a 16-channel latent,
256 numbers a token, as wide as the network itself, the regime where the paper finds v- and
eps-prediction collapse and x-prediction does not. Both arms train the tiny DiT from scratch on
the same latent cache (the shipped tiny VAE's latents of the same Shapes World clips, one
17x64x64 size) with the same seed, batch, schedule and steps, and are evaluated on the held-out
prompt suite (`sora-jax eval --suite default`).

    python experiments/run.py experiments/prediction_target
"""

BASE = "configs/dit_tiny.py:batch=16,steps=1200,clips=384,vae=checkpoints/tiny"
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
        {"name": "velocity", "model.prediction": "velocity"},
        {"name": "data", "model.prediction": "data"},
    ]
