"""The DiT's training step on its own: the rectified-flow loss overfits a few latents, and the
EMA warms up (no VAE, no data pipeline; `test_train_dit.py` runs the whole command)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import linen as nn

from sora_jax import config_lib, dit_lib, train_lib
from sora_jax.text import encoders


@pytest.mark.parametrize("prediction", ["velocity", "data"])
def test_flow_loss_overfits_a_few_latents(prediction):
    """A hundred steps on two fixed latents must really drive the rectified-flow loss down."""
    config = config_lib.load_config("configs/dit_tiny.py:variant=micro/1x2x2")
    config.model.prediction = prediction
    text = encoders.make_text_encoder(
        ml_collections.ConfigDict(dict(name="small", width=32, depth=1, heads=2, max_length=8))
    )
    model = dit_lib.make_model(config.model)
    latent = jax.random.normal(jax.random.key(0), (2, 3, 4, 4, 8))
    tokens = text.tokenizer(["a red circle", "a blue square"])
    batch = {"latent": latent, "text_ids": tokens["ids"], "text_mask": tokens["mask"]}
    stats = (np.zeros(8, np.float32), np.ones(8, np.float32))
    diffusion = ml_collections.ConfigDict(config.diffusion.to_dict())
    diffusion.text_dropout = 0.0
    loss_fn = dit_lib.make_loss_fn(model, text, diffusion, stats)
    params = nn.unbox(dit_lib.init_params(model, text, latent.shape, jax.random.key(1)))
    optimizer = optax.adam(5e-3)
    step = jax.jit(train_lib.make_train_step(loss_fn, optimizer))
    state = train_lib.create_train_state(params, optimizer)
    eval_rngs = jax.random.split(jax.random.key(9), 8)
    held_out_loss = jax.jit(
        lambda p: jnp.mean(jax.vmap(lambda r: loss_fn(p, batch, r)[0])(eval_rngs))
    )
    before = float(held_out_loss(state.params))
    for _ in range(100):
        state, _ = step(state, batch, jax.random.key(2))
    after = float(held_out_loss(state.params))
    # Measured: velocity 1.94 -> 1.18; data 15.1 -> 1.73. A data model starts by predicting
    # x0 = 0, whose velocity error is |x0|^2 / t^2, so `after` is its clean-token error over
    # the same weighting: below a fifth of the latents' own energy, not merely non-zero output.
    assert after < {"velocity": 0.7, "data": 0.2}[prediction] * before, (before, after)


def test_ema_warms_up():
    """Step 0 uses decay 1/10 (the EMA follows the params early); later steps approach 0.999."""
    params = {"w": jnp.ones(3)}
    optimizer = optax.sgd(1.0)
    step = dit_lib.make_train_step(lambda p, b, r, s: (jnp.sum(p["w"]), {}), optimizer, 0.999)
    state = dit_lib.create_state(params, optimizer)
    state, _ = step(state, None, jax.random.key(0))  # params: 1 -> 0
    np.testing.assert_allclose(state.ema["w"], 0.1 * 1.0 + 0.9 * 0.0, rtol=1e-6)
    state = state.replace(step=jnp.asarray(10**6, jnp.int32))
    before = state.ema["w"]
    state, _ = step(state, None, jax.random.key(0))
    np.testing.assert_allclose(
        state.ema["w"], 0.999 * before + 0.001 * state.params["w"], rtol=1e-6
    )
