"""Noise schedules, noising, targets and the DDIM sampling loop (glue around ``diffusers``)."""

from .sampling import check_steps, ddim_sample, ddim_timesteps, draw_noise
from .schedule import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    add_noise,
    alpha_bar,
    as_timesteps,
    build_sampler,
    build_train_scheduler,
    diffusion_target,
    output_to_z0,
    sample_timesteps,
)

__all__ = [
    "BETA_SCHEDULES", "PREDICTION_TYPES", "add_noise", "alpha_bar", "as_timesteps", "build_sampler",
    "build_train_scheduler", "check_steps", "ddim_sample", "ddim_timesteps", "diffusion_target", "draw_noise",
    "output_to_z0", "sample_timesteps",
]
