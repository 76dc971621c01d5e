"""Spacetime patches, 3D RoPE and the diffusion transformer: shapes, equivalences, masks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax import config_lib, dit_lib, sharding
from sora_jax.models import dit, patching, rope

PATCH = (1, 2, 2)


def _randomize(params, scale=0.05):
    """Zero-initialised (adaLN-Zero) weights make every output 0; perturb them all."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)],
    )


def _inputs(latent_shape=(2, 3, 4, 4, 8), text_len=6, text_dim=24, seed=0):
    rngs = jax.random.split(jax.random.key(seed), 4)
    latent = jax.random.normal(rngs[0], latent_shape)
    grid = patching.grid_shape(latent_shape, PATCH)
    x = patching.patchify(latent, PATCH)
    b, n, _ = x.shape
    return dict(
        x=x,
        t=jax.random.uniform(rngs[1], (b, n)),
        coords=patching.grid_coords(grid, b),
        text=jax.random.normal(rngs[2], (b, text_len, text_dim)),
        text_mask=jnp.arange(text_len)[None] < jnp.asarray([[4], [text_len]])[:b],
        grid=grid,
    )


def _apply(model, params, inp, **kw):
    return model.apply(
        {"params": params},
        inp["x"],
        inp["t"],
        inp["coords"],
        inp["text"],
        inp["text_mask"],
        grid=inp["grid"],
        **kw,
    )


def _variables(model, inp, **kw):
    return model.init(
        jax.random.key(1),
        inp["x"],
        inp["t"],
        inp["coords"],
        inp["text"],
        inp["text_mask"],
        grid=inp["grid"],
        drop_text_B=jnp.zeros(inp["x"].shape[0], bool),
        **kw,
    )


def _init(model, inp, **kw):
    return _randomize(nn.unbox(_variables(model, inp, **kw)["params"]))


# ------------------------------------------------------------------------------------------------
# Patches and positions.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("patch", [(1, 2, 2), (1, 1, 1), (2, 2, 1)])
def test_patchify_roundtrip_and_token_order(patch):
    latent = jax.random.normal(jax.random.key(0), (2, 4, 6, 4, 3))
    tokens = patching.patchify(latent, patch)
    grid = patching.grid_shape(latent.shape, patch)
    assert tokens.shape == (2, int(np.prod(grid)), int(np.prod(patch)) * 3)
    np.testing.assert_array_equal(patching.unpatchify(tokens, grid, patch), latent)
    # Token 1 is the patch one step along w: its first feature is latent[0, 0, 0, pw, 0].
    np.testing.assert_array_equal(tokens[0, 1, 0], latent[0, 0, 0, patch[2], 0])
    coords = patching.grid_coords(grid, 2)
    np.testing.assert_array_equal(coords[0, 1], [0, 0, 1])
    np.testing.assert_array_equal(coords[0, -1], np.asarray(grid) - 1)


def test_patchify_rejects_indivisible_latents():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        patching.patchify(jnp.zeros((1, 5, 7, 8, 4)), (1, 2, 2))


def test_frame_mask_to_tokens():
    grid = (3, 2, 2)
    mask = jnp.asarray([[True, False, False], [False, False, True]])
    tokens = patching.frame_mask_to_tokens(mask, grid, (1, 2, 2))
    np.testing.assert_array_equal(tokens[0], [True] * 4 + [False] * 8)
    np.testing.assert_array_equal(tokens[1], [False] * 8 + [True] * 4)


def test_rope_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 32))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 32))

    def score(pq, pk):
        cq = rope.rope_angles(jnp.asarray([[pq]], jnp.float32), 32)
        ck = rope.rope_angles(jnp.asarray([[pk]], jnp.float32), 32)
        return float(jnp.sum(rope.apply_rope(q, *cq) * rope.apply_rope(k, *ck)))

    base = score((0, 0, 0), (1, 2, 3))
    np.testing.assert_allclose(score((5, 7, 2), (6, 9, 5)), base, rtol=1e-5, atol=1e-5)
    assert abs(score((0, 0, 0), (1, 2, 4)) - base) > 1e-3  # and it does see position
    assert sum(rope.axis_dims(64)) == 64 and all(d % 2 == 0 for d in rope.axis_dims(48))


