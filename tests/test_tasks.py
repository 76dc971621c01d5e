"""The task mixture: layouts, deterministic draws, the train batch's conditioning fields, and the
DiT's token inputs with tail frames appended (loss and sampler)."""

import collections

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from sora_jax import config_lib, dit_lib, tasks
from sora_jax.text import encoders

T, H, W, C = 4, 4, 4, 8


def test_layouts_and_tail_lengths():
    assert [tasks.layout(t, 2) for t in tasks.TASKS] == [
        (0, 0), (1, 0), (0, 1), (2, 0), (0, 2), (1, 1)
    ]  # fmt: skip
    assert tasks.tail_lengths({"t2v": 1, "i2v": 1}, 2) == ()
    assert tasks.tail_lengths({"t2v": 1, "extend_backward": 1, "interpolate": 0}, 3) == (3,)
    assert tasks.pixel_frames(1, 4) == 1 and tasks.pixel_frames(3, 4) == 9
    with pytest.raises(ValueError, match="unknown tasks"):
        tasks.check_weights({"t2v": 1, "outpaint": 1})
    with pytest.raises(ValueError, match="positive sum"):
        tasks.check_weights({"t2v": 0})


def test_draws_follow_the_weights_and_the_step():
    weights = {"t2v": 3, "i2v": 1, "interpolate": 0}
    a = tasks.draw_tasks(weights, 4000, seed=0, step=5)
    assert a == tasks.draw_tasks(weights, 4000, seed=0, step=5)
    assert a != tasks.draw_tasks(weights, 4000, seed=0, step=6)
    counts = collections.Counter(a)
    assert set(counts) == {"t2v", "i2v"} and abs(counts["t2v"] / 4000 - 0.75) < 0.03


def test_a_batch_draws_from_one_tail_group_and_keeps_the_weights():
    weights = {"t2v": 0.4, "i2v": 0.2, "i2v_tail": 0.1, "extend_backward": 0.1, "interpolate": 0.2}
    tailed = {"i2v_tail", "extend_backward", "interpolate"}
    batches = [tasks.draw_batch_tasks(weights, 32, seed=0, step=s, context=2) for s in range(2000)]
    assert batches[7] == tasks.draw_batch_tasks(weights, 32, seed=0, step=7, context=2)
    assert all(set(b) <= tailed or not set(b) & tailed for b in batches)
    assert abs(sum(set(b) <= tailed for b in batches) / 2000 - 0.4) < 0.04
    counts = collections.Counter(name for b in batches for name in b)
    for name, weight in weights.items():
        assert abs(counts[name] / (2000 * 32) - weight) < 0.03, name
    # Without tail tasks (or with only them) every batch is of the one group there is.
    plain = tasks.draw_batch_tasks({"t2v": 1, "i2v": 1}, 8, seed=0, step=0, context=2)
    assert set(plain) <= {"t2v", "i2v"}
    assert (
        tasks.draw_batch_tasks({"interpolate": 1}, 4, seed=0, step=0, context=2)
        == ["interpolate"] * 4
    )


def test_batch_tail_is_none_or_the_longest_any_weighted_task_fits():
    weights = {"t2v": 1, "i2v": 1, "i2v_tail": 1, "extend_backward": 1, "interpolate": 0}
    assert tasks.batch_tail(["t2v", "i2v"], weights, 5, context=2) == 0
    # One length for every batch with tails, whichever of them it drew.
    assert tasks.batch_tail(["i2v_tail", "interpolate"], weights, 5, context=2) == 2
    assert tasks.batch_tail(["extend_backward"], weights, 5, context=2) == 2
    assert tasks.batch_tail(["i2v_tail"], {"i2v_tail": 1, "interpolate": 1}, 5, context=2) == 1
    # Two latent frames fit i2v_tail's tail, not extend_backward's (which falls back to t2v).
    assert tasks.batch_tail(["extend_backward", "i2v_tail"], weights, 2, context=2) == 1
    assert tasks.batch_tail(["extend_backward"], weights, 2, context=2) == 0
    assert tasks.batch_tail(["interpolate", "extend_backward"], weights, 1, context=2) == 0


