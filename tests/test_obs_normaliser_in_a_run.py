"""The runner fits the observation statistics once, when prefill ends, on the prefill episodes, and
a resumed run keeps the checkpoint's statistics instead of fitting again."""
import gin
import numpy as np
import pytest
import torch

from harness import config
from harness.rundir import RunDirectory
from harness.runner import Runner
from harness.experiment import Schedule


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def _runner(path, total_env_steps):
    config.parse(["gin/sac_noisy.gin", "gin/quick.gin"],
                 [f"Schedule.total_env_steps = {total_env_steps}", "Schedule.eval_episodes = 1",
                  "Schedule.agent_steps_per_update = 100"])
    experiment = config.make_experiment()
    run_dir = RunDirectory(path)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    return Runner(experiment, run_dir, schedule=Schedule(), progress=False)


@pytest.mark.slow
def test_fitted_once_at_the_end_of_prefill_and_kept_on_resume(tmp_path):
    runner = _runner(tmp_path / "run", 2000)
    runner.run(None)
    normaliser = runner.agent.obs_normaliser
    prefill = runner.replay.data["obs"][:126]  # the first (random) episode: 1000 env steps / repeat 8, plus reset
    assert runner.replay.data["is_first"][126] and not runner.replay.data["is_first"][1:126].any()
    np.testing.assert_allclose(normaliser.mean.numpy(), prefill.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(normaliser.std.numpy(), prefill.astype(np.float64).std(0), rtol=1e-6)
    mean, std = normaliser.mean.clone(), normaliser.std.clone()

    resumed = _runner(tmp_path / "run", 3000)
    calls = []
    fit = resumed.agent.fit_obs_normaliser
    resumed.agent.fit_obs_normaliser = lambda obs: (calls.append(len(obs)), fit(obs))
    resumed.run(resumed.run_dir.load_state(map_location="cpu"))  # as harness.run resumes
    assert calls == []  # the statistics came from the checkpoint
    assert torch.equal(resumed.agent.obs_normaliser.mean, mean) and torch.equal(resumed.agent.obs_normaliser.std, std)
