"""ODE samplers for rectified flow: Euler, Heun and DPM-Solver++(2M), with per-token conditioning.

A trained model gives the velocity of the probability-flow ODE dx/dt = v(x, t) of rectified flow
(Liu et al. 2022; Esser et al. 2024, SD3), x_t = (1 - t) x0 + t eps. Sampling integrates it from
pure noise at t = 1 down to data at t = 0 over a schedule of `num_steps` intervals that the SD3
resolution shift bends towards t = 1.

Every sampler takes a velocity function `velocity_fn(x_BxNxD, t_BxN) -> v_BxNxD` (the DiT with its
text and parameters closed over), so guidance is a wrapper around it (`cfg_velocity`). Tokens in
`cond_BxN` are conditioning (an image to animate, frames to extend or interpolate between): they
are held at `x0_cond` before every model call and after every update, and the model is told their
t is 0, exactly as in training (`rectified_flow.training_inputs`).

Solvers, with their model evaluations (NFE) per sample:
- "euler": first order, `num_steps` NFE. On this path it is the same as DDIM.
- "heun": second-order predictor-corrector (Karras et al. 2022); the last step, to t = 0, is Euler
  (the corrector would evaluate the model on clean data), so 2 * num_steps - 1 NFE.
- "dpmpp_2m": DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++"), second-order multistep in the
  data-prediction form, `num_steps` NFE. See `_dpmpp_2m_step` for the derivation.
"""

import functools
import math

import jax
import jax.numpy as jnp
from tqdm import tqdm

from sora_jax.diffusion.rectified_flow import shift_t, unshift_t


def timesteps(num_steps: int, *, shift=1.0, t_start=1.0):
    """The schedule t_start = t_0 > t_1 > ... > t_num_steps = 0: uniform, then SD3-shifted.

    Shift > 1 spends more of the steps at high t (coarse structure), which larger inputs need.
    With `t_start` < 1 (SDEdit) the uniform grid starts where the shift maps to `t_start`, so the
    steps are the tail of a full schedule's spacing.
    """
    u_start = unshift_t(jnp.asarray(t_start, jnp.float32), shift)
    return shift_t(jnp.linspace(u_start, 0.0, num_steps + 1, dtype=jnp.float32), shift)


def guide(v_cond, v_uncond, scale, t_BxN, interval=None):
    """Classifier-free guidance (Ho & Salimans 2022): v_u + scale (v_c - v_u); scale 1 is v_c.

    `interval` (lo, hi): guidance only for tokens whose t lies in [lo, hi], the conditional
    velocity elsewhere (Kynkaanniemi et al. 2024: guidance at the noisiest steps pulls samples
    towards a few modes, and near the data it does little). None: every step is guided.
    """
    guided = v_uncond + scale * (v_cond - v_uncond)
    if interval is None:
        return guided
    lo, hi = interval
    inside_BxN = (t_BxN >= lo) & (t_BxN <= hi)
    return jnp.where(inside_BxN[..., None], guided, v_cond)


def check_interval(interval) -> None:
    """Raises ValueError unless `interval` is None or (lo, hi) with 0 <= lo < hi <= 1."""
    if interval is None:
        return
    if len(interval) != 2 or not 0.0 <= interval[0] < interval[1] <= 1.0:
        raise ValueError(f"a guidance interval is (lo, hi) with 0 <= lo < hi <= 1, got {interval}")


def check_shift(shift) -> None:
    """Raises ValueError unless `shift` is None (the run's own) or a finite number > 0."""
    if shift is not None and not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"the timestep shift must be a finite number > 0, got {shift}")


def parse_interval(values: list[str]) -> tuple[float, float] | None:
    """A `--cfg_interval` flag's strings -> (lo, hi), or None for an empty flag; checked."""
    if not values:
        return None
    try:
        interval = tuple(float(v) for v in values)
    except ValueError:
        raise ValueError(f"--cfg_interval takes two numbers LO,HI, got {values}") from None
    check_interval(interval)
    return interval


def cfg_velocity(cond_fn, uncond_fn, scale, interval=None):
    """Guidance (`guide`) from separate conditional and unconditional velocity functions."""

    def velocity_fn(x_BxNxD, t_BxN):
        v_cond, v_uncond = cond_fn(x_BxNxD, t_BxN), uncond_fn(x_BxNxD, t_BxN)
        return guide(v_cond, v_uncond, scale, t_BxN, interval)

    return velocity_fn


def cfg_velocity_batched(pair_fn, scale, interval=None):
    """Guidance with one model call over a doubled batch, which fills the device better.

    `pair_fn` receives [2B, ...] inputs whose first half is to be run with the text and second
    half with the null text (the caller closes over the text stacked that way). Outside the
    guidance `interval` the unconditional half is still computed (one shape to compile).
    """

    def velocity_fn(x_BxNxD, t_BxN):
        v_2BxNxD = pair_fn(jnp.concatenate([x_BxNxD, x_BxNxD]), jnp.concatenate([t_BxN, t_BxN]))
        v_cond, v_uncond = jnp.split(v_2BxNxD, 2)
        return guide(v_cond, v_uncond, scale, t_BxN, interval)

    return velocity_fn


METHODS = ("euler", "heun", "dpmpp_2m")