def test_conditioning_batch():
    names = ["t2v", "i2v", "i2v_tail", "extend_forward", "extend_backward", "interpolate"]
    rng = np.random.default_rng(0)
    tails = {k: rng.normal(size=(6, k, H, W, C)).astype(np.float32) for k in (1, 2)}
    batch = tasks.conditioning_batch(names, (6, T, H, W, C), tails, context=2, longest_tail=2)
    assert batch["cond_frames"].sum(1).tolist() == [0, 1, 0, 2, 0, 1]
    assert batch["cond_frames"][3].tolist() == [True, True, False, False]
    assert batch["tail_valid"].sum(1).tolist() == [0, 0, 1, 0, 2, 1]
    np.testing.assert_array_equal(batch["tail_latent"][4], tails[2][4])
    np.testing.assert_array_equal(batch["tail_latent"][2, :1], tails[1][2])
    assert batch["tail_latent"][2, 1:].sum() == 0
    assert batch["tail_time"][4].tolist() == [2.0, 3.0] and batch["tail_time"][5, 0] == 3.0
    # An image (one latent frame) cannot be conditioned: every task falls back to t2v.
    image = tasks.conditioning_batch(names, (6, 1, H, W, C), {}, context=2, longest_tail=2)
    assert not image["cond_frames"].any() and not image["tail_valid"].any()
    assert "tail_latent" not in tasks.conditioning_batch(["i2v"], (1, T, H, W, C), {}, 2, 0)


@pytest.fixture(scope="module")
def micro():
    config = config_lib.load_config("configs/dit_tiny.py:variant=micro/1x2x2")
    model = dit_lib.make_model(config.model)
    text = encoders.make_text_encoder(
        ml_collections.ConfigDict(dict(name="small", width=32, depth=1, heads=2, max_length=8))
    )
    params = nn.unbox(dit_lib.init_params(model, text, (1, T, H, W, C), jax.random.key(0)))
    # Random (not zero-initialised) output layers, so the output depends on every input.
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params
    )
    stats = (np.zeros(C, np.float32), np.ones(C, np.float32))
    return config, model, text, params, stats


def _batch(text, tail_latent, tail_valid):
    tokens = text.tokenizer(["a red circle", "a blue square"])
    return {
        "latent": jax.random.normal(jax.random.key(1), (2, T, H, W, C)),
        "cond_frames": jnp.array([[True, False, False, False], [False] * 4]),
        "tail_latent": tail_latent,
        "tail_time": jnp.array([[3.0, 0.0], [2.0, 3.0]]),
        "tail_valid": tail_valid,
        "text_ids": tokens["ids"],
        "text_mask": tokens["mask"],
    }


def test_loss_sees_valid_tails_and_ignores_padding(micro):
    config, model, text, params, stats = micro
    loss_fn = jax.jit(dit_lib.make_loss_fn(model, text, config.diffusion, stats))
    tails = jax.random.normal(jax.random.key(2), (2, 2, H, W, C))
    valid = jnp.array([[True, False], [True, True]])
    base, _ = loss_fn(params, _batch(text, tails, valid), jax.random.key(3))
    padded = tails.at[0, 1].set(100.0)  # example 0's second slot is padding
    same, _ = loss_fn(params, _batch(text, padded, valid), jax.random.key(3))
    seen = tails.at[1, 0].set(tails[1, 0] + 1.0)  # a valid tail frame
    other, _ = loss_fn(params, _batch(text, seen, valid), jax.random.key(3))
    assert np.isfinite(base) and float(same) == pytest.approx(float(base), rel=1e-6)
    assert abs(float(other) - float(base)) > 1e-4
    grads = jax.jit(
        jax.grad(lambda p: loss_fn(p, _batch(text, tails, valid), jax.random.key(3))[0])
    )(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_sampler_keeps_head_frames_and_returns_the_clip(micro):
    config, model, text, params, stats = micro
    tokens = text.tokenizer(["a red circle"])
    head = jax.random.normal(jax.random.key(4), (1, T, H, W, C))
    frames = jnp.array([[True, True, False, False]])
    tail = jax.random.normal(jax.random.key(5), (1, 1, H, W, C))
    kwargs = dict(
        latent_shape=(1, T, H, W, C), steps=3, sampler="euler", shift=1.0, cfg=2.0, stats=stats
    )
    out = dit_lib.sample_latents(
        model, text, params, tokens["ids"], tokens["mask"], jax.random.key(6),
        head=(head, frames), tail=tail, **kwargs,
    )  # fmt: skip
    assert out.shape == (1, T, H, W, C)
    np.testing.assert_allclose(out[:, :2], head[:, :2], atol=1e-5)
    assert not np.allclose(out[:, 2:], head[:, 2:], atol=1e-2)
    # SDEdit at a tiny strength barely moves the input.
    init = jax.random.normal(jax.random.key(7), (1, T, H, W, C))
    edited = dit_lib.sample_latents(
        model, text, params, tokens["ids"], tokens["mask"], jax.random.key(6),
        init=init, strength=0.01, **kwargs,
    )  # fmt: skip
    assert float(jnp.mean(jnp.abs(edited - init))) < 0.05
