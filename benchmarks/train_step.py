"""DiT train-step speed: tokens/s, achieved GFLOP/s and the fraction of this machine's matmul peak.

    python benchmarks/train_step.py [--presets tiny,S,peer] [--dtypes float32,bfloat16] [--steps 5]
        [--text_modes cross,joint] [--remat none,full] [--peer_s float32=1.36,bfloat16=0.65]

Each row trains a DiT (random init, AdamW, EMA: the real `dit_lib` step) on 8 clips of 320
video tokens (latent [8, 5, 16, 16, 16], 1x2x2 patches) with 32 text tokens of width 384, the
shape of PERF_NOTES.md. `peer` is the PERF_NOTES comparison model (width 384, depth 8, 6 heads):
`benchmarks/peer_pytorch.py` times PyTorch + diffusers' CogVideoX transformer on it; pass its
step times as `--peer_s` for the ratio. FLOPs are
counted analytically (`cost_analysis` counts a scanned layer once): matmuls and attention,
forward x 3 for forward + backward (remat's recomputation is not counted). The peak is measured
in the same run: a jitted 2048^3 matmul in f32 and with bf16 inputs / f32 accumulation, the
fastest of 10. `--text_modes cross,joint` times MM-DiT joint attention beside cross-attention
(the `experiments/text_attention` ablation) and prints the ratio; the analytic FLOPs count
cross-attention, so joint rows report time only.

bfloat16 rows run `models/mixed_precision.py` (bf16 operands, f32 accumulation, both passes).
The process keeps freed host memory (`sora_jax/host_memory.py`, as the CLI does);
SORA_JAX_SYSTEM_MALLOC=1 measures glibc's default, and `page_faults_per_step` shows the cost.
"""

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from sora_jax import config_lib, dit_lib, host_memory, train_lib

LATENT = (8, 5, 16, 16, 16)
TEXT_TOKENS, TEXT_WIDTH = 32, 384


def matmul_peak(dtype, n=2048, repeats=10) -> float:
    """GFLOP/s of the fastest of `repeats` n^3 matmuls (the peak, not a mean)."""
    a = jax.random.normal(jax.random.key(0), (n, n)).astype(dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def forward_flops(width, depth, tokens_per_clip, batch, mlp_ratio=4.0) -> float:
    """Matmul + attention FLOPs of one forward pass (cross-attention text injection)."""
    d, n, m = width, tokens_per_clip, TEXT_TOKENS
    per_token_per_layer = (
        2 * 4 * d * d  # self-attention q, k, v, out
        + 2 * 2 * n * d  # scores and values over n keys
        + 2 * 2 * d * d  # cross-attention q, out
        + 2 * 2 * m * d  # cross scores and values over l text keys
        + 2 * 2 * mlp_ratio * d * d  # MLP
    )
    text_kv = 2 * 2 * m * TEXT_WIDTH * d  # cross-attention k, v on the text, per clip per layer
    per_token = 2 * d * (64 + 256 + d + 6 * d + 2 * d)  # patch/time embed, adaLN, final
    return batch * (depth * (n * per_token_per_layer + text_kv) + n * per_token)


def run(preset: str, dtype: str, steps: int, text_mode: str = "cross", remat="none") -> dict:
    variant = "S/1x2x2" if preset == "peer" else f"{preset}/1x2x2"
    config = config_lib.load_config(f"configs/dit_tiny.py:variant={variant},batch={LATENT[0]}")
    config.model.dtype = dtype
    config.model.text_mode = text_mode
    config.model.remat_policy = remat
    model = dit_lib.make_model(config.model)
    if preset == "peer":
        model = model.clone(depth=8)
    text = _frozen_text_stub()
    optimizer = train_lib.make_optimizer(config.optimizer, 1000)
    params = nn.unbox(dit_lib.init_params(model, text, (1, *LATENT[1:]), jax.random.key(0)))
    state = dit_lib.create_state(params, optimizer)
    stats = (jnp.zeros(LATENT[-1]), jnp.ones(LATENT[-1]))
    loss_fn = dit_lib.make_loss_fn(model, text, config.diffusion, stats)
    step = jax.jit(dit_lib.make_train_step(loss_fn, optimizer, 0.999), donate_argnums=0)
    batch = {
        "latent": jax.random.normal(jax.random.key(1), LATENT),
        "text": jax.random.normal(jax.random.key(2), (LATENT[0], TEXT_TOKENS, TEXT_WIDTH)),
        "text_mask": jnp.ones((LATENT[0], TEXT_TOKENS), bool),
    }
    start = time.perf_counter()
    state, metrics = step(state, batch, jax.random.key(3))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(2):  # untimed: the host heap grows to this step's scratch (host_memory.py)
        state, metrics = step(state, batch, jax.random.key(3))
    jax.block_until_ready(metrics)
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch, jax.random.key(3))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // steps
    step_s = float(np.median(times))
    tokens = int(np.prod(LATENT[1:4])) // 4
    flops = 3 * forward_flops(model.width, model.depth, tokens, LATENT[0], model.mlp_ratio)
    row = {
        "preset": preset,
        "text_mode": text_mode,
        "width": model.width,
        "depth": model.depth,
        "dtype": dtype,
        "remat": remat,
        "step_s": round(step_s, 3),
        "compile_s": round(compile_s, 1),
        "tokens_per_s": round(LATENT[0] * tokens / step_s),
        "page_faults_per_step": faults,
    }
    if text_mode == "cross":
        row["gflops_per_s"] = round(flops / step_s / 1e9, 1)
    return row


def _frozen_text_stub():
    """A frozen-encoder stand-in with MiniLM's width: the benchmark feeds text states directly."""
    from sora_jax.text import encoders

    return encoders.TextEncoder(
        name="minilm",
        tokenizer=ml_collections.ConfigDict(dict(max_length=TEXT_TOKENS)),
        module=None,
        frozen=True,
        width=TEXT_WIDTH,
    )


def main():
    print(json.dumps({"retain_freed_memory": host_memory.retain_freed_memory()}))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,S,peer")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--text_modes", default="cross")
    parser.add_argument("--remat", default="none", help="remat policies to time, e.g. none,full")
    parser.add_argument("--peer_s", default="", help="peer_pytorch.py step times: dtype=s,...")
    args = parser.parse_args()
    peer_s = {k: float(v) for k, v in (kv.split("=") for kv in args.peer_s.split(",") if kv)}
    peak = {"float32": matmul_peak(jnp.float32), "bfloat16": matmul_peak(jnp.bfloat16)}
    print(json.dumps({"matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()}}))
    for preset in args.presets.split(","):
        for dtype in args.dtypes.split(","):
            for remat in args.remat.split(","):
                cross_s = None
                for text_mode in args.text_modes.split(","):
                    row = run(preset, dtype, args.steps, text_mode, remat)
                    if "gflops_per_s" in row:
                        row["fraction_of_peak"] = round(row["gflops_per_s"] / peak[dtype], 3)
                        cross_s = row["step_s"]
                    elif cross_s:
                        row["step_vs_cross"] = round(row["step_s"] / cross_s, 2)
                    if preset == "peer" and dtype in peer_s:
                        # > 1: faster than PyTorch at the same dtype on this machine.
                        row["vs_pytorch"] = round(peer_s[dtype] / row["step_s"], 2)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
