"""Run logging: TensorBoard event files (tensorboardX, no TensorFlow) and metrics.jsonl."""

import json
import pathlib
import time

import jax
import numpy as np
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Writes scalars to `workdir/tensorboard` and one JSON line per call to metrics.jsonl.

    Only process 0 writes; the others get a writer that does nothing, so callers need no checks.
    """

    def __init__(self, workdir: str | pathlib.Path):
        self._active = jax.process_index() == 0
        if not self._active:
            return
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._tb = SummaryWriter(str(workdir / "tensorboard"))
        self._jsonl = (workdir / METRICS_FILE).open("a")

    def write_scalars(self, step: int, scalars: dict) -> None:
        if not self._active:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self._active:
            self._tb.close()
            self._jsonl.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    path = pathlib.Path(workdir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
