"""Rectified-flow training math: path endpoints, target, masked loss, timestep laws, EMA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.diffusion import rectified_flow as rf
from sora_jax.models import patching


def _tokens(seed, shape=(2, 5, 3)):
    x0_rng, eps_rng = jax.random.split(jax.random.key(seed))
    return jax.random.normal(x0_rng, shape), jax.random.normal(eps_rng, shape)


def test_noisy_input_endpoints_and_conditioning():
    x0, eps = _tokens(0)
    no_cond = jnp.zeros((2, 5), bool)
    np.testing.assert_array_equal(rf.noisy_input(x0, eps, jnp.zeros((2, 5)), no_cond), x0)
    np.testing.assert_array_equal(rf.noisy_input(x0, eps, jnp.ones((2, 5)), no_cond), eps)
    t_BxN = jnp.full((2, 5), 0.25)
    np.testing.assert_allclose(rf.noisy_input(x0, eps, t_BxN, no_cond), 0.75 * x0 + 0.25 * eps)
    # Conditioning tokens are clean whatever t they are handed.
    cond = jnp.array([[True, False, False, False, True], [False] * 5])
    x_t = rf.noisy_input(x0, eps, jnp.ones((2, 5)), cond)
    np.testing.assert_array_equal(x_t[cond], x0[cond])
    np.testing.assert_array_equal(x_t[~cond], eps[~cond])


def test_velocity_target_is_the_path_derivative():
    x0, eps = _tokens(1)
    t, dt = jnp.full((2, 5), 0.4), 1e-2
    no_cond = jnp.zeros((2, 5), bool)
    slope = (rf.noisy_input(x0, eps, t + dt, no_cond) - rf.noisy_input(x0, eps, t, no_cond)) / dt
    np.testing.assert_allclose(rf.velocity_target(x0, eps), eps - x0)
    np.testing.assert_allclose(slope, eps - x0, rtol=1e-3, atol=1e-3)


def test_loss_counts_only_valid_generated_tokens():
    x0, eps = _tokens(2)
    v_pred = jax.random.normal(jax.random.key(3), x0.shape)
    cond = jnp.array([[True, False, False, False, False], [False] * 5])
    valid = jnp.array([[True] * 5, [True, True, True, False, False]])
    loss = rf.flow_loss(v_pred, x0, eps, cond, valid)
    keep = np.asarray(valid & ~cond)
    err = (np.asarray(v_pred) - np.asarray(eps - x0)) ** 2
    np.testing.assert_allclose(loss, err[keep].mean(), rtol=1e-6)
    # Anything predicted on excluded tokens, even inf/NaN, leaves the loss unchanged.
    junk = jnp.where(~keep[..., None], jnp.nan, v_pred).at[1, 4, 0].set(jnp.inf)
    junk_loss, junk_grad = jax.value_and_grad(rf.flow_loss)(junk, x0, eps, cond, valid)
    np.testing.assert_allclose(junk_loss, loss, rtol=1e-6)
    np.testing.assert_array_equal(junk_grad[~keep], 0.0)
    assert np.all(np.isfinite(junk_grad))
    perfect = jnp.where(keep[..., None], eps - x0, v_pred)
    assert rf.flow_loss(perfect, x0, eps, cond, valid) == 0.0


def test_loss_without_loss_tokens_is_zero_with_finite_gradient():
    x0, eps = _tokens(4)
    v_pred = jnp.ones_like(x0)
    none_valid = jnp.zeros((2, 5), bool)
    all_cond = jnp.ones((2, 5), bool)
    assert rf.flow_loss(v_pred, x0, eps, all_cond, ~none_valid) == 0.0
    loss, grad = jax.value_and_grad(rf.flow_loss)(v_pred, x0, eps, ~all_cond, none_valid)
    assert loss == 0.0 and np.all(grad == 0.0)


def test_logit_normal_timesteps():
    t = np.asarray(rf.sample_t(jax.random.key(5), (20000,)))
    assert t.dtype == np.float32 and np.all((t > 0) & (t < 1))
    assert abs(np.median(t) - 0.5) < 0.02
    # Logit-normal: the logit of t is N(mean, std^2).
    logit = np.log(t / (1 - t))
    assert abs(logit.mean()) < 0.05 and abs(logit.std() - 1.0) < 0.05
    shifted = np.asarray(rf.sample_t(jax.random.key(5), (20000,), mean=1.0, std=0.5))
    assert abs(np.median(shifted) - jax.nn.sigmoid(1.0)) < 0.02


def test_shift_is_monotone_and_fixes_the_endpoints():
    t = jnp.linspace(0.0, 1.0, 101)
    for shift in (0.5, 1.0, 3.0):
        shifted = np.asarray(rf.shift_t(t, shift))
        assert shifted[0] == 0.0 and shifted[-1] == 1.0
        assert np.all(np.diff(shifted) > 0)
    np.testing.assert_allclose(rf.shift_t(t, 1.0), t, atol=1e-7)
    # Larger shift means more noise at the same t.
    inner = t[1:-1]
    assert np.all(rf.shift_t(inner, 3.0) > rf.shift_t(inner, 2.0))
    assert np.all(rf.shift_t(inner, 2.0) > inner)
    # The shift divides the signal-to-noise ratio ((1 - t) / t)^2 by shift^2.
    snr = lambda t: ((1 - t) / t) ** 2
    np.testing.assert_allclose(snr(rf.shift_t(inner, 3.0)), snr(inner) / 9.0, rtol=1e-4)


def test_unshift_inverts_shift():
    t = jnp.linspace(0.0, 1.0, 11)
    for shift in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(rf.unshift_t(rf.shift_t(t, shift), shift), t, atol=1e-6)


def test_shift_for_tokens_grows_and_is_clipped():
    counts = [1, 100, 256, 512, 1024, 2176, 4096, 8192, 10**6]
    shifts = [rf.shift_for_tokens(n) for n in counts]
    assert all(isinstance(s, float) for s in shifts)
    assert shifts[:3] == [1.0, 1.0, 1.0] and shifts[-3:] == [3.0, 3.0, 3.0]
    assert shifts[5] == 2.0  # halfway between 256 and 4096 tokens
    assert all(a < b for a, b in zip(shifts[2:7], shifts[3:7], strict=False))
    assert rf.shift_for_tokens(50, base_tokens=10, max_tokens=90, max_shift=5.0) == 3.0


def test_training_inputs_share_one_t_per_example():
    x0, _ = _tokens(6, (4, 6, 3))
    cond = jnp.zeros((4, 6), bool).at[0, :2].set(True).at[3, 5].set(True)
    x_t, t_BxN, eps = rf.training_inputs(jax.random.key(7), x0, cond, shift=3.0)
    assert x_t.shape == eps.shape == x0.shape and t_BxN.shape == (4, 6)
    assert t_BxN.dtype == jnp.float32
    np.testing.assert_array_equal(t_BxN[cond], 0.0)
    for b in range(4):
        row = np.asarray(t_BxN[b])[~np.asarray(cond[b])]
        assert np.all(row == row[0]) and 0 < row[0] < 1
    np.testing.assert_array_equal(x_t, rf.noisy_input(x0, eps, t_BxN, cond))
    np.testing.assert_array_equal(x_t[cond], x0[cond])
    # The shift moves the training distribution towards noise.
    x0_big = jnp.zeros((4096, 1, 1))
    no_cond = jnp.zeros((4096, 1), bool)
    _, t_plain, _ = rf.training_inputs(jax.random.key(8), x0_big, no_cond, shift=1.0)
    _, t_shifted, _ = rf.training_inputs(jax.random.key(8), x0_big, no_cond, shift=3.0)
    assert np.median(t_shifted) > np.median(t_plain) + 0.2


def test_drop_text_rate():
    drop = np.asarray(rf.drop_text(jax.random.key(9), 10000, 0.1))
    assert drop.shape == (10000,) and drop.dtype == bool
    assert abs(drop.mean() - 0.1) < 0.015
    assert not rf.drop_text(jax.random.key(9), 100, 0.0).any()


def test_ema_update():
    ema = {"w": jnp.ones((2, 2)), "b": {"c": jnp.full((3,), 2.0, jnp.bfloat16)}}
    params = {"w": jnp.zeros((2, 2)), "b": {"c": jnp.zeros((3,), jnp.bfloat16)}}
    new = rf.ema_update(ema, params, 0.9)
    assert jax.tree.structure(new) == jax.tree.structure(ema)
    np.testing.assert_allclose(new["w"], 0.9)
    assert new["b"]["c"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(new["b"]["c"], np.float32), 1.8, rtol=1e-2)
    # Repeated updates towards fixed params decay geometrically: ema_k = decay^k.
    for _ in range(9):
        new = rf.ema_update(new, params, 0.9)
    np.testing.assert_allclose(new["w"], 0.9**10, rtol=1e-5)
    np.testing.assert_array_equal(rf.ema_update(ema, params, 0.0)["w"], params["w"])


def _correlations(noise_BxTxPxD):
    """Pearson correlations over rows and features: (same place, frames 0 and 2), (frame 0,
    places 0 and 1), each token's variance."""
    x = np.asarray(noise_BxTxPxD)

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    return corr(x[:, 0, 0], x[:, 2, 0]), corr(x[:, 0, 0], x[:, 0, 1]), x.var(axis=(0, 3))


