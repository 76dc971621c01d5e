"""Attention on one device: XLA's plain attention vs blockwise attention, time and peak memory.

    python benchmarks/attention.py [--tokens 1024,4096,8192,16384] [--heads 4] [--head_dim 64]

One forward + backward pass of self-attention over N tokens (batch 1, two packed segments, as
the DiT's packed rows), jitted, timed after compilation, each (implementation, N) in a fresh
process so its peak resident memory is its own. XLA's attention holds the [H, N, N] scores
(and their gradient); blockwise attention holds [H, 512, 512] blocks, so its peak should grow
with N, not N^2. The outputs of both are compared at every N (max absolute difference). A run
the kernel kills (out of memory: XLA's attention at 16,384 tokens wants more than this 24 GiB
machine has) is reported as such.
"""

import argparse
import os
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from child_process import print_peak_rss, run_child

from sora_jax.models import dit


def _inputs(tokens: int, heads: int, head_dim: int):
    rng = np.random.default_rng(0)
    q, k, v = (
        jnp.asarray(rng.normal(size=(1, tokens, heads, head_dim)), jnp.float32) for _ in range(3)
    )
    segments = jnp.asarray([[1] * (tokens // 2) + [2] * (tokens - tokens // 2)])
    return (q, k, v), (segments, segments)


def child(impl: str, tokens: int, heads: int, head_dim: int, out: str, repeats: int = 3) -> None:
    qkv, segments = _inputs(tokens, heads, head_dim)

    @jax.jit
    def forward_backward(q, k, v):
        loss = lambda *a: jnp.sum(dit.attend(impl, *a, segments) ** 2)  # noqa: E731
        return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)

    jax.block_until_ready(forward_backward(*qkv))  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(forward_backward(*qkv))
    seconds = (time.perf_counter() - start) / repeats
    np.save(out, np.asarray(dit.attend(impl, *qkv, segments)))
    print_peak_rss(seconds=seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1024,4096,8192,16384")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        impl, tokens, out = args.child
        child(impl, int(tokens), args.heads, args.head_dim, out)
        return
    print(f"self-attention forward + backward, batch 1, {args.heads} heads of {args.head_dim}")
    shape = ("--heads", args.heads, "--head_dim", args.head_dim)
    with tempfile.TemporaryDirectory() as outputs:
        for tokens in map(int, args.tokens.split(",")):
            out = {impl: os.path.join(outputs, f"{impl}.npy") for impl in ("xla", "blockwise")}
            results = {i: _measure(tokens, out[i], i, shape) for i in out}
            line = " | ".join(f"{impl} {text}" for impl, (text, _) in results.items())
            if all(seconds for _, seconds in results.values()):
                ratio = results["blockwise"][1] / results["xla"][1]
                difference = np.abs(np.load(out["xla"]) - np.load(out["blockwise"])).max()
                line += f" | time ratio {ratio:.2f}, max |difference| {difference:.1e}"
            print(f"  N={tokens:6d}: {line}")


def _measure(tokens, out, impl, shape):
    """("seconds and peak" text, seconds or None if the child died)."""
    try:
        result = run_child(__file__, impl, tokens, out, *shape)
    except subprocess.CalledProcessError as e:
        reason = "killed, out of memory" if e.returncode == -9 else f"exit {e.returncode}"
        return f"failed ({reason})", None
    return f"{result['seconds']:7.3f} s, peak {result['peak_mib']:7.0f} MiB", result["seconds"]


if __name__ == "__main__":
    main()
