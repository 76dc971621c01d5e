"""Rectified-flow training math: noising, the velocity target, the masked loss, timesteps, EMA.

Rectified flow (Liu et al. 2022, "Flow Straight and Fast") joins data and noise by a straight line,
x_t = (1 - t) x0 + t eps with eps ~ N(0, I) and t in [0, 1], and trains the model to predict the
line's velocity v = dx_t/dt = eps - x0; t = 1 is pure noise and sampling integrates the learned
ODE from t = 1 down to t = 0 (`samplers.py`). Timesteps are logit-normal and shifted towards noise
for larger inputs, both from Esser et al. 2024 (SD3, "Scaling Rectified Flow Transformers").

Latent tokens are [B, N, D]. Every token carries its own timestep `t_BxN`: conditioning tokens
(`cond_BxN`: a given first frame, frames to extend, both ends to interpolate) are clean, t = 0,
and are never noised, predicted or scored; padding tokens from sequence packing (`valid_BxN`
False) are not scored either.
"""

import math
import numbers

import jax
import jax.numpy as jnp


def sample_t(rng: jax.Array, shape: tuple[int, ...], *, mean: float = 0.0, std: float = 1.0):
    """Logit-normal timesteps, sigmoid(N(mean, std^2)): in (0, 1) with median sigmoid(mean).

    SD3 found this beats uniform t: it spends training on the middle of the path, where predicting
    the velocity is hardest, rather than near either end where it is nearly trivial.
    """
    return jax.nn.sigmoid(mean + std * jax.random.normal(rng, shape, jnp.float32))


def shift_t(t, shift):
    """Resolution shift t' = shift t / (1 + (shift - 1) t) (SD3 eq. 23); shift 1 is identity.

    It maps [0, 1] onto itself monotonically and, for shift > 1, towards noise. More tokens carry
    more redundant signal, so the same t destroys less of the image; shifting restores the
    signal-to-noise ratio a smaller input would have had at t (SNR is divided by shift^2).
    """
    # Written as shift t / (shift t + 1 - t) so t = 0 and t = 1 map to exactly 0 and 1 in floats.
    return shift * t / (shift * t + (1.0 - t))


def unshift_t(t_shifted, shift):
    """The inverse of `shift_t`: t = t' / (shift - (shift - 1) t')."""
    return t_shifted / (shift - (shift - 1.0) * t_shifted)


def shift_for_tokens(
    num_tokens: int,
    *,
    base_tokens: int = 256,
    base_shift: float = 1.0,
    max_tokens: int = 4096,
    max_shift: float = 3.0,
) -> float:
    """A shift that grows with sequence length: linear in `num_tokens`, clipped at both ends.

    shift = base_shift + (max_shift - base_shift) * clip((n - base_tokens) / (max_tokens -
    base_tokens), 0, 1). This is the Flux / SD3 idea that longer sequences need more noise; Flux
    interpolates log(shift) linearly over the same default range (256 -> 4096 tokens), here the
    shift itself is interpolated, which is simpler to read and puts the endpoint values exactly
    where they are chosen. The default max 3.0 is SD3's shift at 1024^2 pixels (4096 tokens);
    SD3's sqrt(n / base) argument would give 4.0 there. An int count (a static shape) gives a
    Python float, which the sampler needs; an array of counts (packed clips) gives an array.
    """
    frac = (num_tokens - base_tokens) / (max_tokens - base_tokens)
    if isinstance(num_tokens, numbers.Integral):
        return base_shift + (max_shift - base_shift) * min(max(frac, 0.0), 1.0)
    return base_shift + (max_shift - base_shift) * jnp.clip(frac, 0.0, 1.0)


def noisy_input(x0_BxNxD, eps_BxNxD, t_BxN, cond_BxN):
    """x_t = (1 - t) x0 + t eps per token; conditioning tokens are treated as t = 0, i.e. x0."""
    t_BxNx1 = jnp.where(cond_BxN, 0.0, t_BxN)[..., None]
    return (1.0 - t_BxNx1) * x0_BxNxD + t_BxNx1 * eps_BxNxD


def velocity_target(x0_BxNxD, eps_BxNxD):
    """The straight path's velocity dx_t/dt = eps - x0, the regression target."""
    return eps_BxNxD - x0_BxNxD


def flow_loss(v_pred_BxNxD, x0_BxNxD, eps_BxNxD, cond_BxN, valid_BxN):
    """Mean squared velocity error over the loss tokens (valid, not conditioning) and features.

    Each loss token's error is averaged over D, then over the loss tokens of the whole batch, so
    every scored token weighs the same however the batch is packed. Excluded tokens are selected
    away before squaring (not multiplied by 0), so a non-finite prediction there reaches neither
    the loss nor its gradient; the denominator is at least 1, so no loss tokens give 0, not NaN.
    """
    loss_BxN = valid_BxN & ~cond_BxN
    diff_BxNxD = v_pred_BxNxD.astype(jnp.float32) - velocity_target(x0_BxNxD, eps_BxNxD)
    err_BxN = jnp.mean(jnp.where(loss_BxN[..., None], diff_BxNxD, 0.0) ** 2, axis=-1)
    return jnp.sum(err_BxN) / jnp.maximum(jnp.sum(loss_BxN), 1)


