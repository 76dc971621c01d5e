"""Samplers against a problem with a known answer: Gaussian data, whose exact velocity is linear.

If x0 ~ N(mu, s^2) per dimension and x_t = (1 - t) x0 + t eps, then x_t ~ N(m_t, V_t) with
m_t = (1 - t) mu and V_t = (1 - t)^2 s^2 + t^2, and (x0, eps, x_t) are jointly Gaussian with
Cov(x0, x_t) = (1 - t) s^2 and Cov(eps, x_t) = t. So
    E[x0 | x_t = x]  = mu + (1 - t) s^2 / V_t (x - m_t),
    E[eps | x_t = x] = t / V_t (x - m_t),
and the marginal velocity is
    v(x, t) = E[eps - x0 | x_t = x] = (t - (1 - t) s^2) / V_t (x - m_t) - mu.
Its ODE maps quantiles to quantiles: x_t = m_t + sqrt(V_t) x_1 (check: dx/dt = -mu +
V_t' / (2 V_t) (x - m_t) with V_t' / 2 = t - (1 - t) s^2), so from noise x_1 the exact endpoint
is x_0 = mu + s x_1.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.diffusion import samplers

METHODS = ["euler", "heun", "dpmpp_2m"]


def gaussian_velocity(mu_D, s_D):
    def velocity_fn(x_BxNxD, t_BxN):
        t = t_BxN[..., None]
        var = (1 - t) ** 2 * s_D**2 + t**2
        return (t - (1 - t) * s_D**2) / var * (x_BxNxD - (1 - t) * mu_D) - mu_D

    return velocity_fn


# A tight dimension (s = 0.1) makes the velocity change fast near t = 0, where solvers differ.
MU = jnp.array([2.0, -1.0, 0.5, 0.0])
S = jnp.array([0.5, 0.1, 1.5, 1.0])


@pytest.mark.parametrize("method", METHODS)
def test_samplers_turn_noise_into_the_data_distribution(method):
    mu, s = jnp.array([2.0, -1.0, 0.5]), jnp.array([0.5, 0.3, 1.5])
    noise = jax.random.normal(jax.random.key(1), (4, 1024, 3))  # 4096 samples per dimension
    x = samplers.sample(gaussian_velocity(mu, s), noise, num_steps=64, method=method)
    x = np.asarray(x).reshape(-1, 3)
    # Sampling error of 4096 draws is ~0.016 s (mean) and ~0.011 s (std); the rest is the solver.
    np.testing.assert_allclose((x.mean(0) - mu) / s, 0.0, atol=0.06)
    np.testing.assert_allclose(x.std(0) / s, 1.0, atol=0.06)


def _endpoint_error(method, num_steps):
    noise = jax.random.normal(jax.random.key(0), (8, 512, 4))
    x = samplers.sample(gaussian_velocity(MU, S), noise, num_steps=num_steps, method=method)
    return float(jnp.sqrt(jnp.mean((x - (MU + S * noise)) ** 2)))


def test_second_order_solvers_beat_euler_at_few_steps():
    errors = {m: _endpoint_error(m, 8) for m in METHODS}
    message = f"RMS error vs the exact ODE solution at 8 steps: {errors}"
    assert errors["heun"] < errors["euler"] / 3, message
    assert errors["dpmpp_2m"] < errors["euler"] / 3, message


def test_convergence_orders():
    # Halving the step divides the error by ~2 for a first-order solver and ~4 for second order.
    ratios = {m: _endpoint_error(m, 16) / _endpoint_error(m, 32) for m in METHODS}
    message = f"error(16 steps) / error(32 steps): {ratios}"
    assert 1.7 < ratios["euler"] < 2.3, message
    assert ratios["heun"] > 3.3, message
    assert ratios["dpmpp_2m"] > 3.3, message


@pytest.mark.parametrize("method", METHODS)
def test_conditioning_tokens_are_held_and_seen_at_t0(method):
    noise = jax.random.normal(jax.random.key(2), (2, 6, 4))
    x0_cond = jax.random.normal(jax.random.key(3), (2, 6, 4))
    cond_BxN = jnp.array([[True, False, False, False, False, True], [False] * 3 + [True] * 3])
    velocity_fn = gaussian_velocity(MU, S)
    seen = []

    def recording_velocity(x_BxNxD, t_BxN):
        seen.append((np.asarray(x_BxNxD), np.asarray(t_BxN)))
        return velocity_fn(x_BxNxD, t_BxN)

    # Eager loops (no tracing) so the velocity function sees concrete values.
    with jax.disable_jit():
        x = samplers.sample(
            recording_velocity, noise, num_steps=4, method=method, x0_cond=x0_cond,
            cond_BxN=cond_BxN,
        )  # fmt: skip
    cond = np.asarray(cond_BxN)
    np.testing.assert_array_equal(np.asarray(x)[cond], np.asarray(x0_cond)[cond])
    assert len(seen) == {"euler": 4, "heun": 7, "dpmpp_2m": 4}[method]
    for x_seen, t_seen in seen:
        np.testing.assert_array_equal(x_seen[cond], np.asarray(x0_cond)[cond])
        assert np.all(t_seen[cond] == 0)
        assert np.all(t_seen[~cond] > 0) and len(np.unique(t_seen[~cond])) == 1
    # The generated tokens start at t = 1 and follow the schedule.
    ts = np.asarray(samplers.timesteps(4))
    assert [t[~cond][0] for _, t in seen][:: 2 if method == "heun" else 1] == list(ts[:-1])


def test_holding_tokens_leaves_the_other_tokens_alone():
    noise = jax.random.normal(jax.random.key(4), (1, 4, 4))
    x0_cond = jnp.zeros_like(noise)
    cond_BxN = jnp.array([[False, False, False, True]])
    plain = samplers.sample(gaussian_velocity(MU, S), noise, num_steps=4, method="heun")
    held = samplers.sample(
        gaussian_velocity(MU, S), noise, num_steps=4, method="heun", x0_cond=x0_cond,
        cond_BxN=cond_BxN,
    )  # fmt: skip
    # The toy velocity acts per token, so holding token 3 must not disturb tokens 0-2.
    np.testing.assert_allclose(held[:, :3], plain[:, :3], rtol=1e-6)
    np.testing.assert_array_equal(held[:, 3], 0.0)
    with pytest.raises(ValueError, match="together"):
        samplers.sample(gaussian_velocity(MU, S), noise, num_steps=4, cond_BxN=cond_BxN)
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.sample(gaussian_velocity(MU, S), noise, num_steps=4, method="rk4")


def test_timesteps():
    for shift in (1.0, 3.0, 0.5):
        ts = np.asarray(samplers.timesteps(10, shift=shift))
        assert ts.shape == (11,) and ts[0] == 1.0 and ts[-1] == 0.0
        assert np.all(np.diff(ts) < 0)
    plain = np.asarray(samplers.timesteps(10))
    np.testing.assert_allclose(plain, np.linspace(1, 0, 11), atol=1e-7)
    shifted = np.asarray(samplers.timesteps(10, shift=3.0))
    assert np.all(shifted[1:-1] > plain[1:-1])
    assert np.sum(shifted > 0.5) > np.sum(plain > 0.5)


def test_sdedit_schedule_starts_at_t_start():
    for shift in (1.0, 3.0):
        ts = np.asarray(samplers.timesteps(8, shift=shift, t_start=0.6))
        np.testing.assert_allclose([ts[0], ts[-1]], [0.6, 0.0], atol=1e-6)
        assert np.all(np.diff(ts) < 0)
    # Started from an exactly noised sample x_s = (1 - s) mu + s eps of a point mass at mu, the
    # exact velocity brings it to mu; at strength 1 it is the ordinary sampler.
    mu, s_D = jnp.array([2.0, -1.0]), jnp.array([1e-3, 1e-3])
    eps = jax.random.normal(jax.random.key(0), (1, 64, 2))
    x_s = 0.4 * mu + 0.6 * eps
    out = samplers.sample(gaussian_velocity(mu, s_D), x_s, num_steps=32, t_start=0.6)
    np.testing.assert_allclose(out, jnp.broadcast_to(mu, out.shape), atol=2e-2)


def test_classifier_free_guidance():
    x = jax.random.normal(jax.random.key(5), (2, 3, 4))
    t_BxN = jnp.full((2, 3), 0.7)
    cond_fn = lambda x, t: 2.0 * x + t[..., None]
    uncond_fn = lambda x, t: -x

    def pair_fn(x_2BxNxD, t_2BxN):
        x_c, x_u = jnp.split(x_2BxNxD, 2)
        t_c, t_u = jnp.split(t_2BxN, 2)
        return jnp.concatenate([cond_fn(x_c, t_c), uncond_fn(x_u, t_u)])

    np.testing.assert_allclose(
        samplers.cfg_velocity(cond_fn, uncond_fn, 1.0)(x, t_BxN), cond_fn(x, t_BxN), rtol=1e-6
    )
    np.testing.assert_allclose(
        samplers.cfg_velocity(cond_fn, uncond_fn, 0.0)(x, t_BxN), uncond_fn(x, t_BxN), rtol=1e-6
    )
    guided = samplers.cfg_velocity(cond_fn, uncond_fn, 4.0)(x, t_BxN)
    np.testing.assert_allclose(guided, 4.0 * cond_fn(x, t_BxN) - 3.0 * uncond_fn(x, t_BxN), 1e-5)
    np.testing.assert_allclose(samplers.cfg_velocity_batched(pair_fn, 4.0)(x, t_BxN), guided, 1e-6)


def test_guidance_interval_guides_only_the_tokens_whose_t_is_inside():
    x = jax.random.normal(jax.random.key(6), (2, 4, 3))
    t_BxN = jnp.asarray([[0.05, 0.3, 0.8, 1.0], [0.5, 0.5, 0.95, 0.0]])
    cond_fn = lambda x, t: 2.0 * x + t[..., None]
    uncond_fn = lambda x, t: -x
    full = samplers.cfg_velocity(cond_fn, uncond_fn, 4.0)(x, t_BxN)
    windowed = samplers.cfg_velocity(cond_fn, uncond_fn, 4.0, (0.1, 0.9))(x, t_BxN)
    inside = np.asarray([[False, True, True, False], [True, True, False, False]])
    expected = np.where(inside[..., None], full, cond_fn(x, t_BxN))
    np.testing.assert_allclose(windowed, expected, rtol=1e-6)
    assert not np.allclose(windowed, full)  # some tokens were outside and went unguided
    np.testing.assert_allclose(
        samplers.cfg_velocity(cond_fn, uncond_fn, 4.0, (0.0, 1.0))(x, t_BxN), full, rtol=1e-6
    )


@pytest.mark.parametrize(
    "values", [["0.5"], ["0.9", "0.1"], ["-0.1", "0.5"], ["0.2", "1.5"], ["a", "b"]]
)
def test_a_bad_guidance_interval_is_refused(values):
    with pytest.raises(ValueError, match="LO,HI|lo < hi"):
        samplers.parse_interval(values)


def test_a_guidance_interval_parses():
    assert samplers.parse_interval([]) is None
    assert samplers.parse_interval(["0.1", "0.9"]) == (0.1, 0.9)


@pytest.mark.parametrize("method", METHODS)
def test_jitted_sampler_equals_eager(method):
    velocity_fn = gaussian_velocity(MU, S)
    noise = jax.random.normal(jax.random.key(6), (2, 8, 4))
    x0_cond = jax.random.normal(jax.random.key(7), (2, 8, 4))
    cond_BxN = jnp.arange(8)[None, :] < jnp.array([[2], [0]])
    kwargs = dict(num_steps=6, method=method, shift=2.0, x0_cond=x0_cond, cond_BxN=cond_BxN)
    eager = samplers.sample(velocity_fn, noise, **kwargs)
    jitted = jax.jit(functools.partial(samplers.sample, velocity_fn, num_steps=6, method=method))(
        noise, shift=2.0, x0_cond=x0_cond, cond_BxN=cond_BxN
    )
    stepped = samplers.sample(velocity_fn, noise, progress=True, **kwargs)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stepped, eager, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(eager))


def test_low_precision_latents_keep_their_dtype():
    noise = jax.random.normal(jax.random.key(8), (1, 4, 4), jnp.bfloat16)
    for method in METHODS:
        x = samplers.sample(gaussian_velocity(MU, S), noise, num_steps=3, method=method)
        assert x.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(x, np.float32)))


def test_first_order_dpm_solver_is_euler():
    # With two steps the 2M correction never acts (see _dpmpp_2m_step), and the first-order
    # DPM-Solver++ update on the rectified-flow path is algebraically an Euler step.
    noise = jax.random.normal(jax.random.key(9), (2, 8, 4))
    euler, dpm = (
        samplers.sample(gaussian_velocity(MU, S), noise, num_steps=2, method=m, shift=3.0)
        for m in ("euler", "dpmpp_2m")
    )
    np.testing.assert_allclose(dpm, euler, rtol=1e-5, atol=1e-6)