# ------------------------------------------------------------------------------------------------
# The transformer.
# ------------------------------------------------------------------------------------------------
def test_make_model_passes_every_model_field_of_the_config():
    config = config_lib.load_config("configs/dit_tiny.py")
    config.model.update(
        rope_time_scale=2.5, pooled_text=True, prediction="data", absolute_position=True
    )
    assert set(config.model) == set(dit_lib._DIT_FIELDS) | {"variant", "dtype", "text"}
    model = dit_lib.make_model(config.model)
    for key in dit_lib._DIT_FIELDS:
        assert getattr(model, key) == config.model[key], key


def test_variants_decode_and_reject_typos():
    assert dit.decode_variant("S/1x2x2") == dict(
        width=384, depth=12, num_heads=6, patch_size=(1, 2, 2)
    )
    for bad in ("S", "Q/1x2x2", "S/1x2"):
        with pytest.raises(ValueError, match="bad DiT variant"):
            dit.decode_variant(bad)


def test_adaln_zero_starts_as_zero_velocity():
    inp = _inputs()
    model = dit.dit_from_variant("micro/1x2x2")
    params = nn.unbox(_variables(model, inp)["params"])
    assert float(jnp.abs(_apply(model, params, inp)).max()) == 0.0


def test_data_prediction_returns_the_velocity_its_clean_tokens_imply():
    inp = _inputs()
    velocity = dit.dit_from_variant("micro/1x2x2")
    data = dit.dit_from_variant("micro/1x2x2", prediction="data")
    params = _init(velocity, inp)  # the same weights: only the output's meaning differs
    x0 = _apply(velocity, params, inp)
    t = jnp.maximum(inp["t"], dit.DATA_PREDICTION_T_FLOOR)[..., None]
    np.testing.assert_allclose(_apply(data, params, inp), (inp["x"] - x0) / t, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="prediction must be"):
        _apply(dit.dit_from_variant("micro/1x2x2", prediction="noise"), params, inp)


