"""The image suite against frames rendered from raw dm_control with the same settings."""
import numpy as np
import pytest

import envs
from envs import rendering, suites
from tests.envs.reference import raw_env, raw_step, to_simulator


def raw_frame(physics, size, camera_id):
    return physics.render(size, size, camera_id=camera_id).transpose(2, 0, 1)


@pytest.mark.parametrize("task, size", [("cartpole_swingup", 64), ("quadruped_walk", 64), ("cup_catch", 48)])
def test_frames_and_rewards_equal_raw_dm_control(task, size):
    seed = 9
    spec = suites.task_spec(task)
    env = envs.make_env("image", task, seed, image_size=size)
    raw = raw_env(spec.dmc_domain, spec.dmc_task, seed)
    rendering.use_fast_render_settings(raw.physics)
    rng = np.random.default_rng(0)

    obs, info = env.reset()
    raw.reset()
    assert obs.shape == env.obs_shape == (3, size, size) and obs.dtype == env.obs_dtype == np.uint8
    assert obs.flags.c_contiguous and "true_obs" not in info
    np.testing.assert_array_equal(obs, raw_frame(raw.physics, size, spec.camera_id))
    for _ in range(4):
        action = rng.uniform(-1, 1, env.action_dim)
        obs, reward, _, _, info = env.step(action)
        _, raw_reward, steps = raw_step(raw, to_simulator(action, raw.action_spec()), env.action_repeat)
        np.testing.assert_array_equal(obs, raw_frame(raw.physics, size, spec.camera_id))
        assert reward == pytest.approx(raw_reward, rel=1e-6, abs=1e-6) and info["env_steps"] == steps
    assert obs.std() > 10  # a real picture, not a blank frame
    if task.startswith("quadruped"):  # the camera choice matters there
        assert np.abs(obs.astype(int) - raw_frame(raw.physics, size, 0)).mean() > 10


def test_fast_render_settings_and_no_action_noise():
    env = envs.make_env("image", "walker_walk", 0, action_noise_std=0.5)
    env.reset()
    quality = env.physics.model.vis.quality
    assert (quality.offsamples, quality.shadowsize) == (0, 0)
    action = np.full(env.action_dim, 0.25)
    assert np.array_equal(env.step(action)[4]["applied_action"], action)


def test_frames_are_deterministic_per_seed():
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 6))

    def frames(seed):
        env = envs.make_env("image", "walker_walk", seed)
        return np.stack([env.reset()[0]] + [env.step(action)[0] for action in actions])

    first = frames(3)
    np.testing.assert_array_equal(first, frames(3))
    assert not np.array_equal(first[0], frames(4)[0])
