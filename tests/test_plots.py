"""Training curves from metrics.jsonl."""

import json

import numpy as np
import pytest
from PIL import Image

from sora_jax import plots


def _run(path, losses, scores):
    path.mkdir()
    lines = [{"step": 10 * (i + 1), "loss": v} for i, v in enumerate(losses)]
    lines += [{"step": s, "sample_psnr": v} for s, v in scores]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_plot_curves_of_two_runs(tmp_path):
    a = _run(tmp_path / "a", np.linspace(1.0, 0.1, 30), [(100, 20.0), (300, 25.0)])
    b = _run(tmp_path / "b", np.linspace(0.8, 0.2, 20), [])
    out = plots.plot_curves([a, b], tmp_path / "plots" / "curves.png")
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > 1.5 * image.size[1]  # loss + psnr panels
    with pytest.raises(FileNotFoundError):
        plots.plot_curves([tmp_path / "missing"], tmp_path / "x.png")


def test_smoothing_is_a_trailing_mean():
    np.testing.assert_allclose(plots._smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])