def check_frame_correlation(correlation) -> float:
    """`correlation` as a float; ValueError unless 0 <= correlation < 1."""
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"the frame noise correlation must be in [0, 1), got {correlation}")
    return float(correlation)


def frame_correlated_noise(rng, shape, coords_BxNx3, correlation: float, segments_BxN=None):
    """Standard-normal noise [B, N, D] whose tokens at one place of a clip share a part across
    its frames: eps = sqrt(c) shared(clip, h, w) + sqrt(1 - c) own, so each token is still
    N(0, I) and two frames' tokens at the same (h, w) correlate by c, other pairs not at all.

    The "mixed" noise prior of Ge et al. 2023 (PYoCo; their alpha is c / (1 - c)); VideoFusion
    (Luo et al. 2023) likewise shares a base noise between frames. Independent noise asks the
    model to pick an object's layout for every frame from unrelated draws; a shared part gives
    every frame the same draw to pick it from. Rectified flow carries whatever prior it is
    trained from to the data, so a model trained on this noise must be sampled from it.

    `rng`: one key, or one key a row [B] (a row's noise then depends on its key alone).
    `coords_BxNx3`: the tokens' integer-valued (t, h, w) grid positions; `segments_BxN`: the
    clip each token belongs to in packed rows (None: one clip a row), so packed clips share
    nothing.
    """
    keys = jax.random.split(rng, shape[0]) if rng.ndim == 0 else rng
    if segments_BxN is None:
        segments_BxN = jnp.zeros(shape[:2], jnp.int32)
    places_BxNx3 = jnp.concatenate(
        [segments_BxN[..., None], coords_BxNx3[..., 1:]], axis=-1
    ).astype(jnp.int32)

    def row(key, places_Nx3):
        own_key, shared_key = jax.random.split(key)

        def shared_at(place_3):
            key = shared_key
            for i in range(3):
                key = jax.random.fold_in(key, place_3[i])
            return jax.random.normal(key, shape[2:])

        own = jax.random.normal(own_key, shape[1:])
        return (
            math.sqrt(correlation) * jax.vmap(shared_at)(places_Nx3)
            + math.sqrt(1.0 - correlation) * own
        )

    return jax.vmap(row)(keys, places_BxNx3)


def prior_noise(rng, shape, coords_BxNx3=None, frame_correlation=0.0, segments_BxN=None):
    """The noise a run trains and samples from: independent N(0, I) (`frame_correlation` 0) or
    `frame_correlated_noise`. `rng`: one key, or one key a row [B]."""
    if frame_correlation:
        if coords_BxNx3 is None:
            raise ValueError("frame-correlated noise needs the tokens' coordinates")
        return frame_correlated_noise(rng, shape, coords_BxNx3, frame_correlation, segments_BxN)
    if rng.ndim == 0:
        return jax.random.normal(rng, shape)
    return jax.vmap(lambda key: jax.random.normal(key, shape[1:]))(rng)


def training_inputs(
    rng, x0_BxNxD, cond_BxN, *, shift, t_mean=0.0, t_std=1.0, coords_BxNx3=None,
    frame_correlation=0.0,
):  # fmt: skip
    """Draws (x_t, t_BxN, eps) for one training step; eps from `prior_noise`.

    The training distribution uses ONE timestep per example, shared by all of its tokens (logit-
    normal, then shifted), with conditioning tokens at t = 0: that is the only mixture the
    sampler ever produces. The per-token `t_BxN` is the model's interface, which is what lets a
    single model condition on any subset of clean tokens.
    """
    t_rng, eps_rng = jax.random.split(rng)
    batch = x0_BxNxD.shape[0]
    t_B = shift_t(sample_t(t_rng, (batch,), mean=t_mean, std=t_std), shift)
    t_BxN = jnp.where(cond_BxN, 0.0, t_B[:, None])
    eps_BxNxD = prior_noise(eps_rng, x0_BxNxD.shape, coords_BxNx3, frame_correlation)
    eps_BxNxD = eps_BxNxD.astype(x0_BxNxD.dtype)
    return noisy_input(x0_BxNxD, eps_BxNxD, t_BxN, cond_BxN), t_BxN, eps_BxNxD


def drop_text(rng, batch_size: int, prob: float):
    """Per-example classifier-free-guidance dropout: True where the caller must use the null text.

    Training on the null text with probability `prob` (Ho & Salimans 2022) gives the same network
    an unconditional velocity, which guidance extrapolates away from at sampling time.
    """
    return jax.random.bernoulli(rng, prob, (batch_size,))


def ema_update(ema_params, params, decay):
    """ema <- decay * ema + (1 - decay) * params, leaf by leaf, keeping the EMA's dtypes."""
    return jax.tree.map(
        lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema_params, params
    )
