"""Flags of the commands that sample the DiT (`generate`, `eval`, `demo`): which checkpoint of
a run, solver, steps, guidance and timestep shift, read and checked in one place."""

from absl import flags

from sora_jax import checkpoints, cli, dit_lib
from sora_jax.diffusion import samplers

_CHECKPOINT_STEP = flags.DEFINE_integer(
    "checkpoint_step",
    None,
    "The step of the `train` run's checkpoint to sample (one it kept); default: the newest. A "
    "bundle holds one step.",
)

_STEPS = flags.DEFINE_integer("steps", 25, "Sampler steps.")
_CFG = flags.DEFINE_float("cfg", 4.0, "Classifier-free guidance scale (1 = none).")
_CFG_INTERVAL = flags.DEFINE_list(
    "cfg_interval",
    [],
    "LO,HI: guide only while t (1 = noise, 0 = data) is in [LO, HI], the conditional velocity "
    "elsewhere; empty: every step.",
)
_SHIFT = flags.DEFINE_float(
    "shift",
    None,
    "The sampler's timestep shift (> 1 spends more steps near noise); default: the run's "
    "config.diffusion.shift at the clip's token count.",
)
_SAMPLER = flags.DEFINE_enum("sampler", "euler", samplers.METHODS, "ODE solver.")


def settings() -> dict:
    """{steps, cfg, cfg_interval, shift, sampler} from the flags; cli.UserError if one is bad."""
    if _STEPS.value < 1:
        raise cli.UserError(f"--steps must be at least 1, got {_STEPS.value}")
    with cli.user_errors(ValueError):
        cfg_interval = samplers.parse_interval(_CFG_INTERVAL.value)
        samplers.check_shift(_SHIFT.value)
    return dict(
        steps=_STEPS.value,
        cfg=_CFG.value,
        cfg_interval=cfg_interval,
        shift=_SHIFT.value,
        sampler=_SAMPLER.value,
    )


def load_pipeline(checkpoint: str) -> dit_lib.Pipeline:
    """The run or bundle `checkpoint` at --checkpoint_step; cli.UserError if it cannot load."""
    with cli.user_errors(checkpoints.CheckpointError, FileNotFoundError):
        return dit_lib.load_pipeline(checkpoint, _CHECKPOINT_STEP.value)
