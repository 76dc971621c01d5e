"""Bundles are written whole or not at all, also over an existing bundle."""

import os

import numpy as np
import pytest

from sora_jax import bundle, checkpoints


def _write(path, value):
    tree = {"layer": {"kernel": np.full((2, 3), value, np.float32)}}
    return bundle.write(path, {"vae_step": int(value)}, {bundle.VAE: tree})


def test_rewriting_a_bundle_replaces_it_and_an_interrupted_swap_keeps_the_old_one(
    tmp_path, monkeypatch
):
    out = tmp_path / "b"
    _write(out, 1)
    (out / "MODEL_CARD.md").write_text("card")
    _write(out, 2)
    assert bundle.read_meta(out)["vae_step"] == 2 and (out / "MODEL_CARD.md").read_text() == "card"

    replace = os.replace

    def failing(src, dst):
        if str(src).endswith(".tmp"):  # the new bundle moving into place
            raise KeyboardInterrupt
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(KeyboardInterrupt):
        _write(out, 3)
    monkeypatch.undo()
    assert bundle.read_meta(out)["vae_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # nothing left beside it

    (tmp_path / "other").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match="not a bundle"):
        _write(tmp_path / "other", 4)
