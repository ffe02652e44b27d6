"""`make_env`: the one way the harness builds an environment of either suite."""
import math

import gin

from envs import rendering, suites
from envs.dmc import DMCEnv, check_seed
from envs.observations import NoisyStateObservation, PixelObservation


@gin.configurable
def make_env(
    suite: str,
    task: str,
    seed: int,
    action_repeat: int | None = None,
    obs_noise_std: float = 0.3,
    action_noise_std: float = 0.3,
    image_size: int = 64,
    render_size: int = 128,
) -> DMCEnv:
    """Builds a DeepMind Control task of one benchmark suite (see `envs.dmc.DMCEnv` for the API).

    suite: "image": observations are (3, image_size, image_size) uint8 frames from the task's
        camera (`suites.CAMERA_ID`); no noise (the two noise arguments are ignored).
        "noisy_state": observations are the flattened float32 state plus Gaussian noise of std
        `obs_noise_std`; actions get Gaussian noise of std `action_noise_std` before the
        simulator, clipped to the action bounds. Both stds default to 0.3 (the source reports
        "N(0, 0.3)"; std versus variance is ambiguous there, we use std).
    task: "<domain>_<task>", one of `suites.ALL_TASKS`, e.g. "cartpole_swingup", "cup_catch".
    seed: seeds dm_control's initial states and both noise streams.
    action_repeat: env steps per agent step; None takes the domain's `suites.ACTION_REPEAT`.
    render_size: side of the frames `env.render()` draws for videos, from the task's camera; it
        does not change what the agent sees.
    Unknown suites or tasks and invalid values raise ValueError with the valid choices.
    """
    suites.check_suite(suite)
    spec = suites.task_spec(task)
    check_seed(seed)
    if action_repeat is None:
        action_repeat = spec.action_repeat
    _check_positive_int("action_repeat", action_repeat)
    _check_positive_int("image_size", image_size)
    _check_positive_int("render_size", render_size)
    for name, value in (("obs_noise_std", obs_noise_std), ("action_noise_std", action_noise_std)):
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (is_number and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    dm_suite = rendering.load_suite()
    dmc_env = dm_suite.load(spec.dmc_domain, spec.dmc_task, task_kwargs={"random": int(seed)})
    if suite == "image":
        observation = PixelObservation(dmc_env.physics, spec.camera_id, image_size)
        action_noise_std = 0.0
    else:
        observation = NoisyStateObservation(dmc_env.observation_spec(), obs_noise_std)
    return DMCEnv(dmc_env, observation, action_repeat, seed, action_noise_std,
                  camera_id=spec.camera_id, render_size=render_size)


def make_gymnasium_env(suite: str = "noisy_state", task: str = "cartpole_swingup", seed: int = 0,
                       render_mode: str | None = "rgb_array", **kwargs) -> DMCEnv:
    """Entry point of `gymnasium.make(GYMNASIUM_ID, suite=..., task=..., seed=...)`; keyword
    arguments are `make_env`'s."""
    env = make_env(suite, task, seed, **kwargs)
    if render_mode is not None and render_mode not in env.metadata["render_modes"]:
        raise ValueError(f"render_mode must be one of {', '.join(env.metadata['render_modes'])} or None, "
                         f"got {render_mode!r}")
    env.render_mode = render_mode
    return env


GYMNASIUM_ID = "ssm_bench/DMC-v0"


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
