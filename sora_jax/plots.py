"""Training curves of a run as a PNG: the loss (raw and smoothed) and the periodic sample scores.

    python -m sora_jax.plots --workdir W [--out W/curves.png]

Reads W/metrics.jsonl (written by `train` and `train-vae`), so it works on a run in progress, and
is what the notebooks call to compare runs (`plot_curves` takes several workdirs).
"""

import pathlib

import matplotlib
import numpy as np
from absl import flags

from sora_jax import cli, train_flags
from sora_jax.metric_writers import read_metrics

matplotlib.use("Agg")  # files only; never a window
from matplotlib import pyplot as plt  # noqa: E402 - after choosing the backend

# Periodic scores worth a panel of their own, when a run logs them: the DiT's probe adherence,
# the VAE's PSNR, the captioner's accuracy on held-out clips (exact, and their shapes).
SCORES = ("sample_adherence", "sample_psnr", "caption_exact", "caption_shape")

_OUT = flags.DEFINE_string("out", None, "The PNG to write (default: W/curves.png).")


def _series(metrics: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(m["step"], m[key]) for m in metrics if key in m]
    steps, values = zip(*points, strict=True) if points else ((), ())
    return np.asarray(steps), np.asarray(values, np.float64)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points (shorter at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def plot_curves(workdirs, out, *, smooth: int = 10) -> pathlib.Path:
    """Writes the loss and score curves of one or more runs (one line each) to `out`."""
    runs = {pathlib.Path(w).name: read_metrics(w) for w in workdirs}
    if not any(runs.values()):
        raise FileNotFoundError(f"no metrics.jsonl with entries in {list(map(str, workdirs))}")
    scores = [k for k in SCORES if any(_series(m, k)[0].size for m in runs.values())]
    fig, axes = plt.subplots(1, 1 + len(scores), figsize=(5 * (1 + len(scores)), 3.6))
    axes = np.atleast_1d(axes)
    for name, metrics in runs.items():
        steps, loss = _series(metrics, "loss")
        if steps.size:
            (line,) = axes[0].plot(steps, loss, alpha=0.25, linewidth=0.8)
            axes[0].plot(steps, _smooth(loss, smooth), color=line.get_color(), label=name)
        for ax, key in zip(axes[1:], scores, strict=True):
            steps, values = _series(metrics, key)
            if steps.size:
                ax.plot(steps, values, marker="o", markersize=3, label=name)
    axes[0].set(title=f"loss (mean of {smooth} logs)", xlabel="step", yscale="log")
    for ax, key in zip(axes[1:], scores, strict=True):
        ax.set(title=key, xlabel="step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    workdir = train_flags.WORKDIR.value
    if not workdir:
        raise cli.UserError("--workdir is required")
    out = _OUT.value or pathlib.Path(workdir) / "curves.png"
    with cli.user_errors(FileNotFoundError):
        print(f"wrote {plot_curves([workdir], out)}")


if __name__ == "__main__":
    cli.run(main)
