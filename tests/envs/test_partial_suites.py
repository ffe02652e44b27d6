"""The partially observed suites against raw dm_control: missing_state withholds every observation
it should (zeros, nothing leaked) and shows the noisy state at its valid steps; occluded_image
equals the rendered frame outside the occluder mask."""
import numpy as np
import pytest

import envs
from envs import rendering, suites
from tests.envs.reference import raw_env, raw_step, to_simulator

NOISE = 0.3


def noise_stream(seed):
    """The observation-noise stream of an env seeded with `seed` (envs.dmc.DMCEnv._reseed)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])


def expected_noisy(observation, rng):
    state = np.concatenate([np.asarray(v, np.float64).ravel() for v in observation.values()])
    return (state + NOISE * rng.standard_normal(state.shape)).astype(np.float32), state.astype(np.float32)


@pytest.mark.parametrize("task", ["cartpole_swingup", "walker_walk"])
def test_missing_state_never_leaks_and_shows_the_noisy_state_at_valid_steps(task):
    seed, steps = 4, 300
    spec = suites.task_spec(task)
    env = envs.make_env("missing_state", task, seed, obs_noise_std=NOISE, action_noise_std=0.0, action_repeat=1)
    raw = raw_env(spec.dmc_domain, spec.dmc_task, seed)
    rng, actions = noise_stream(seed), np.random.default_rng(0).uniform(-1, 1, (steps, env.action_dim))

    obs, info = env.reset()
    noisy, clean = expected_noisy(raw.reset().observation, rng)
    assert info["obs_valid"] is True  # the reset observation is valid (VRKN)
    np.testing.assert_array_equal(obs, noisy)
    valid = [True]
    for action in actions:
        obs, _, _, _, info = env.step(action)
        time_step, _, _ = raw_step(raw, to_simulator(action, raw.action_spec()), 1)
        noisy, clean = expected_noisy(time_step.observation, rng)  # noise is drawn at every step
        np.testing.assert_array_equal(info["true_obs"], clean)
        np.testing.assert_array_equal(info["true_state"], clean)
        assert obs.dtype == np.float32 and obs.shape == env.obs_shape
        if info["obs_valid"]:
            np.testing.assert_array_equal(obs, noisy)
        else:
            assert not obs.any(), "an invalid step leaked its observation"
        valid.append(info["obs_valid"])
    gaps = np.diff(np.flatnonzero(valid))
    assert gaps.min() >= 4 and gaps.max() <= 8
    assert set(gaps) == {4, 5, 6, 7, 8}  # ~50 intervals: every gap of 4..8 occurs
    assert env.conditions == {"obs_noise_std": NOISE, "action_noise_std": 0.0}


def validity(env, seed, steps=60):
    env.reset(seed=seed)
    return [env.step(np.zeros(env.action_dim))[4]["obs_valid"] for _ in range(steps)]


def test_missing_pattern_is_seeded_and_restarts_with_the_seed():
    env = envs.make_env("missing_state", "cartpole_swingup", 0)
    twin = envs.make_env("missing_state", "cartpole_swingup", 5)
    first = validity(env, 3)
    assert validity(twin, 3) == first  # reset(seed) restarts every stream
    assert validity(env, 4) != first
    assert validity(env, 3) == first


def test_missing_gaps_are_configurable_and_checked():
    env = envs.make_env("missing_state", "cartpole_swingup", 1, missing_gaps=(2, 2))
    assert np.flatnonzero(validity(env, 1, 12)).tolist() == [1, 3, 5, 7, 9, 11]  # valid at 0, 2, 4, ...
    for bad in [(0, 3), (5, 4), (4,), (4.0, 8)]:
        with pytest.raises(ValueError, match="missing_gaps"):
            envs.make_env("missing_state", "cartpole_swingup", 1, missing_gaps=bad)


def raw_frame(physics, size, camera_id):
    return physics.render(size, size, camera_id=camera_id).transpose(2, 0, 1)


@pytest.mark.parametrize("task", ["cartpole_swingup", "quadruped_walk"])
def test_occluded_images_equal_raw_frames_outside_the_occluders(task):
    seed, size = 2, 64
    spec = suites.task_spec(task)
    env = envs.make_env("occluded_image", task, seed, image_size=size)
    raw = raw_env(spec.dmc_domain, spec.dmc_task, seed)
    rendering.use_fast_render_settings(raw.physics)
    actions = np.random.default_rng(0).uniform(-1, 1, (30, env.action_dim))

    obs, info = env.reset()
    raw.reset()
    masks = []
    for t in range(len(actions) + 1):
        if t:
            obs, _, _, _, info = env.step(actions[t - 1])
            raw_step(raw, to_simulator(actions[t - 1], raw.action_spec()), env.action_repeat)
        frame, mask = raw_frame(raw.physics, size, spec.camera_id), info["occluder_mask"]
        assert obs.shape == env.obs_shape == (3, size, size) and obs.dtype == np.uint8
        np.testing.assert_array_equal(info["true_obs"], frame)
        np.testing.assert_array_equal(obs[:, ~mask], frame[:, ~mask])
        colours = {tuple(c) for c in obs[:, mask].T}
        assert len(colours) <= 3  # every covered pixel shows one of the 3 disks' colours
        masks.append(mask)
    masks = np.stack(masks)
    coverage = masks.mean(axis=(1, 2))
    assert 0.0 < coverage.mean() and coverage.max() <= 3 * np.pi * 0.2**2  # 3 disks of radius <= 0.2 S
    assert (masks[1:] != masks[:-1]).any(axis=(1, 2)).mean() > 0.9  # the disks move every step


def test_occluders_are_seeded_and_new_each_episode():
    def masks(env, seed):
        _, info = env.reset(seed=seed)
        return np.stack([info["occluder_mask"]] + [env.step(np.zeros(env.action_dim))[4]["occluder_mask"]
                                                   for _ in range(3)])

    env = envs.make_env("occluded_image", "cartpole_swingup", 0, image_size=32)
    twin = envs.make_env("occluded_image", "cartpole_swingup", 7, image_size=32)
    first = masks(env, 3)
    np.testing.assert_array_equal(masks(twin, 3), first)
    env.reset()  # a new episode without a seed: new disks
    assert not np.array_equal(masks(env, 4), first)
    none = envs.make_env("occluded_image", "cartpole_swingup", 0, image_size=32, occluders=0)
    obs, info = none.reset()
    assert not info["occluder_mask"].any() and np.array_equal(obs, info["true_obs"])
