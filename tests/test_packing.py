"""NaViT packing: the per-epoch plan, the layout of a packed row, and the packed loss."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from sora_jax import config_lib, dit_lib
from sora_jax.data import packing
from sora_jax.models import dit
from sora_jax.text import encoders

PATCH = (1, 2, 2)


def test_plan_fills_rows_within_budget_and_is_deterministic():
    budgets = np.random.default_rng(0).integers(4, 40, 200)
    plan = packing.PackPlan(budgets, seq_len=64, max_clips=3, rows=4, seed=1)
    batches = plan.epoch(0)
    seen = [i for batch in batches for row in batch for i in row]
    assert len(seen) == len(set(seen)) and len(seen) > 0.8 * len(budgets)
    for batch in batches:
        assert len(batch) == 4
        for row in batch:
            assert 1 <= len(row) <= 3 and budgets[row].sum() <= 64
    assert plan(0) == packing.PackPlan(budgets, 64, 3, 4, seed=1)(0)
    assert plan(len(batches)) == plan.epoch(1)[0] != plan.epoch(0)[0]
    with pytest.raises(ValueError, match="more than seq_len"):
        packing.PackPlan(np.array([65]), seq_len=64, max_clips=3, rows=1, seed=0)


def test_budgets_count_the_longest_tail_a_clip_can_take():
    shapes = [(3, 4, 4, 8), (1, 4, 4, 8), (2, 4, 8, 8)]
    # 12 + 2 frames of 4 tokens; an image takes no tail; 16 + 1 frame of 8 tokens.
    assert packing.budgets(shapes, PATCH, longest_tail=2).tolist() == [20, 4, 24]


def _clip(t, h, w, seed):
    rng = np.random.default_rng(seed)
    clip = {"latent": rng.normal(size=(t, h, w, 8)).astype(np.float32), "caption": f"c{seed}"}
    for k in (1, 2):
        if k < t:
            clip[f"tail{k}"] = rng.normal(size=(k, h, w, 8)).astype(np.float32)
    return clip


def test_pack_row_layout():
    clips = [_clip(3, 4, 4, 0), _clip(1, 4, 8, 1), _clip(3, 4, 4, 2)]
    row = packing.pack_row(
        clips, ["extend_backward", "i2v", "i2v"], patch=PATCH, seq_len=48, max_clips=4, context=2
    )
    # clip 1: 12 tokens + 2 tail frames (8 tokens); the image: 8 tokens, no conditioning
    # (too short for i2v); clip 3: 12 tokens, its first frame (4 tokens) clean; 8 padding.
    assert row["segments"].tolist() == [1] * 20 + [2] * 8 + [3] * 12 + [0] * 8
    assert (
        row["cond"].tolist()
        == [False] * 12 + [True] * 8 + [False] * 8 + [True] * 4 + [False] * 8 + [False] * 8
    )
    assert row["clip_tokens"].tolist() == [12, 8, 12, 0]
    assert row["coords"][12:20, 0].tolist() == [1.0] * 4 + [2.0] * 4  # the last two frames
    np.testing.assert_array_equal(row["tokens"][12, :8], clips[0]["tail2"][0, 0, 0])


def test_packed_loss_ignores_padding_and_has_finite_gradients():
    config = config_lib.load_config("configs/dit_tiny.py:variant=micro/1x2x2")
    model = dit_lib.make_model(config.model)
    text = encoders.make_text_encoder(
        ml_collections.ConfigDict(dict(name="small", width=32, depth=1, heads=2, max_length=8))
    )
    params = nn.unbox(dit_lib.init_params(model, text, (1, 3, 4, 4, 8), jax.random.key(0)))
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params
    )
    stats = (np.zeros(8, np.float32), np.ones(8, np.float32))
    loss_fn = jax.jit(dit_lib.make_packed_loss_fn(model, text, config.diffusion, stats))
    rows = [[_clip(3, 4, 4, 0), _clip(1, 4, 8, 1)], [_clip(2, 4, 8, 2)]]
    tasks_ = [["i2v", "t2v"], ["interpolate"]]
    batch = packing.pack_batch(rows, tasks_, patch=PATCH, seq_len=40, max_clips=2, context=2)
    captions = batch.pop("captions")

    def token_ids(prompts):
        ids = text.tokenizer(prompts)
        return ids["ids"], ids["mask"]

    batch.update(dit_lib.packed_text_fields(text, token_ids, captions, max_clips=2))
    assert batch["text_ids"].shape == (2, 16)  # two blocks of 8 a row; row 2's second unused
    loss, metrics = loss_fn(params, batch, jax.random.key(1))
    noisy = dict(batch, tokens=np.where((batch["segments"] == 0)[..., None], 50.0, batch["tokens"]))
    assert float(loss_fn(params, noisy, jax.random.key(1))[0]) == pytest.approx(float(loss))
    assert float(metrics["fill"]) == pytest.approx((20 + 16) / 80)  # real tokens of 2 x 40
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, jax.random.key(1))[0]))(params)
    assert all(jnp.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("text_mode", ["cross", "joint"])
def test_frozen_captions_packed_end_to_end_read_as_blocks(text_mode):
    """A frozen encoder's caption states laid end to end (tight, `TEXT_BUCKET` positions a row)
    give the DiT the same output as one block of L positions per clip slot."""
    length, width = 8, 16
    sizes = {"a red circle": 3, "a blue square": 5, "a green star": 8}

    def embed(prompts):
        states = np.stack([
            np.random.default_rng(sizes[p]).normal(size=(length, width)) for p in prompts
        ]).astype(np.float32)  # fmt: skip
        return states, np.arange(length)[None] < np.array([[sizes[p]] for p in prompts])

    frozen = encoders.TextEncoder(
        name="minilm", tokenizer=ml_collections.ConfigDict(dict(max_length=length)),
        module=None, frozen=True, width=width,
    )  # fmt: skip
    captions = [["a red circle", "a blue square"], ["a green star"]]
    tight = dit_lib.packed_text_fields(frozen, embed, captions, max_clips=2)
    assert tight["text"].shape == (2, dit_lib.TEXT_BUCKET, width)
    assert tight["text_segments"][0, :9].tolist() == [1] * 3 + [2] * 5 + [0]
    assert tight["text_mask"].sum(axis=1).tolist() == [8, 8]
    padded = [row + row[:1] * (2 - len(row)) for row in captions]
    states, mask = embed([c for row in padded for c in row])
    blocks = dict(
        text=states.reshape(2, 2 * length, width),
        text_mask=mask.reshape(2, 2 * length),
        text_segments=np.broadcast_to(np.repeat([1, 2], length), (2, 2 * length)),
    )
    rows = [[_clip(3, 4, 4, 0), _clip(1, 4, 8, 1)], [_clip(2, 4, 8, 2)]]
    batch = packing.pack_batch(
        rows, [["t2v", "t2v"], ["t2v"]], patch=PATCH, seq_len=40, max_clips=2, context=2
    )
    model = dit.dit_from_variant("micro/1x2x2", text_mode=text_mode)
    t = jnp.full(batch["segments"].shape, 0.5)

    def inputs(text):
        args = (batch["tokens"], t, batch["coords"], text["text"], text["text_mask"])
        kwargs = dict(
            segments_BxN=batch["segments"],
            text_segments_BxL=text["text_segments"],
            drop_text_B=jnp.zeros((2, 2), bool),
        )
        return args, kwargs

    args, kwargs = inputs(blocks)
    params = nn.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"])
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params
    )

    def run(params, text):
        args, kwargs = inputs(text)
        return model.apply({"params": params}, *args, **kwargs)

    real = batch["segments"] > 0
    np.testing.assert_allclose(
        np.asarray(run(params, tight))[real], np.asarray(run(params, blocks))[real], atol=1e-5
    )