def test_frame_correlated_noise_shares_a_place_across_frames_only():
    grid, b, d = (3, 2, 2), 512, 16  # 3 frames of 2x2 tokens
    coords = patching.grid_coords(grid, b)
    noise = rf.frame_correlated_noise(jax.random.key(0), (b, 12, d), coords, 0.6)
    across_frames, across_places, variance = _correlations(noise.reshape(b, 3, 4, d))
    assert abs(across_frames - 0.6) < 0.05 and abs(across_places) < 0.05
    np.testing.assert_allclose(variance, 1.0, atol=0.1)  # each token stays N(0, I)
    by_place = np.asarray(noise.reshape(b, 3, 4, d)[:, :, 0])
    rows = np.corrcoef(by_place[: b // 2].ravel(), by_place[b // 2 :].ravel())[0, 1]
    assert abs(rows) < 0.05  # one key for the batch: its rows share nothing
    # Independent noise for correlation 0: the old draws, one key or one key a row.
    key, keys = jax.random.key(1), jax.random.split(jax.random.key(2), b)
    np.testing.assert_array_equal(
        rf.prior_noise(key, (b, 12, d), coords), jax.random.normal(key, (b, 12, d))
    )
    by_row = rf.prior_noise(keys, (b, 12, d), coords)
    np.testing.assert_array_equal(by_row[3], jax.random.normal(keys[3], (12, d)))
    # With a key a row, a row's noise is its key's alone (a video does not change with its batch).
    correlated = rf.prior_noise(keys, (b, 12, d), coords, 0.6)
    alone = rf.prior_noise(keys[3:4], (1, 12, d), coords[:1], 0.6)
    np.testing.assert_array_equal(correlated[3], alone[0])
    # Two clips packed in one row (segments 1 and 2, the same places) share nothing.
    two = jnp.concatenate([coords, coords], axis=1)
    segments = jnp.repeat(jnp.array([1, 2], jnp.int32), 12)[None].repeat(b, 0)
    packed = rf.prior_noise(key, (b, 24, d), two, 0.6, segments)
    assert abs(_correlations(packed.reshape(b, 6, 4, d)[:, 2:5])[0]) < 0.05  # frame 2 vs 4
    assert abs(_correlations(packed.reshape(b, 6, 4, d))[0] - 0.6) < 0.05  # frames 0 and 2


def test_training_inputs_draw_the_frame_correlated_prior():
    b, d = 1024, 8
    coords = patching.grid_coords((3, 1, 2), b)
    x0, cond = jnp.zeros((b, 6, d)), jnp.zeros((b, 6), bool)
    _, _, eps = rf.training_inputs(
        jax.random.key(3), x0, cond, shift=1.0, coords_BxNx3=coords, frame_correlation=0.5
    )
    across_frames, across_places, _ = _correlations(eps.reshape(b, 3, 2, d))
    assert abs(across_frames - 0.5) < 0.05 and abs(across_places) < 0.05
    _, _, independent = rf.training_inputs(jax.random.key(3), x0, cond, shift=1.0)
    assert abs(_correlations(independent.reshape(b, 3, 2, d))[0]) < 0.05
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"in \[0, 1\)"):
            rf.check_frame_correlation(bad)
    with pytest.raises(ValueError, match="needs the tokens' coordinates"):
        rf.prior_noise(jax.random.key(0), (1, 6, d), None, 0.5)
