"""The PyTorch peer of `benchmarks/train_step.py`: diffusers' CogVideoX transformer, same shape.

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 diffusers==0.42.1
    /tmp/peer/bin/python benchmarks/peer_pytorch.py [--steps 5] [--dtypes float32,bfloat16]

Not a project dependency: run it from its own environment, on the same machine and day as
train_step.py, so its `peer` rows compare against a step time measured here and now (PERF_NOTES
quotes ~1.5 s in bf16 on an earlier machine). Shape: 8 clips of 5 latent frames of 16x16x16,
2x2 patches (320 video tokens a clip), width 384 (6 heads of 64), depth 8, 32 text tokens of
width 384, AdamW; bf16 is CPU autocast, as a PyTorch user would run it.
"""

import argparse
import contextlib
import json
import time

import numpy as np
import torch
from diffusers import CogVideoXTransformer3DModel


def run(dtype: str, steps: int) -> dict:
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=6,
        attention_head_dim=64,
        in_channels=16,
        out_channels=16,
        time_embed_dim=256,
        text_embed_dim=384,
        num_layers=8,
        sample_width=16,
        sample_height=16,
        sample_frames=17,  # 5 latent frames at 4x temporal compression
        patch_size=2,
        max_text_seq_length=32,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    latent = torch.randn(8, 5, 16, 16, 16)  # [B, T, C, H, W]
    text = torch.randn(8, 32, 384)
    timestep = torch.randint(0, 1000, (8,))
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else contextlib.nullcontext()
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(latent, text, timestep, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out.float(), latent)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    first_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "peer": "diffusers CogVideoXTransformer3DModel",
        "torch": torch.__version__,
        "dtype": dtype,
        "step_s": round(float(np.median(times)), 3),
        "first_step_s": round(first_s, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    for dtype in args.dtypes.split(","):
        print(json.dumps(run(dtype, args.steps)), flush=True)


if __name__ == "__main__":
    main()