@pytest.mark.parametrize(
    "fields",
    [
        dict(),
        dict(text_mode="joint"),
        dict(attention="factorized"),
        dict(activation="swiglu", remat_policy="dots"),
    ],
    ids=["cross", "joint", "factorized", "swiglu-remat"],
)
def test_modes_run_and_scanned_equals_unscanned(fields):
    inp = _inputs()
    scanned = dit.dit_from_variant("micro/1x2x2", **fields)
    params = _init(scanned, inp)
    out = _apply(scanned, params, inp)
    assert out.shape == inp["x"].shape and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.abs(out).max()) > 0

    unscanned = dit.dit_from_variant("micro/1x2x2", scan_layers=False, **fields)
    per_layer = {k: v for k, v in params.items() if k != "blocks"}
    for i in range(scanned.depth):
        per_layer[f"blocks_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["blocks"])
    np.testing.assert_allclose(_apply(unscanned, per_layer, inp), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "old, new, prediction",
    [((1, 4, 4), (1, 2, 2), "data"), ((2, 2, 2), (1, 2, 1), "velocity")],
)
def test_finer_patches_equal_the_old_model_on_the_upsampled_latent(old, new, prediction):
    """A warm start at a finer patch (`dit_lib.warm_start`) begins as the old model would run on
    the latent upsampled by old / new, its output average-pooled back."""
    b, t, h, w, c = 2, 2, 4, 4, 3
    latent = jax.random.normal(jax.random.key(3), (b, t, h, w, c))
    factors = tuple(o // n for o, n in zip(old, new, strict=True))
    up = latent
    for axis, f in zip((1, 2, 3), factors, strict=True):
        up = jnp.repeat(up, f, axis=axis)
    inp = _inputs()
    inp["x"] = patching.patchify(up, old)
    inp["grid"] = patching.grid_shape(up.shape, old)
    assert patching.grid_shape(latent.shape, new) == inp["grid"]  # the same token grid
    n = inp["x"].shape[1]
    inp["t"] = jax.random.uniform(jax.random.key(4), (b, n), minval=0.1)
    inp["coords"] = patching.grid_coords(inp["grid"], b)
    coarse = dit.dit_from_variant(f"micro/{'x'.join(map(str, old))}", prediction=prediction)
    params = _init(coarse, inp)
    v_up = patching.unpatchify(_apply(coarse, params, inp), inp["grid"], old)
    pooled = v_up.reshape(
        b, t, factors[0], h, factors[1], w, factors[2], c
    ).mean(axis=(2, 4, 6))  # fmt: skip

    fine = dit.dit_from_variant(f"micro/{'x'.join(map(str, new))}", prediction=prediction)
    resized = dit_lib._finer_patches({"dit": params}, old, new)["dit"]
    inp["x"] = patching.patchify(latent, new)
    v = patching.unpatchify(_apply(fine, resized, inp), inp["grid"], new)
    np.testing.assert_allclose(v, pooled, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(v).max()) > 0.1
    with pytest.raises(ValueError, match="does not divide"):
        dit_lib._finer_patches({"dit": params}, old, (1, 3, 1))


def test_each_token_has_its_own_timestep():
    inp = _inputs()
    model = dit.dit_from_variant("micro/1x2x2")
    params = _init(model, inp)
    base = _apply(model, params, inp)
    inp2 = dict(inp, t=inp["t"].at[0, 3].set(0.0))
    changed = jnp.abs(_apply(model, params, inp2) - base).max(axis=-1)
    assert float(changed[0, 3]) > 1e-4  # the token itself answers to its own t
    assert float(changed[1].max()) == 0.0  # other examples do not


@pytest.mark.parametrize("text_mode", ["cross", "joint"])
def test_rope_time_scale_equals_scaled_time_coordinates(text_mode):
    inp = _inputs()
    plain = dit.dit_from_variant("micro/1x2x2", text_mode=text_mode)
    scaled = dit.dit_from_variant("micro/1x2x2", text_mode=text_mode, rope_time_scale=3.0)
    params = _init(plain, inp)
    out = _apply(scaled, params, inp)
    stretched = dict(inp, coords=inp["coords"] * jnp.array([3.0, 1.0, 1.0]))
    np.testing.assert_allclose(out, _apply(plain, params, stretched), atol=1e-5)
    assert float(jnp.abs(out - _apply(plain, params, inp)).max()) > 1e-3


@pytest.mark.parametrize("pooled_text", [False, True])
def test_text_padding_and_null_text(pooled_text):
    inp = _inputs()
    model = dit.dit_from_variant("micro/1x2x2", pooled_text=pooled_text)
    params = _init(model, inp)
    base = _apply(model, params, inp)
    # Example 0 has 4 real text tokens: its padded positions are invisible.
    noisy_pad = dict(inp, text=inp["text"].at[0, 4:].set(100.0))
    np.testing.assert_allclose(_apply(model, params, noisy_pad), base, atol=1e-6)
    # Dropped text: the output no longer depends on the text at all.
    drop = jnp.asarray([True, True])
    other = dict(inp, text=-inp["text"])
    np.testing.assert_allclose(
        _apply(model, params, inp, drop_text_B=drop),
        _apply(model, params, other, drop_text_B=drop),
        atol=1e-6,
    )
    assert float(jnp.abs(_apply(model, params, inp, drop_text_B=drop) - base).max()) > 1e-4


@pytest.mark.parametrize(
    "field, layer", [("pooled_text", "text_pool"), ("absolute_position", "position_embed")]
)
def test_optional_inputs_enter_through_a_zero_initialised_projection(field, layer):
    """The pooled caption (into adaLN) and the tokens' places in their clips (into the token
    embeddings): at zero the plain model, trained they move the output."""
    inp = _inputs()
    plain = dit.dit_from_variant("micro/1x2x2")
    extended = dit.dit_from_variant("micro/1x2x2", **{field: True})
    assert not np.any(nn.unbox(_variables(extended, inp)["params"])[layer]["kernel"])
    params = _init(extended, inp)
    without = {k: v for k, v in params.items() if k != layer}
    assert set(without) == set(_init(plain, inp))
    zeroed = dict(params, **{layer: jax.tree.map(jnp.zeros_like, params[layer])})
    np.testing.assert_allclose(
        _apply(extended, zeroed, inp), _apply(plain, without, inp), atol=1e-6
    )
    assert float(jnp.abs(_apply(extended, params, inp) - _apply(plain, without, inp)).max()) > 1e-4


def test_pool_text_is_the_mean_over_real_tokens():
    inp = _inputs()
    mean = jnp.sum(inp["text"] * inp["text_mask"][..., None], 1) / inp["text_mask"].sum(1)[:, None]
    np.testing.assert_allclose(
        dit.pool_text(inp["text"], inp["text_mask"])[:, 0], mean, rtol=1e-5, atol=1e-6
    )


def test_clip_fractions_place_each_token_in_its_own_clip():
    coords = patching.grid_coords((3, 2, 5), 1)  # t, h, w
    fractions = dit.clip_fractions(coords)
    np.testing.assert_allclose(fractions, coords / jnp.array([2.0, 1.0, 4.0]))
    image = patching.grid_coords((1, 2, 3), 1)  # one frame: time stays at 0
    np.testing.assert_allclose(dit.clip_fractions(image)[..., 0], 0.0)
    # Packed: a clip's fractions are its own, wherever it sits and whatever its coordinates
    # start at; padding (segment 0) does not move them.
    shifted = image + jnp.array([4.0, 7.0, 1.0])
    packed = jnp.concatenate([coords, shifted, jnp.full((1, 2, 3), 50.0)], axis=1)
    segments = jnp.asarray([[1] * 30 + [2] * 6 + [0] * 2])
    out = dit.clip_fractions(packed, segments)
    np.testing.assert_allclose(out[:, :30], fractions)
    np.testing.assert_allclose(out[:, 30:36], dit.clip_fractions(image))
    features = dit.fraction_features(out, num_freqs=4)  # per axis: cos k = 1..4, then sin
    assert features.shape == (1, 38, 24)
    np.testing.assert_allclose(fractions[0, 7], [0.0, 1.0, 0.5])  # t = 0, h = 1, w = 2
    np.testing.assert_allclose(features[0, 7, ::8], [1.0, -1.0, 0.0], atol=1e-6)  # cos(pi f)


@pytest.mark.parametrize("absolute_position", [False, True])
def test_packed_clips_equal_separate_clips(absolute_position):
    """Two clips of different shapes in one sequence (segment ids) == each on its own."""
    model = dit.dit_from_variant("micro/1x2x2", absolute_position=absolute_position)
    a = _inputs((1, 3, 4, 4, 8), seed=1)
    b = _inputs((1, 2, 4, 2, 8), seed=2)
    # b's coordinates start past 0: RoPE is relative and b's places are its own either way.
    b = dict(b, text=a["text"], text_mask=a["text_mask"][:1], coords=b["coords"] + 3.0)
    a = dict(a, text_mask=a["text_mask"][:1])
    params = _init(model, a)
    out_a = model.apply({"params": params}, a["x"], a["t"], a["coords"], a["text"], a["text_mask"])
    out_b = model.apply({"params": params}, b["x"], b["t"], b["coords"], b["text"], b["text_mask"])
    na, nb = a["x"].shape[1], b["x"].shape[1]
    pad = 3  # padding tokens (segment 0) at the end of the pack
    cat = (
        lambda u, v, fill: jnp.concatenate(  # noqa: E731
            [u, v, jnp.full((1, pad, *u.shape[2:]), fill, u.dtype)], axis=1
        )
    )
    segments = jnp.asarray([[1] * na + [2] * nb + [0] * pad])
    packed = model.apply(
        {"params": params},
        cat(a["x"], b["x"], 9.0),
        cat(a["t"], b["t"], 0.5),
        cat(a["coords"], b["coords"], 0.0),
        a["text"],
        a["text_mask"],
        segments_BxN=segments,
    )
    np.testing.assert_allclose(packed[:, :na], out_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(packed[:, na : na + nb], out_b, rtol=1e-4, atol=1e-5)


def test_factorized_attention_refuses_packed_input():
    inp = _inputs()
    model = dit.dit_from_variant("micro/1x2x2", attention="factorized")
    with pytest.raises(ValueError, match="factorized attention needs"):
        _init(model, dict(inp, grid=None))


def test_weights_carry_logical_axes():
    inp = _inputs()
    model = dit.dit_from_variant("micro/1x2x2")
    abstract = jax.eval_shape(lambda: _variables(model, inp))
    specs = nn.get_partition_spec(abstract)["params"]
    mlp = specs["blocks"]["mlp"]
    assert tuple(mlp["wi"]["kernel"]) == ("layers", "embed", "mlp")
    assert tuple(specs["blocks"]["cross_attention"]["key"]["kernel"]) == (
        "layers",
        "text_embed",
        "heads",
        "kv",
    )
    mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
    shardings = sharding.logical_shardings(abstract, mesh, sharding.DIT_RULES)["params"]
    wi = shardings["blocks"]["mlp"]["wi"]["kernel"].spec
    assert tuple(wi) == (None, "fsdp", "tensor")


@pytest.mark.parametrize(
    "variant,mesh",
    [
        ("tiny/1x2x2", {"data": 8}),
        ("S/1x2x2", {"fsdp": 4, "tensor": 2}),
        ("14B/1x2x2", {"fsdp": 8}),
    ],
)
def test_presets_lower_a_sharded_train_step(variant, mesh):
    """Configs cannot rot: the DiT config's train step lowers on a mesh for small and
    multi-billion presets alike (abstract inputs: nothing is allocated)."""
    config = config_lib.load_config(f"configs/dit_tiny.py:variant={variant},batch=8")
    lowered = dit_lib.lower_train_step(config, sharding.make_mesh(mesh), (8, 5, 8, 8, 16))
    text = lowered.as_text()
    assert "sharding" in text and len(text) > 10_000


@pytest.mark.parametrize(
    "text_mode, pooled_text", [("cross", False), ("joint", False), ("cross", True)]
)
def test_packed_clips_with_their_own_captions(text_mode, pooled_text):
    """Clips packed with different captions (text segments), one dropped for guidance, equal
    each clip run on its own with its own caption (and its own pooled caption in adaLN)."""
    model = dit.dit_from_variant("micro/1x2x2", text_mode=text_mode, pooled_text=pooled_text)
    a = _inputs((1, 3, 4, 4, 8), seed=1)
    b = _inputs((1, 2, 4, 2, 8), seed=2)
    a = dict(a, text_mask=a["text_mask"][:1], text=a["text"][:1])
    b = dict(b, text_mask=jnp.ones_like(a["text_mask"]))  # a's caption has 4 tokens, b's 6
    params = _init(model, a)

    def alone(x, drop):
        return model.apply(
            {"params": params}, x["x"], x["t"], x["coords"], x["text"], x["text_mask"],
            drop_text_B=jnp.asarray([drop]),
        )  # fmt: skip

    length = a["text"].shape[1]
    packed = model.apply(
        {"params": params},
        jnp.concatenate([a["x"], b["x"]], 1),
        jnp.concatenate([a["t"], b["t"]], 1),
        jnp.concatenate([a["coords"], b["coords"]], 1),
        jnp.concatenate([a["text"], b["text"]], 1),
        jnp.concatenate([a["text_mask"], b["text_mask"]], 1),
        segments_BxN=jnp.asarray([[1] * a["x"].shape[1] + [2] * b["x"].shape[1]]),
        text_segments_BxL=jnp.asarray([[1] * length + [2] * length]),
        drop_text_B=jnp.asarray([[False, True]]),
    )
    na = a["x"].shape[1]
    np.testing.assert_allclose(packed[:, :na], alone(a, False), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(packed[:, na:], alone(b, True), rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(alone(b, True) - alone(b, False)).max()) > 1e-4
