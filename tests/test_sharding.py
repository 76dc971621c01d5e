"""Meshes, logical rules and the sharded train step, on 8 fake CPU devices.

The core property: sharding changes where numbers live, never what they are. A few steps of a
tiny regression must give the same loss and params on one device and on every mesh layout.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from sora_jax import sharding, train_lib
from sora_jax.models.layers import Dense, Mlp

B, N, D, F = 8, 4, 16, 32


def test_eight_fake_devices():
    assert jax.device_count() == 8, "tests/conftest.py must set XLA_FLAGS before jax loads"


# ----------------------------------------------------------------------------------------------
# make_mesh
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "degrees, expected",
    [
        (dict(data=8), (8, 1, 1, 1)),
        (dict(data=2, fsdp=2, tensor=2, sequence=1), (2, 2, 2, 1)),
        (dict(fsdp=2, sequence=4), (1, 2, 1, 4)),
        (dict(data=-1, tensor=2), (4, 1, 2, 1)),
        (dict(data=2, fsdp=-1, tensor=2, sequence=1), (2, 2, 2, 1)),
    ],
)
def test_make_mesh_shapes(degrees, expected):
    mesh = sharding.make_mesh(degrees)
    assert mesh.axis_names == sharding.MESH_AXES
    assert tuple(mesh.shape.values()) == expected
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 4
    assert mesh.devices.size == 8


def test_make_mesh_from_config_dict():
    config_mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=2, tensor=1, sequence=1))
    assert tuple(sharding.make_mesh(config_mesh).shape.values()) == (4, 2, 1, 1)


def test_make_mesh_on_device_subset():
    mesh = sharding.make_mesh({}, devices=jax.devices()[:1])
    assert tuple(mesh.shape.values()) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    "degrees, message",
    [
        (dict(data=2, tensor=2), "multiply to 4"),
        (dict(data=16), "multiply to 16"),
        (dict(data=-1, fsdp=-1), "at most one"),
        (dict(data=-1, tensor=3), "not divisible"),
        (dict(data=0, fsdp=8), "positive"),
        (dict(model=8), "unknown mesh axes"),
    ],
)
def test_make_mesh_rejects_bad_degrees(degrees, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(degrees)


# ----------------------------------------------------------------------------------------------
# Golden partition specs
# ----------------------------------------------------------------------------------------------


def test_mlp_golden_partition_specs():
    x = jnp.zeros((B, N, D))
    abstract = jax.eval_shape(Mlp(hidden_dim=F, activation="swiglu").init, jax.random.key(0), x)
    logical = nn.get_partition_spec(abstract)["params"]
    assert logical == {
        "wi_gate": {"kernel": P("embed", "mlp"), "bias": P("mlp")},
        "wi_up": {"kernel": P("embed", "mlp"), "bias": P("mlp")},
        "wo": {"kernel": P("mlp", "embed"), "bias": P("embed")},
    }
    assert nn.logical_to_mesh(logical, sharding.DIT_RULES) == {
        "wi_gate": {"kernel": P("fsdp", "tensor"), "bias": P("tensor")},
        "wi_up": {"kernel": P("fsdp", "tensor"), "bias": P("tensor")},
        "wo": {"kernel": P("tensor", "fsdp"), "bias": P("fsdp")},
    }

    mesh = sharding.make_mesh(dict(data=1, fsdp=2, tensor=4, sequence=1))
    shardings = sharding.logical_shardings(abstract, mesh, sharding.DIT_RULES)["params"]
    kernel_in, kernel_out = shardings["wi_gate"]["kernel"], shardings["wo"]["kernel"]
    assert kernel_in == jax.sharding.NamedSharding(mesh, P("fsdp", "tensor"))
    assert kernel_in.shard_shape((D, F)) == (D // 2, F // 4)
    assert kernel_out.shard_shape((F, D)) == (F // 4, D // 2)
    assert shardings["wi_up"]["bias"].shard_shape((F,)) == (F // 4,)
    assert shardings["wo"]["bias"].shard_shape((D,)) == (D // 2,)


def test_gelu_mlp_and_multihead_dense_specs():
    x = jnp.zeros((B, N, D))
    gelu = jax.eval_shape(Mlp(mlp_ratio=2.0).init, jax.random.key(0), x)
    assert nn.logical_to_mesh(nn.get_partition_spec(gelu), sharding.DIT_RULES)["params"] == {
        "wi": {"kernel": P("fsdp", "tensor"), "bias": P("tensor")},
        "wo": {"kernel": P("tensor", "fsdp"), "bias": P("fsdp")},
    }
    assert gelu["params"]["wi"]["kernel"].value.shape == (D, 2 * D)

    q_proj = Dense((4, 8), kernel_axes=("embed", "heads", "kv"))
    variables = q_proj.init(jax.random.key(1), x)
    spec = nn.logical_to_mesh(nn.get_partition_spec(variables), sharding.DIT_RULES)
    assert spec["params"] == {"kernel": P("fsdp", "tensor", None), "bias": P("tensor", None)}
    # The multi-axis kernel is a plain contraction over D.
    kernel = nn.unbox(variables)["params"]["kernel"]
    np.testing.assert_allclose(
        q_proj.apply(variables, x + 1.0), jnp.einsum("bnd,dhk->bnhk", x + 1.0, kernel), rtol=1e-6
    )


def test_vae_rules_shard_conv_kernels_and_frames():
    kernel = ("kernel_t", "kernel_h", "kernel_w", "conv_in", "conv_out")
    assert nn.logical_to_mesh_axes(kernel, sharding.VAE_RULES) == P(
        None, None, None, "fsdp", "tensor"
    )
    video = ("batch", "frames", "height", "width", "channels")
    assert nn.logical_to_mesh_axes(video, sharding.VAE_RULES) == P(
        ("data", "fsdp"), "sequence", None, None, None
    )


# ----------------------------------------------------------------------------------------------
# Sharded training: same numbers on every mesh
# ----------------------------------------------------------------------------------------------

MODEL = Mlp(hidden_dim=F, activation="swiglu")
OPTIMIZER = optax.adamw(1e-2, weight_decay=1e-2)


def _loss_fn(params, batch, rng, step):
    pred = MODEL.apply({"params": params}, batch["x"])
    # The rng must reach the loss already folded with the step; report it to check that.
    return jnp.mean((pred - batch["y"]) ** 2), {"noise": jax.random.uniform(rng)}


def _init_state(key):
    params = MODEL.init(key, jnp.zeros((1, N, D)))["params"]
    return train_lib.create_train_state(params, OPTIMIZER)


def _batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, N, D)).astype(np.float32)
    return {"x": x, "y": np.sin(x)}


def _train(mesh, num_steps=3):
    state, state_shardings = sharding.sharded_init(
        _init_state, mesh, sharding.DIT_RULES, jax.random.key(0)
    )
    batch = sharding.host_to_global(_batch(), mesh)
    batch_shardings = jax.tree.map(lambda a: a.sharding, batch)
    step = train_lib.jit_train_step(
        train_lib.make_train_step(_loss_fn, OPTIMIZER),
        state_shardings,
        batch_shardings,
        mesh,
        sharding.DIT_RULES,
    )
    history = []
    for _ in range(num_steps):
        state, metrics = step(state, batch, jax.random.key(1))
        history.append(jax.device_get(metrics))
    return state, history


@pytest.fixture(scope="module")
def single_device_run():
    return _train(sharding.make_mesh({}, devices=jax.devices()[:1]))


def test_train_step_metrics_and_rng_folding(single_device_run):
    state, history = single_device_run
    assert int(state.step) == 3
    losses = [m["loss"] for m in history]
    assert losses[2] < losses[0], losses
    assert all(np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 for m in history)
    # Same key every call, yet a different draw per step: the step is folded in.
    for step, m in enumerate(history):
        expected = jax.random.uniform(jax.random.fold_in(jax.random.key(1), step))
        np.testing.assert_allclose(m["noise"], expected)


@pytest.mark.parametrize("degrees", [(8, 1, 1, 1), (2, 2, 2, 1), (1, 4, 2, 1)])
def test_sharded_train_step_matches_single_device(degrees, single_device_run):
    mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, degrees, strict=True)))
    state, history = _train(mesh)
    ref_state, ref_history = single_device_run

    # Only float summation order differs between layouts (~1e-7 on the loss). Adam turns a
    # near-zero gradient into a full lr-sized step of either sign, so params may drift by a few
    # 1e-6 after 3 steps of lr 1e-2; a real layout bug moves them by O(lr) = 1e-2.
    for m, ref in zip(history, ref_history, strict=True):
        np.testing.assert_allclose(m["loss"], ref["loss"], rtol=2e-6)
        np.testing.assert_allclose(m["grad_norm"], ref["grad_norm"], rtol=2e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5),
        jax.device_get(state.params),
        jax.device_get(ref_state.params),
    )

    # The params (and the Adam moments with them) really are laid out as DIT_RULES say,
    # and stay so after the donated, jitted steps.
    _, fsdp, tensor, _ = degrees
    kernel = state.params["wi_gate"]["kernel"]
    mu_kernel = state.opt_state[0].mu["wi_gate"]["kernel"]
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert mu_kernel.sharding.spec == P("fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (D // fsdp, F // tensor)
    assert state.params["wo"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert state.step.sharding.is_fully_replicated


def test_logical_constraints_are_active_under_set_mesh():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2, sequence=1))
    variables = MODEL.init(jax.random.key(0), jnp.zeros((1, N, D)))
    # Replicated params and input: only the model's own constraints can shard the output.
    variables, x = jax.device_put(
        (nn.unbox(variables), jnp.asarray(_batch()["x"])), sharding.replicated(mesh)
    )
    apply = jax.jit(MODEL.apply)

    with sharding.mesh_context(mesh, sharding.DIT_RULES):
        out = apply(variables, x)
        hlo = apply.lower(variables, x).as_text()
    assert out.sharding.spec == P(("data", "fsdp"))
    assert out.addressable_shards[0].data.shape == (B // 4, N, D)
    # The hidden layer is pinned tensor-parallel (shardy's text form of the constraint).
    assert '<@mesh, [{"data", "fsdp"}, {"sequence"}, {"tensor"}]>' in hlo

    # Rules without a mesh set by jax.set_mesh: Flax drops the constraints silently.
    with nn.logical_axis_rules(sharding.DIT_RULES):
        out = jax.jit(MODEL.apply)(variables, x)
    assert out.sharding.is_fully_replicated


# ----------------------------------------------------------------------------------------------
# Input batches
# ----------------------------------------------------------------------------------------------


def test_host_to_global_round_trip():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2, sequence=1))
    rng = np.random.default_rng(0)
    batch = {
        "video": rng.integers(0, 256, size=(B, 2, 4, 4, 3), dtype=np.uint8),
        "t": rng.uniform(size=(B,)).astype(np.float32),
        "tokens": [rng.integers(0, 100, size=(B, 5), dtype=np.int32)],
    }
    arrays = sharding.host_to_global(batch, mesh)

    assert jax.tree.structure(arrays) == jax.tree.structure(batch)
    video = arrays["video"]
    assert video.sharding == sharding.batch_sharding(mesh, 5)
    assert video.sharding.spec == P(("data", "fsdp"), None, None, None, None)
    # 4-way over (data, fsdp), replicated over tensor: 8 shards of B/4 examples each.
    assert {s.data.shape for s in video.addressable_shards} == {(B // 4, 2, 4, 4, 3)}
    assert arrays["t"].sharding.spec == P(("data", "fsdp"))
    for a, b in zip(jax.tree.leaves(arrays), jax.tree.leaves(batch), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), b)
