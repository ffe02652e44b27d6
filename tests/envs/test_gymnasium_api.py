"""DMCEnv is a `gymnasium.Env`: gymnasium's own API checker, spaces, render() and its wrappers."""
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs


@pytest.mark.parametrize("suite", envs.SUITES)
def test_gymnasium_env_checker_passes_without_warnings(suite):
    env = gymnasium.make(envs.GYMNASIUM_ID, suite=suite, task="cartpole_swingup", seed=3,
                         image_size=32, render_size=48).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium reports most API departures as warnings
        # ... and also unbounded Boxes, which a state of velocities is: the one warning allowed
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is")
        check_env(env)


def test_spaces_describe_what_the_env_returns():
    states = envs.make_env("noisy_state", "walker_walk", 0)
    assert states.observation_space == gymnasium.spaces.Box(-np.inf, np.inf, (24,), np.float32)
    assert states.action_space == gymnasium.spaces.Box(-1.0, 1.0, (6,), np.float32)
    images = envs.make_env("image", "cartpole_swingup", 0, image_size=32)
    assert images.observation_space == gymnasium.spaces.Box(0, 255, (3, 32, 32), np.uint8)
    obs, _ = images.reset(seed=1)
    assert obs in images.observation_space
    assert states.metadata["render_fps"] == pytest.approx(1 / (0.025 * 2))  # walker: 40 Hz control, repeat 2
    assert images.metadata["render_fps"] == pytest.approx(1 / (0.01 * 8))  # cartpole: 100 Hz, repeat 8


def test_render_draws_the_current_state_at_render_size_without_changing_observations():
    env = envs.make_env("noisy_state", "cartpole_swingup", 5, render_size=64)
    twin = envs.make_env("noisy_state", "cartpole_swingup", 5)
    env.reset(seed=9), twin.reset(seed=9)
    first = env.render()
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8 and first.std() > 5
    for _ in range(10):
        obs, *_ = env.step(np.ones(1))
        twin_obs, *_ = twin.step(np.ones(1))
        np.testing.assert_array_equal(obs, twin_obs)  # rendering consumes no randomness
    assert np.abs(env.render().astype(int) - first).sum() > 0  # the cart moved
    env.close()
    env.close()  # closing twice is allowed


def test_gymnasium_wrappers_apply():
    env = gymnasium.wrappers.TimeLimit(envs.make_env("noisy_state", "cartpole_swingup", 0), max_episode_steps=3)
    env.reset(seed=0)
    truncated = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert truncated == [False, False, True]


def test_unknown_render_mode_is_refused_naming_it():
    with pytest.raises(ValueError, match="render_mode"):
        gymnasium.make(envs.GYMNASIUM_ID, render_mode="human")
