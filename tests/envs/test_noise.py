"""Observation and action noise of the noisy_state suite: statistics, clipping, where it acts."""
import math

import numpy as np
import pytest

import envs
from tests.envs.reference import flat_state, raw_env, raw_step


def normal_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def clipped_normal_std(sigma):
    """Std of clip(eps, -1, 1), eps ~ N(0, sigma^2). With c = 1 / sigma its second moment is
    sigma^2 [(2 Phi(c) - 1) - 2 c phi(c)] + 2 (1 - Phi(c))."""
    c = 1.0 / sigma
    density = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    second_moment = sigma**2 * ((2 * normal_cdf(c) - 1) - 2 * c * density) + 2 * (1 - normal_cdf(c))
    return math.sqrt(second_moment)


def rollout(env, actions):
    """Returns stacked (obs, true_obs, applied_action) over reset plus one step per action."""
    obs, info = env.reset()
    observations, true_observations, applied = [obs], [info["true_obs"]], []
    for action in actions:
        obs, _, _, _, info = env.step(action)
        observations.append(obs)
        true_observations.append(info["true_obs"])
        applied.append(info["applied_action"])
    return np.stack(observations), np.stack(true_observations), np.stack(applied)


@pytest.mark.parametrize("std", [0.3, 1.7])
def test_observation_noise_statistics(std):
    seed, steps = 2, 240
    env = envs.make_env("noisy_state", "cheetah_run", seed, obs_noise_std=std, action_noise_std=0.0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.action_dim))
    noisy, clean, _ = rollout(env, actions)

    # the noise does not touch the dynamics: the clean state is raw dm_control's
    raw = raw_env("cheetah", "run", seed)
    expected = [flat_state(raw.reset().observation)]
    expected += [flat_state(raw_step(raw, action, env.action_repeat)[0].observation) for action in actions]
    np.testing.assert_array_equal(clean, np.stack(expected))

    residual = noisy.astype(np.float64) - clean
    n = residual.size
    assert abs(residual.std() - std) < 4 * std / math.sqrt(2 * n)
    assert abs(residual.mean()) < 4 * std / math.sqrt(n)
    per_dimension = residual.std(axis=0)
    assert np.all(np.abs(per_dimension - std) < 5 * std / math.sqrt(2 * len(residual)))
    lag_one = np.corrcoef(residual[1:].ravel(), residual[:-1].ravel())[0, 1]
    assert abs(lag_one) < 4 / math.sqrt(n)


def test_action_noise_statistics_and_where_it_acts():
    """Noise is drawn once per agent step, held over the repeat, and reaches the simulator."""
    seed, steps, std = 3, 240, 0.3
    env = envs.make_env("noisy_state", "cheetah_run", seed, obs_noise_std=0.0, action_noise_std=std)
    raw = raw_env("cheetah", "run", seed)
    env.reset()
    raw.reset()
    applied = []
    for _ in range(steps):
        obs, reward, _, _, info = env.step(np.zeros(env.action_dim))
        np.testing.assert_array_equal(env.physics.data.ctrl, info["applied_action"])
        time_step, raw_reward, _ = raw_step(raw, info["applied_action"], env.action_repeat)
        np.testing.assert_array_equal(obs, flat_state(time_step.observation))
        assert reward == raw_reward
        applied.append(info["applied_action"])
    applied = np.stack(applied)
    n = applied.size
    assert abs(applied.std() - clipped_normal_std(std)) < 4 * std / math.sqrt(2 * n)
    assert abs(applied.mean()) < 4 * std / math.sqrt(n)


def test_action_noise_is_clipped_to_the_bounds():
    """a = 0.8, sigma = 1: a + eps is above 1 with probability 1 - Phi(0.2), below -1 with Phi(-1.8)."""
    env = envs.make_env("noisy_state", "cheetah_run", 4, obs_noise_std=0.0, action_noise_std=1.0)
    _, _, applied = rollout(env, np.full((240, env.action_dim), 0.8))
    n = applied.size
    assert applied.min() >= -1.0 and applied.max() <= 1.0
    for fraction, probability in ((np.mean(applied == 1.0), 1 - normal_cdf(0.2)),
                                  (np.mean(applied == -1.0), normal_cdf(-1.8))):
        assert abs(fraction - probability) < 4 * math.sqrt(probability * (1 - probability) / n)


def test_noisy_quadruped_commands_stay_inside_its_spec():
    env = envs.make_env("noisy_state", "quadruped_walk", 0, action_noise_std=3.0)
    low, high = env.physics.model.actuator_ctrlrange.T
    env.reset()
    commands = []
    for action in np.random.default_rng(1).uniform(-1, 1, (50, env.action_dim)):
        env.step(action)
        commands.append(env.physics.data.ctrl.copy())
    commands = np.stack(commands)
    assert np.all(commands >= low - 1e-12) and np.all(commands <= high + 1e-12)
    assert np.any(np.isclose(commands, high, rtol=0, atol=1e-12), axis=0).all()  # bounds are reached
    assert np.any(np.isclose(commands, low, rtol=0, atol=1e-12), axis=0).all()
