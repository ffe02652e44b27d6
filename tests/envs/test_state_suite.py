"""The noisy_state suite with zero noise against raw dm_control, and its episode bookkeeping."""
import numpy as np
import pytest

import envs
from envs import suites
from tests.envs.reference import flat_state, raw_env, raw_step, to_simulator


def clean_env(task, seed, **kwargs):
    return envs.make_env("noisy_state", task, seed, obs_noise_std=0.0, action_noise_std=0.0, **kwargs)


@pytest.mark.parametrize("task", suites.DEFAULT_TASKS)
def test_zero_noise_equals_raw_dm_control(task):
    seed, agent_steps = 11, 15
    env = clean_env(task, seed)
    spec = suites.task_spec(task)
    raw = raw_env(spec.dmc_domain, spec.dmc_task, seed)
    rng = np.random.default_rng(0)

    obs, info = env.reset()
    expected = flat_state(raw.reset().observation)
    np.testing.assert_array_equal(obs, expected)
    np.testing.assert_array_equal(info["true_obs"], expected)
    assert obs.dtype == np.float32 and obs.shape == env.obs_shape == expected.shape
    for _ in range(agent_steps):
        action = rng.uniform(-1, 1, env.action_dim)
        obs, reward, terminated, truncated, info = env.step(action)
        time_step, raw_reward, _ = raw_step(raw, to_simulator(action, raw.action_spec()), spec.action_repeat)
        if task.startswith("quadruped"):  # affine map [-1, 1] -> bounds: equal up to rounding
            np.testing.assert_allclose(obs, flat_state(time_step.observation), rtol=1e-5, atol=1e-5)
            assert reward == pytest.approx(raw_reward, rel=1e-6, abs=1e-6)
        else:
            np.testing.assert_array_equal(obs, flat_state(time_step.observation))
            assert reward == raw_reward
        assert info["env_steps"] == spec.action_repeat
        assert not terminated and not truncated


def test_action_bounds_map_onto_the_simulators():
    """Quadruped's spec is not [-1, 1]: -1 and 1 must reach its exact bounds, 0 their middle."""
    env = clean_env("quadruped_walk", 0)
    spec = env.physics.model.actuator_ctrlrange
    low, high = spec[:, 0], spec[:, 1]
    assert not np.allclose(high, 1.0)  # the test needs a spec other than [-1, 1]
    env.reset()
    for action, expected in ((-1.0, low), (1.0, high), (0.0, (low + high) / 2), (3.0, high)):
        env.step(np.full(env.action_dim, action))
        np.testing.assert_allclose(env.physics.data.ctrl, expected, rtol=0, atol=1e-12)


def test_full_episode_with_an_uneven_action_repeat():
    """1000 env steps with repeat 3 = 333 full agent steps plus one of a single env step."""
    seed = 5
    env = clean_env("cartpole_swingup", seed, action_repeat=3)
    raw = raw_env("cartpole", "swingup", seed)
    assert env.action_repeat == 3 and env.max_episode_steps == 334
    rng = np.random.default_rng(1)
    env.reset()
    raw.reset()
    env_steps, episode_return, raw_return, agent_steps, truncated = 0, 0.0, 0.0, 0, False
    while not truncated:
        action = rng.uniform(-1, 1, 1)
        obs, reward, terminated, truncated, info = env.step(action)
        time_step, raw_reward, raw_steps = raw_step(raw, action, 3)
        np.testing.assert_array_equal(obs, flat_state(time_step.observation))
        assert info["env_steps"] == raw_steps and not terminated
        assert truncated == time_step.last()
        env_steps += info["env_steps"]
        episode_return += reward
        raw_return += raw_reward
        agent_steps += 1
    assert (agent_steps, env_steps, info["env_steps"]) == (334, 1000, 1)
    assert episode_return == pytest.approx(raw_return, rel=1e-12)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))


def test_default_repeat_episode_length():
    env = clean_env("cartpole_swingup", 0)
    env.reset()
    lengths = [env.step(np.ones(1))[4]["env_steps"] for _ in range(env.max_episode_steps)]
    assert env.max_episode_steps == 125 and lengths == [8] * 125
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.ones(1))


def test_later_episodes_follow_raw_dm_control():
    """reset() without a seed continues dm_control's stream of initial states."""
    env = clean_env("walker_walk", 3)
    raw = raw_env("walker", "walk", 3)
    for _ in range(3):
        obs, _ = env.reset()
        np.testing.assert_array_equal(obs, flat_state(raw.reset().observation))


def test_reset_with_seed_equals_a_new_env():
    """Default noise: same seed and actions give the same observations; another seed does not."""
    actions = np.random.default_rng(2).uniform(-1, 1, (10, 6))

    def rollout(env, seed=None):
        observations = [env.reset(seed=seed)[0]]
        observations += [env.step(action)[0] for action in actions]
        return np.stack(observations)

    reused = envs.make_env("noisy_state", "cheetah_run", seed=0)
    rollout(reused)
    first = rollout(reused, seed=4)
    fresh = rollout(envs.make_env("noisy_state", "cheetah_run", seed=4))
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(first, rollout(reused, seed=4))
    other = rollout(envs.make_env("noisy_state", "cheetah_run", seed=5))
    assert np.abs(first - other).min() > 0


@pytest.mark.parametrize("action, message", [
    (np.zeros(5), r"shape \(6,\)"),
    (np.zeros((1, 6)), r"shape \(6,\)"),
    (np.full(6, np.nan), "finite"),
    ("left", "numeric"),
])
def test_bad_actions_are_rejected(action, message):
    env = clean_env("cheetah_run", 0)
    env.reset()
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_step_before_reset_is_rejected():
    with pytest.raises(RuntimeError, match="reset"):
        clean_env("cheetah_run", 0).step(np.zeros(6))
