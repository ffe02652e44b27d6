"""harness.loggers: metrics.jsonl is the record; TensorBoard and W&B (offline) mirror its numbers."""
import json

import gin
import pytest

from harness import loggers
from tests.harness.test_run import QUICK
from tests.harness.test_run_safety import main  # noqa: F401  (fixture)
from tests.harness.wandb_offline import read_offline_run


@pytest.fixture(autouse=True)
def clear_gin_afterwards():
    """In-process runs parse gin files (quick.gin's small sizes); later tests build with defaults."""
    yield
    gin.clear_config()


def test_scalars_of_a_line_skip_what_is_not_a_finite_number():
    train = {"kind": "train", "env_step": 2000, "env_steps_per_s": 50.0, "interval_env_steps_per_s": 80.0,
             "train/sac/critic_loss": 1.5, "train/episode_return": None, "updates": 3}
    assert loggers.scalars(train) == {"train/sac/critic_loss": 1.5, "perf/env_steps_per_s": 50.0,
                                      "perf/interval_env_steps_per_s": 80.0}
    evaluation = {"kind": "eval", "env_step": 0, "return_mean": 12.5, "return_std": float("nan"), "returns": [12.5]}
    assert loggers.scalars(evaluation) == {"eval/return": 12.5}


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory):
    """A short SAC run with --tensorboard and --wandb (offline, nothing leaves the machine)."""
    home = tmp_path_factory.mktemp("wandb_home")
    out = tmp_path_factory.mktemp("mirrored") / "run"
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(variable, str(home))
        patch.setenv("WANDB_MODE", "offline")
        from harness import run
        status = run.main([*QUICK, "--bind", "Schedule.total_env_steps = 2000", "--out", str(out),
                           "--tensorboard", "--wandb", "--wandb-project", "test"])
    assert status == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, lines


def test_wandb_offline_run_holds_the_metrics_and_the_identity_as_config(mirrored_run):
    out, lines = mirrored_run
    config, history = read_offline_run(out)
    info = json.loads((out / "run.json").read_text())
    for field in ("experiment", "method", "variant", "world_model", "suite", "task", "seed", "context_length",
                  "obs_noise_std", "action_noise_std", "git_commit"):
        assert config[field] == info[field], field
    assert config["gin"]["Schedule.total_env_steps"] == "2000"
    assert config["gin"]["Experiment.world_model"] == "@Identity"
    evals = {row["env_step"]: row["eval/return"] for row in history if "eval/return" in row}
    assert evals == {line["env_step"]: pytest.approx(line["return_mean"]) for line in lines if line["kind"] == "eval"}
    losses = {row["env_step"]: row["train/sac/critic_loss"] for row in history if "train/sac/critic_loss" in row}
    assert losses == {line["env_step"]: pytest.approx(line["train/sac/critic_loss"])
                      for line in lines if "train/sac/critic_loss" in line}  # not in prefill's line
    assert len(losses) == 1 and len(evals) == 3


def test_tensorboard_holds_the_same_numbers(mirrored_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, lines = mirrored_run
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    evals = {e.step: e.value for e in events.Scalars("eval/return")}
    assert evals == {line["env_step"]: pytest.approx(line["return_mean"], rel=1e-6)
                     for line in lines if line["kind"] == "eval"}
    assert "perf/interval_env_steps_per_s" in events.Tags()["scalars"]


def test_a_missing_wandb_package_is_a_user_error_before_anything_is_written(tmp_path, main, monkeypatch):  # noqa: F811
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    result = main(*QUICK, "--out", str(tmp_path / "run"), "--wandb")
    assert result.returncode == 2 and "pip install" in result.stderr and "wandb" in result.stderr
    assert not (tmp_path / "run").exists()