def sample(
    velocity_fn,
    noise_BxNxD,
    *,
    num_steps: int,
    method: str = "euler",
    shift=1.0,
    x0_cond=None,
    cond_BxN=None,
    t_start=1.0,
    progress: bool = False,
):
    """Integrates dx/dt = velocity_fn(x, t) from `noise_BxNxD` at t = 1 to t = 0; returns x_0.

    With `t_start` < 1, `noise_BxNxD` is a partly noised sample x_{t_start} (SDEdit) and the
    integration starts there.

    `x0_cond` [B, N, D] and `cond_BxN` [B, N] bool (both or neither) give the conditioning tokens.
    The loop is a `lax.fori_loop`, so the sampler traces the model once and jits whole with
    `jax.jit(functools.partial(sample, velocity_fn, num_steps=..., method=...))`. `progress=True`
    is for eager use (a notebook): a Python loop over a jitted step that waits for each step, with
    a tqdm bar; it compiles the step once per call and computes the same result.
    """
    if (x0_cond is None) != (cond_BxN is None):
        raise ValueError("x0_cond and cond_BxN must be given together")
    if cond_BxN is None:
        cond_BxN = jnp.zeros(noise_BxNxD.shape[:2], bool)
        x0_cond = jnp.zeros_like(noise_BxNxD)

    def hold(x_BxNxD):
        # Casting back keeps the loop carry's dtype when x is lower precision than the schedule.
        return jnp.where(cond_BxN[..., None], x0_cond, x_BxNxD).astype(noise_BxNxD.dtype)

    def velocity(x_BxNxD, t):
        return velocity_fn(x_BxNxD, jnp.where(cond_BxN, 0.0, t))

    ts = timesteps(num_steps, shift=shift, t_start=t_start)
    x = hold(noise_BxNxD)
    if method == "euler":
        step, carry = functools.partial(_euler_step, velocity, hold, ts), x
    elif method == "heun":
        step, carry = functools.partial(_heun_step, velocity, hold, ts), x
    elif method == "dpmpp_2m":
        # The second slot is the previous step's x0 prediction; unused before it exists.
        step, carry = functools.partial(_dpmpp_2m_step, velocity, hold, ts), (x, x)
    else:
        raise ValueError(f"unknown sampler {method!r}; expected one of {METHODS}")

    if progress:
        step = jax.jit(step)
        for i in tqdm(range(num_steps), desc=f"sampling ({method})", unit="step"):
            carry = jax.block_until_ready(step(i, carry))
    else:
        carry = jax.lax.fori_loop(0, num_steps, step, carry)
    return carry[0] if method == "dpmpp_2m" else carry


def _euler_step(velocity, hold, ts, i, x):
    s, t = ts[i], ts[i + 1]
    return hold(x + (t - s) * velocity(x, s))


def _heun_step(velocity, hold, ts, i, x):
    s, t = ts[i], ts[i + 1]
    v = velocity(x, s)
    x_euler = hold(x + (t - s) * v)

    def corrected():
        # Trapezoidal rule: average the slopes at both ends of the interval.
        return hold(x + (t - s) * 0.5 * (v + velocity(x_euler, t)))

    # A real branch (not `where`) so the final step does not pay for a model call it discards.
    return jax.lax.cond(t > 0, corrected, lambda: x_euler)


def _log_snr_half(t):
    """lambda = log(alpha_t / sigma_t) = log((1 - t) / t); -inf at t = 1, +inf at t = 0."""
    return jnp.log1p(-t) - jnp.log(t)


def _dpmpp_2m_step(velocity, hold, ts, i, carry):
    """One DPM-Solver++(2M) step from s = ts[i] to t = ts[i + 1], rewritten for rectified flow.

    Rectified flow is the Gaussian path x_t = alpha_t x0 + sigma_t eps with alpha_t = 1 - t and
    sigma_t = t. From the velocity, the model's data and noise predictions are
    x0_hat = x_t - t v and eps_hat = x_t + (1 - t) v (so that x_t = alpha x0_hat + sigma eps_hat).
    With lambda = log(alpha / sigma), the exact solution of the ODE in data-prediction form
    (DPM-Solver++ eq. 9) is
        x_t = (sigma_t / sigma_s) x_s + sigma_t * int_{lambda_s}^{lambda_t} e^l x0_hat(l) dl.
    Holding x0_hat at a value D over the step gives, with h = lambda_t - lambda_s,
        x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D,
    and since alpha_t e^{-h} = alpha_s sigma_t / sigma_s, alpha_t (1 - e^{-h}) = 1 - t / s, so
        x_t = (t / s) x_s + (1 - t / s) D.
    D = x0_hat(s) is first order (and equals an Euler step, x_s - (s - t) v). 2M instead
    extrapolates x0_hat linearly in lambda from the previous step's prediction at lambda_prev:
        D = (1 + c) x0_hat(s) - c x0_hat(prev),  c = 1 / (2 r) = h / (2 (lambda_s - lambda_prev)).
    The first step has no previous prediction and the last (t = 0, lambda = +inf) would need an
    infinite extrapolation, so both use c = 0; the last step then returns x0_hat(s) exactly.
    Because lambda(1) = -inf, the second step's c is 0 as well (a previous interval of infinite
    length makes the linear extrapolation flat), so the correction acts from the third step on.
    """
    x, x0_hat_prev = carry
    s, t = ts[i], ts[i + 1]
    x0_hat = (x - s * velocity(x, s)).astype(x.dtype)
    lambda_s = _log_snr_half(s)
    h = _log_snr_half(t) - lambda_s
    h_prev = lambda_s - _log_snr_half(ts[jnp.maximum(i - 1, 0)])
    # `where` discards the non-finite ratio computed on the first and last steps.
    c = jnp.where((i > 0) & (t > 0), h / (2.0 * h_prev), 0.0)
    d = (1.0 + c) * x0_hat - c * x0_hat_prev
    return hold((t / s) * x + (1.0 - t / s) * d), x0_hat
