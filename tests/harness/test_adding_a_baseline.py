"""Follows docs/adding_a_baseline.md with the toy model of tests/harness/toy_baseline.py."""
import json
import os
import subprocess
import sys

import pytest
import torch

from harness.config import REPO_ROOT
from tests.harness.toy_baseline import ExponentialFilter

# Step 3: the model's gin file (the module is imported here instead of being listed in
# harness/config.py, because it lives in tests/) and the experiment file that includes it.
TOY_MODEL_GIN = """\
import tests.harness.toy_baseline

Experiment.world_model = @ExponentialFilter
ExponentialFilter.init_smoothing = 0.3
"""

TOY_EXPERIMENT_GIN = """\
include 'gin/base.gin'
include 'gin/suites/noisy_state.gin'
include '{model}'

Experiment.method = 'toy_filter'
"""

SWEEP_GIN = """\
import harness.sweep

Sweep.name = 'toy_comparison'
Sweep.methods = ['{toy}', 'gin/sac_noisy.gin']
Sweep.tasks = ['cartpole_swingup']
Sweep.seeds = [0]
Sweep.overlays = ['gin/quick.gin']
Sweep.results_dir = '{results}'
"""


def test_step_2_observe_equals_successive_steps():
    torch.manual_seed(0)
    model = ExponentialFilter(obs_shape=(5,), action_dim=2).double().eval()
    obs = torch.randn(3, 7, 5, dtype=torch.float64)
    prev_action = torch.randn(3, 7, 2, dtype=torch.float64)
    is_first = torch.zeros(3, 7, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 4] = True
    beliefs, last = model.observe(obs, prev_action, is_first)
    state = model.initial_state(3)
    for t in range(7):
        state = model.step(state, obs[:, t], prev_action[:, t], is_first[:, t])
        for name in state:
            torch.testing.assert_close(beliefs[name][:, t], state[name], rtol=0, atol=1e-12)
    torch.testing.assert_close(last["mean"], state["mean"], rtol=0, atol=0)
    # the filter itself, by hand: a = 0.5, restart at the reset
    expected = obs[1, 4] * 0.5 ** 2 + obs[1, 5] * 0.5 * 0.5 + obs[1, 6] * 0.5
    torch.testing.assert_close(beliefs["mean"][1, 6], expected.double(), rtol=0, atol=1e-12)


def test_toy_loss_trains_its_parameter():
    model = ExponentialFilter(obs_shape=(2,), action_dim=1)
    batch = {"obs": torch.randn(4, 9, 2), "prev_action": torch.zeros(4, 9, 1),
             "is_first": torch.zeros(4, 9, dtype=torch.bool)}
    loss, metrics, beliefs = model.loss(batch)
    loss.backward()
    assert model.smoothing_logit.grad is not None and model.smoothing_logit.grad != 0
    assert set(metrics) == {"model/prediction_error", "model/smoothing"}
    assert beliefs["mean"].shape == (4, 9, 2)


@pytest.mark.slow
def test_toy_baseline_from_gin_file_to_leaderboard(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "toy.gin").write_text(TOY_MODEL_GIN)
    toy = tmp_path / "toy_noisy.gin"
    toy.write_text(TOY_EXPERIMENT_GIN.format(model=tmp_path / "models" / "toy.gin"))
    sweep = tmp_path / "toy_comparison.gin"
    sweep.write_text(SWEEP_GIN.format(toy=toy, results=tmp_path / "results"))
    env = dict(os.environ, MUJOCO_GL="egl")
    result = subprocess.run([sys.executable, "-m", "harness.sweep", "--gin", str(sweep), "--workers", "2"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "results" / "toy_comparison" / "toy_filter" / "noisy_state" / "cartpole_swingup" / "ctx32" / "seed0"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    assert "ExponentialFilter.init_smoothing = 0.3" in (run_dir / "config.gin").read_text()
    train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("train/model/prediction_error" in line for line in train)
    report = subprocess.run([sys.executable, "-m", "harness.report", str(tmp_path / "results" / "toy_comparison"),
                             "--reps", "100"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr
    board = (tmp_path / "results" / "toy_comparison" / "report" / "leaderboard.md").read_text()
    assert "| toy_filter |" in board and "| sac |" in board
