"""Model-agnostic training pieces shared by the VAE and DiT trainers.

State is a plain pytree and the step a pure function `train_step(state, batch, rng) ->
(state, metrics)`, jitted once with explicit shardings (nanodo / big_vision style; no Trainer
class). The loss is the only model-specific part: `loss_fn(params, batch, rng, step) -> (loss,
aux)`, with `step` the state's step before the update (for losses that switch on over time).
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from sora_jax import sharding as sharding_lib

LossFn = Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
TrainStep = Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    """Everything a step updates. No apply_fn: the model lives in the loss closure, so the state
    stays a checkpointable pytree of arrays."""

    step: jax.Array
    params: Any
    opt_state: optax.OptState


def create_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    """Works on logically boxed params too: optimizer moments inherit the boxes, so
    `sharding.sharded_init` can shard the whole state from one `eval_shape`."""
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params)
    )


def make_optimizer(opt: Any, total_steps: int) -> optax.GradientTransformation:
    """AdamW with global-norm clipping, linear warmup and cosine decay to 10% of the peak.

    `opt` (e.g. `config.optimizer`): learning_rate, warmup_steps, b1, b2, weight_decay, grad_clip.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        opt.learning_rate,
        opt.warmup_steps,
        max(total_steps, opt.warmup_steps + 1),
        end_value=opt.learning_rate * 0.1,
    )
    return optax.chain(
        optax.clip_by_global_norm(opt.grad_clip),
        optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay),
    )


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation) -> TrainStep:
    """Returns the pure `train_step(state, batch, rng) -> (state, metrics)`.

    The rng is folded with `state.step`, so the caller passes one fixed key for the whole run
    and a resumed run draws the same noise at the same step.
    """

    def train_step(state: TrainState, batch: Any, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, aux), grads = grad_fn(state.params, batch, rng, state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def jit_train_step(
    train_step: TrainStep,
    state_shardings: Any,
    batch_shardings: Any,
    mesh: jax.sharding.Mesh,
    rules: sharding_lib.LogicalRules | None = None,
) -> sharding_lib.MeshJitted:
    """Jits `train_step` with explicit shardings, donating the old state.

    `rules` are the logical-axis rules the model's constraints use (e.g. `DIT_RULES`); the
    returned callable (and its `.lower`, for ahead-of-time compiles) runs under
    `jax.set_mesh(mesh)` and those rules, without which the constraints would be no-ops.
    The rng and the metrics are replicated.
    """
    replicated = sharding_lib.replicated(mesh)
    jitted = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_shardings, replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    return sharding_lib.MeshJitted(jitted, mesh, rules)
