"""Causal video VAE: shapes of every preset, causality, chunked == one pass, tiling, overfit."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sora_jax import sharding
from sora_jax.models import vae as vae_lib

MICRO = "micro/t4s8c16"


@pytest.fixture(scope="module")
def micro():
    model = vae_lib.vae_from_variant(MICRO)
    video = jax.random.uniform(jax.random.key(0), (2, 17, 32, 48, 3), minval=-1, maxval=1)
    params = jax.jit(model.init)(jax.random.key(1), video[:1])["params"]
    return model, vae_lib.nn.unbox(params), video


@pytest.mark.parametrize(
    "width,temporal,spatial",
    list(itertools.product(["micro", "tiny", "small", "base"], [1, 2, 4], [4, 8, 16])),
)
def test_every_preset_has_the_right_shapes(width, temporal, spatial):
    model = vae_lib.vae_from_variant(f"{width}/t{temporal}s{spatial}c16")
    video = jax.ShapeDtypeStruct((1, 1 + 2 * temporal, 32, 48, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), video)
    recon, mean, logvar = jax.eval_shape(
        lambda v, x: model.apply(v, x), {"params": variables["params"]}, video
    )
    assert mean.shape == logvar.shape == model.latent_shape(video.shape)
    assert mean.shape == (1, 3, 32 // spatial, 48 // spatial, 16)
    assert recon.shape == video.shape


@pytest.mark.parametrize("variant", ["huge/t4s8c16", "tiny/t3s8c16", "tiny/t4s32c16", "tiny"])
def test_bad_variants(variant):
    with pytest.raises(ValueError):
        vae_lib.decode_variant(variant)


@pytest.mark.parametrize(
    "shape", [(17, 32, 48, 3), (1, 16, 32, 48, 3), (1, 17, 30, 48, 3), (1, 17, 32, 48, 1)]
)
def test_bad_input_shapes_are_refused(micro, shape):
    model, _, _ = micro
    with pytest.raises(ValueError):
        model.check_video_shape(shape)


def test_causality(micro):
    model, params, video = micro
    encode = jax.jit(lambda v: model.apply({"params": params}, v, method=model.encode)[0])
    base = encode(video)
    for k in (0, 4, 5, 9, 16):
        changed = encode(video.at[:, k].set(0.3))
        first_affected = 0 if k == 0 else 1 + (k - 1) // 4
        diff = np.abs(np.asarray(changed - base)).max(axis=(0, 2, 3, 4))
        assert np.all(diff[:first_affected] == 0), (k, diff)
        assert diff[first_affected] > 0


@pytest.mark.parametrize("frames,chunk", [(1, 1), (9, 1), (33, 3)])
def test_chunked_equals_one_pass(micro, frames, chunk):
    model, params, _ = micro
    video = jax.random.uniform(jax.random.key(frames), (1, frames, 32, 32, 3), minval=-1, maxval=1)
    mean = jax.jit(lambda v: model.apply({"params": params}, v, method=model.encode)[0])(video)
    recon = jax.jit(lambda z: model.apply({"params": params}, z, method=model.decode))(mean)
    codec = vae_lib.ChunkedCodec(model, latent_frames_per_chunk=chunk)
    np.testing.assert_allclose(codec.encode(params, video), mean, atol=2e-5)
    np.testing.assert_allclose(codec.decode(params, mean), recon, atol=2e-5)


def test_a_pixel_head_keeps_decoding_causal_and_chunk_exact(micro):
    _, _, video = micro
    model = vae_lib.vae_from_variant(MICRO, pixel_head=4)
    params = vae_lib.nn.unbox(jax.jit(model.init)(jax.random.key(1), video[:1])["params"])
    head = params["decoder"]["pixel_head"]
    last = sorted(head)[-1]
    assert not np.any(head[last]["kernel"])  # starts as a no-op (warm starts rely on it)
    head[last]["kernel"] = 0.1 * jax.random.normal(jax.random.key(2), head[last]["kernel"].shape)
    mean = jax.jit(lambda v: model.apply({"params": params}, v, method=model.encode)[0])(video)
    decode = jax.jit(lambda z: model.apply({"params": params}, z, method=model.decode))
    recon = decode(mean)
    codec = vae_lib.ChunkedCodec(model, latent_frames_per_chunk=2)
    np.testing.assert_allclose(codec.decode(params, mean), recon, atol=2e-5)
    changed = decode(mean.at[:, 2].add(1.0))  # latent frame 2 holds frames 5-8
    diff = np.abs(np.asarray(changed - recon)).max(axis=(0, 2, 3, 4))
    assert np.all(diff[:5] == 0) and diff[5] > 0, diff


def test_tile_blending_reassembles_exactly():
    x = jax.random.normal(jax.random.key(0), (1, 3, 40, 56, 2))
    upsample = lambda t: jnp.repeat(jnp.repeat(t, 2, axis=2), 2, axis=3)  # noqa: E731
    out = vae_lib._tiled(upsample, x, tile=16, overlap=6, scale=2)
    np.testing.assert_allclose(out, upsample(x), atol=1e-5)


def test_tiled_codec(micro):
    model, params, video = micro
    mean = jax.jit(lambda v: model.apply({"params": params}, v, method=model.encode)[0])(video)
    codec = vae_lib.ChunkedCodec(model, latent_frames_per_chunk=2)
    whole = vae_lib.TiledCodec(codec, tile_latent=8, overlap_latent=2)  # one tile covers 6x4
    np.testing.assert_allclose(whole.encode(params, video), mean, atol=2e-5)
    tiled = vae_lib.TiledCodec(codec, tile_latent=4, overlap_latent=2)
    assert tiled.encode(params, video).shape == mean.shape
    assert tiled.decode(params, mean).shape == video.shape


def test_overfit_drives_reconstruction_error_down(micro):
    from sora_jax.data.shapes_world.world import generate_clip

    model, params, _ = micro
    clips = np.stack([generate_clip(i, frames=9, height=32, width=32)["video"] for i in range(2)])
    video = jnp.asarray(clips, jnp.float32) / 127.5 - 1
    optimizer = optax.adam(2e-3)

    def loss(p):
        recon, _, _ = model.apply({"params": p}, video)
        return jnp.mean(jnp.abs(recon - video))

    @jax.jit
    def step(p, o):
        value, grads = jax.value_and_grad(loss)(p)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    opt_state, losses = optimizer.init(params), []
    for _ in range(60):
        params, opt_state, value = step(params, opt_state)
        losses.append(float(value))
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_matmul_and_xla_convolutions_agree():
    """The two conv implementations share parameters and compute the same function."""
    video = jax.random.uniform(jax.random.key(0), (1, 5, 32, 32, 3), minval=-1, maxval=1)
    models = {
        impl: vae_lib.vae_from_variant("micro/t4s8c16", conv_impl=impl)
        for impl in ("matmul", "xla")
    }
    params = models["matmul"].init(jax.random.key(1), video)["params"]
    outs = {
        impl: m.apply({"params": params}, video, method=m.encode)[0] for impl, m in models.items()
    }
    np.testing.assert_allclose(outs["matmul"], outs["xla"], rtol=1e-4, atol=1e-4)
    for bad in ("cudnn",):
        with pytest.raises(ValueError, match="conv_impl"):
            vae_lib.vae_from_variant("micro/t4s8c16", conv_impl=bad).init(jax.random.key(1), video)


def test_norm_free_variant_starts_near_identity_and_stays_causal_and_chunk_exact():
    video = jax.random.uniform(jax.random.key(0), (1, 17, 32, 32, 3), minval=-1, maxval=1)
    model = vae_lib.vae_from_variant(MICRO, norm="none", logvar_init=-6.0)
    params = vae_lib.nn.unbox(jax.jit(model.init)(jax.random.key(1), video)["params"])
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    # SkipInit: each residual branch ends in a zero conv, so blocks start as the identity.
    second_convs = [v for p, v in flat if "ResBlock" in str(p) and "CausalConv3d_1" in str(p)]
    assert second_convs and all(not np.any(v) for v in second_convs)
    _, logvar = model.apply({"params": params}, video, method=model.encode)
    assert abs(float(jnp.mean(logvar)) + 6.0) < 1.0

    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    noisy = [v + 0.05 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys, strict=True)]
    params = jax.tree_util.tree_unflatten(treedef, noisy)
    mean = model.apply({"params": params}, video, method=model.encode)[0]
    changed = model.apply({"params": params}, video.at[:, 9].set(0.3), method=model.encode)[0]
    np.testing.assert_array_equal(changed[:, :3], mean[:, :3])  # frame 9 -> latent frame 3+
    codec = vae_lib.ChunkedCodec(model, latent_frames_per_chunk=2)
    np.testing.assert_allclose(codec.encode(params, video), mean, atol=2e-5)
    with pytest.raises(ValueError, match="norm"):
        vae_lib.vae_from_variant(MICRO, norm="batch").init(jax.random.key(1), video)


def test_frames_sharded_over_sequence_match_one_device(micro):
    """VAE_RULES shard a video's frames over `sequence` (and conv channels over fsdp/tensor):
    the causal convs then exchange frame halos across devices, and encode + decode equal the
    one-device result."""
    model, params, video = micro
    mesh = sharding.make_mesh(dict(fsdp=2, tensor=1, sequence=4))

    def roundtrip(p, v):
        mean = model.apply({"params": p}, v, method=model.encode)[0]
        return mean, model.apply({"params": p}, mean, method=model.decode)

    with sharding.mesh_context(mesh, sharding.VAE_RULES):
        boxed = jax.eval_shape(model.init, jax.random.key(1), video[:1])["params"]
        param_shardings = sharding.logical_shardings(boxed, mesh, sharding.VAE_RULES)
        # 17 frames do not split 4 ways as an input; the model's own constraints shard them.
        sharded = jax.jit(roundtrip, in_shardings=(param_shardings, sharding.replicated(mesh)))
        mean, recon = sharded(params, video)
        hlo = sharded.lower(params, video).as_text()
    # Every block's activations [B, T, H, W, C]: batch over (data, fsdp), frames over sequence.
    assert hlo.count("sharding_constraint") > 4
    assert '[{"data", "fsdp"}, {"sequence"}, {}, {}, {}]' in hlo
    want_mean, want_recon = jax.jit(roundtrip)(params, video)
    np.testing.assert_allclose(mean, want_mean, atol=2e-5)
    np.testing.assert_allclose(recon, want_recon, atol=2e-5)
