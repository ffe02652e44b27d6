import pytest

import envs
from envs import suites
from tests.envs.reference import raw_env  # noqa: F401  (imports envs before dm_control)


def test_task_table_matches_dm_control():
    from envs import rendering

    dm_suite = rendering.load_suite()
    dm_tasks = set(dm_suite.ALL_TASKS)
    for name in suites.ALL_TASKS:
        spec = suites.task_spec(name)
        assert (spec.dmc_domain, spec.dmc_task) in dm_tasks, name
    # every benchmarking task of the listed domains (quadruped's are all tagged "extra")
    for domain, tasks in suites.TASKS.items():
        dmc_domain = suites.DMC_DOMAIN.get(domain, domain)
        tagged = dm_suite.EXTRA if domain == "quadruped" else dm_suite.BENCHMARKING
        assert set(tasks) == {task for d, task in tagged if d == dmc_domain}, domain
    assert set(suites.DEFAULT_TASKS) <= set(suites.ALL_TASKS)
    assert len(suites.ALL_TASKS) == len(set(suites.ALL_TASKS)) == 20


def test_settings_from_the_issue():
    assert suites.DEFAULT_TASKS == (
        "cartpole_swingup", "cheetah_run", "cup_catch", "finger_spin",
        "quadruped_walk", "reacher_easy", "walker_walk", "walker_run")
    repeats = {suites.task_spec(name).domain: suites.task_spec(name).action_repeat for name in suites.ALL_TASKS}
    assert repeats == {"cartpole": 8, "cheetah": 4, "cup": 4, "reacher": 4,
                       "walker": 2, "finger": 2, "quadruped": 2, "hopper": 2}
    cameras = {name: suites.task_spec(name).camera_id for name in suites.DEFAULT_TASKS}
    assert cameras == {name: 2 if name.startswith("quadruped") else 0 for name in suites.DEFAULT_TASKS}


@pytest.mark.parametrize("name, domain, task", [
    ("cup_catch", "ball_in_cup", "catch"),
    ("finger_turn_easy", "finger", "turn_easy"),
    ("cartpole_swingup_sparse", "cartpole", "swingup_sparse"),
])
def test_task_names_parse(name, domain, task):
    spec = suites.task_spec(name)
    assert (spec.name, spec.dmc_domain, spec.dmc_task) == (name, domain, task)


@pytest.mark.parametrize("bad", ["ball_in_cup_catch", "cartpole", "cartpole_", "walker_fly", "", None, 3])
def test_unknown_task_lists_valid_ones(bad):
    with pytest.raises(ValueError, match="unknown task") as error:
        envs.make_env("noisy_state", bad, seed=0)
    assert "cup_catch" in str(error.value) and "quadruped_walk" in str(error.value)


@pytest.mark.parametrize("bad", ["images", "state", "", None])
def test_unknown_suite_lists_valid_ones(bad):
    with pytest.raises(ValueError, match=r"unknown suite .*valid suites: image, noisy_state, missing_state, occluded_image"):
        envs.make_env(bad, "cartpole_swingup", seed=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"action_repeat": 0}, "action_repeat"),
    ({"action_repeat": 2.0}, "action_repeat"),
    ({"obs_noise_std": -0.1}, "obs_noise_std"),
    ({"action_noise_std": float("nan")}, "action_noise_std"),
    ({"image_size": 0}, "image_size"),
])
def test_invalid_values_are_rejected(kwargs, message):
    kwargs = {"suite": "noisy_state", "task": "cartpole_swingup", "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        envs.make_env(**kwargs)


def test_gin_bindings_reach_make_env():
    import gin

    gin.bind_parameter("make_env.obs_noise_std", 0.0)
    gin.bind_parameter("make_env.action_repeat", 5)
    try:
        env = envs.make_env("noisy_state", "cheetah_run", seed=0)
        obs, info = env.reset()
    finally:
        gin.clear_config()
    assert env.action_repeat == 5 and env.max_episode_steps == 200
    assert (obs == info["true_obs"]).all()
