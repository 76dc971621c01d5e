"""Sequence parallelism (Ulysses, ring) on 8 fake devices: same outputs and gradients as one
device, and DiT train steps that match one device's on every mesh in the matrix."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_dit import _apply, _init, _inputs

from sora_jax import config_lib, dit_lib, sharding, train_lib
from sora_jax.models import dit
from sora_jax.text import encoders

FIELDS = dict(width=64, depth=2, num_heads=8, patch_size=(1, 2, 2))


def _loss_and_grads(model, params, inp, segments=None):
    weights = jax.random.normal(jax.random.key(3), inp["x"].shape)

    def loss(p):
        out = _apply(model, p, inp, segments_BxN=segments)
        return jnp.sum(out * weights), out

    return jax.value_and_grad(loss, has_aux=True)(params)


# The collective each scheme must have compiled to (so a silent fallback fails the test).
_EXCHANGE = {"ulysses": "all-to-all", "ring": "collective-permute"}


@pytest.mark.parametrize(
    "mode, text_mode, degrees, packed",
    [
        ("ulysses", "cross", (1, 2, 2, 2), True),
        ("ulysses", "joint", (1, 1, 2, 4), False),
        ("ring", "cross", (1, 1, 2, 4), True),
        ("ring", "joint", (1, 2, 2, 2), True),
    ],
)
def test_sequence_parallel_matches_one_device(mode, text_mode, degrees, packed):
    # 4 latent frames of 4x4 -> 16 tokens; 8 text tokens, so joint attention sees 24.
    inp = _inputs((2, 4, 4, 4, 8), text_len=8)
    segments = jnp.asarray([[1] * 10 + [2] * 6, [1] * 12 + [0] * 4]) if packed else None
    reference = dit.DiT(text_mode=text_mode, **FIELDS)
    params = _init(reference, inp)
    (_, want), want_grads = _loss_and_grads(reference, params, inp, segments)

    # Ring: 8-token blocks, so a device's 12 joint tokens take two blocks and a filled one.
    model = dit.DiT(text_mode=text_mode, sequence_parallel=mode, attention_block=8, **FIELDS)
    mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, degrees, strict=True)))
    with sharding.mesh_context(mesh, sharding.DIT_RULES):
        step = jax.jit(lambda p, i, s: _loss_and_grads(model, p, i, s))
        hlo = step.lower(params, inp, segments).compile().as_text()
        (_, got), grads = step(params, inp, segments)
    assert _EXCHANGE[mode] in hlo
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-5)


def test_sequence_parallel_without_a_sequence_axis_is_one_devices_attention():
    inp = _inputs((2, 4, 4, 4, 8), text_len=8)
    params = _init(dit.DiT(**FIELDS), inp)
    want = _loss_and_grads(dit.DiT(**FIELDS), params, inp)[0][1]
    for mode in _EXCHANGE:
        got = _loss_and_grads(dit.DiT(sequence_parallel=mode, **FIELDS), params, inp)[0][1]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "mode, fields, latent, message",
    [
        (
            "ulysses",
            dict(num_heads=4),
            (2, 4, 4, 4, 8),
            "heads per tensor shard (2) divisible by 4",
        ),
        ("ulysses", {}, (2, 3, 2, 4, 8), "tokens (6)"),
        ("ring", {}, (2, 3, 2, 4, 8), "needs tokens (6) divisible by 4"),
        ("ulysses", dict(attention="factorized"), (2, 4, 4, 4, 8), "needs attention='full'"),
        ("ulysses", dict(attention_impl="blockwise"), (2, 4, 4, 4, 8), "'none' or 'ring'"),
        ("ring", dict(attention="factorized"), (2, 4, 4, 4, 8), "needs attention='full'"),
    ],
)
def test_sequence_parallel_refuses_what_it_cannot_split(mode, fields, latent, message):
    inp = _inputs(latent, text_len=8)
    model = dit.DiT(**{**FIELDS, **fields, "sequence_parallel": mode})
    # Refused while tracing: abstract params suffice, nothing is compiled.
    params = jax.eval_shape(lambda: _init(dit.DiT(**{**FIELDS, **fields}), inp))
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=2, sequence=4))
    with (
        sharding.mesh_context(mesh, sharding.DIT_RULES),
        pytest.raises(ValueError, match=re.escape(message)),
    ):
        jax.eval_shape(lambda p: _apply(model, p, inp), params)


def _two_sgd_steps(degrees, sequence_parallel, dtype=np.float32):
    """Losses and params after two DiT train steps on a mesh. Plain SGD, so the params are the
    gradients' sum (Adam's first steps would amplify reduction noise in tiny gradients), and two
    steps, so the second reaches every weight past the zero-initialised output layer. `dtype`
    float64 (x64 on) tells a wrong result from rounding: experiments/xla_spmd_modulation_bug."""
    config = config_lib.load_config("configs/dit_tiny.py:text=small,batch=8")
    config.model.text.max_length = 8
    text = encoders.make_text_encoder(config.model.text)
    optimizer = optax.sgd(0.1)
    model = dit.DiT(sequence_parallel=sequence_parallel, **FIELDS)
    latent_shape = (8, 4, 4, 4, 16)  # 16 tokens a clip
    mesh = sharding.make_mesh(
        dict(zip(sharding.MESH_AXES, degrees, strict=True)),
        devices=jax.devices()[: int(np.prod(degrees))],
    )
    state, shardings = sharding.sharded_init(
        lambda r: dit_lib.create_state(
            dit_lib.init_params(model, text, (1, *latent_shape[1:]), r), optimizer
        ),
        mesh, sharding.DIT_RULES, jax.random.key(0),
    )  # fmt: skip
    state = jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state
    )
    stats = (jnp.zeros(16, dtype), jnp.ones(16, dtype))
    step = train_lib.jit_train_step(
        dit_lib.make_train_step(
            dit_lib.make_loss_fn(model, text, config.diffusion, stats), optimizer, 0.999
        ),
        shardings, dit_lib.batch_shardings(mesh, text), mesh, sharding.DIT_RULES,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    batch = {
        "latent": rng.normal(size=latent_shape).astype(dtype),
        "cond_frames": np.zeros(latent_shape[:2], bool),
        "text_ids": rng.integers(1, 100, size=(8, 8)).astype(np.int32),
        "text_mask": np.ones((8, 8), bool),
    }
    losses = []
    for _ in range(2):
        state, metrics = step(state, sharding.host_to_global(batch, mesh), jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


@pytest.fixture(scope="module")
def one_device_steps():
    return _two_sgd_steps((1, 1, 1, 1), "none")


@pytest.mark.slow
@pytest.mark.parametrize(
    "degrees, mode",
    [
        ((2, 2, 1, 1), "none"),
        ((2, 1, 1, 4), "ulysses"),
        ((1, 2, 2, 2), "ulysses"),
        ((2, 1, 1, 4), "ring"),
        ((2, 2, 2, 1), "none"),  # once wrong: see DiTBlock and the final layer
    ],
)  # fmt: skip
def test_dit_train_steps_are_the_same_on_every_mesh(one_device_steps, degrees, mode):
    want_losses, want_params = one_device_steps
    losses, params = _two_sgd_steps(degrees, mode)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(want_params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
