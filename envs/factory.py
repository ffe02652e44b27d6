"""`make_env`: the one way the harness builds an environment of any suite."""
import math

import gin

from envs import rendering, suites
from envs.dmc import DMCEnv, check_seed
from envs.missing import MissingObservation
from envs.observations import NoisyStateObservation, PixelObservation
from envs.occlusions import OccludedObservation


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
    missing_gaps: tuple = (4, 8),
    occluders: int = 3,
) -> DMCEnv:
    """Builds a DeepMind Control task of one benchmark suite (see `envs.dmc.DMCEnv` for the API).

    suite: "image": observations are (3, image_size, image_size) uint8 frames from the task's
        camera (`suites.CAMERA_ID`); no noise (the two noise arguments are ignored).
        "noisy_state": observations are the flattened float32 state plus Gaussian noise of std
        `obs_noise_std`; actions get Gaussian noise of std `action_noise_std` before the
        simulator, clipped to the action bounds. Both stds default to 0.3 (the source reports
        "N(0, 0.3)"; std versus variance is ambiguous there, we use std).
        "missing_state": the noisy states, withheld (zeros, info["obs_valid"] False) except at
        valid steps every k agent steps, k drawn per interval uniformly from
        `missing_gaps` = (4, 8) inclusive (VRKN); `envs.missing`.
        "occluded_image": the image suite's frames with `occluders` (3) moving opaque disks drawn
        over them (VRKN's occlusion setup, drawn procedurally); `envs.occlusions`. No noise.
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
    if not (isinstance(missing_gaps, (tuple, list)) and len(missing_gaps) == 2
            and all(isinstance(g, int) and not isinstance(g, bool) for g in missing_gaps)):
        raise ValueError(f"missing_gaps must be a pair of integers (min, max), got {missing_gaps!r}")
    for name, value in (("obs_noise_std", obs_noise_std), ("action_noise_std", action_noise_std)):
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (is_number and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    dm_suite = rendering.load_suite()
    dmc_env = dm_suite.load(spec.dmc_domain, spec.dmc_task, task_kwargs={"random": int(seed)})
    if suite in ("image", "occluded_image"):
        observation = PixelObservation(dmc_env.physics, spec.camera_id, image_size)
        if suite == "occluded_image":
            observation = OccludedObservation(observation, occluders)
        action_noise_std = 0.0
    else:
        observation = NoisyStateObservation(dmc_env.observation_spec(), obs_noise_std)
        if suite == "missing_state":
            observation = MissingObservation(observation, *missing_gaps)
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
