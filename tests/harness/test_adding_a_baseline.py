"""Follows docs/adding_a_baseline.md with the toy model of tests/harness/toy_baseline.py, named
`my_model` (two words: nothing may split a model name at '_').

The slow test applies the doc's steps to a copy of the repository, checks that they changed only the
files the doc lists (nothing under harness/), then runs the doc's commands in the copy: the gin-file
tests, the smoke run, the model benchmark, a sweep and the leaderboard.
"""
import hashlib
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from harness.config import REPO_ROOT
from tests.harness.toy_baseline import ExponentialFilter

DOC = REPO_ROOT / "docs" / "adding_a_baseline.md"
COPIED = ("agents", "envs", "gin", "harness", "models", "tests", "setup.cfg")

# Step 3: the model's gin file, the include line, the experiment file.
MODEL_GIN = """\
# My model: an exponential filter (tests/harness/toy_baseline.py).
import models.my_model

ExponentialFilter.init_smoothing = 0.3        # initial weight of the previous belief
"""
INCLUDE_LINE = "include 'gin/models/my_model.gin'\n"
# Step 2: one line in the model table (and its import).
TABLE_IMPORT = "from models.my_model import ExponentialFilter\n"
TABLE_LINE = '    "my_model": ModelEntry(ExponentialFilter, {}, uses_networks=False, images=False),\n'

EXPERIMENT_GIN = """\
# My model + latent SAC on the noisy state suite.
include 'gin/base.gin'
include 'gin/suites/noisy_state.gin'

Experiment.world_model = @ExponentialFilter
"""
SWEEP_GIN = """\
import harness.sweep_plan

Sweep.name = 'my_comparison'
Sweep.methods = ['gin/sac_noisy.gin', 'gin/my_model_noisy.gin']
Sweep.tasks = ['cartpole_swingup']
Sweep.seeds = [0]
Sweep.context_lengths = [32]
Sweep.overlays = ['gin/quick.gin']
Sweep.bindings = ['Schedule.total_env_steps = 2000']
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
        state = model.step(obs[:, t], prev_action[:, t], is_first[:, t], state)
        for name in state:
            torch.testing.assert_close(beliefs[name][:, t], state[name], rtol=0, atol=1e-12)
    torch.testing.assert_close(last["mean"], state["mean"], rtol=0, atol=0)
    # the filter itself, by hand: a = 0.5, restart at the reset
    expected = obs[1, 4] * 0.5 ** 2 + obs[1, 5] * 0.5 * 0.5 + obs[1, 6] * 0.5
    torch.testing.assert_close(beliefs["mean"][1, 6], expected.double(), rtol=0, atol=1e-12)


def test_toy_loss_trains_its_parameter():
    model = ExponentialFilter(obs_shape=(2,), action_dim=1)
    batch = {"obs": torch.randn(4, 9, 2), "prev_action": torch.zeros(4, 9, 1),
             "reward": torch.zeros(4, 9), "is_first": torch.zeros(4, 9, dtype=torch.bool)}
    loss, metrics, beliefs = model.loss(batch)
    loss.backward()
    assert model.smoothing_logit.grad is not None and model.smoothing_logit.grad != 0
    assert set(metrics) == {"model/prediction_error", "model/smoothing"}
    assert beliefs["mean"].shape == (4, 9, 2)


def test_the_doc_lists_no_file_under_harness():
    touched = _doc_files()
    assert "models/my_model.py" in touched and "gin/models/all.gin" in touched
    assert not any(path.startswith("harness") for path in touched)


@pytest.mark.slow
def test_following_the_doc_touches_no_harness_file_and_reaches_the_leaderboard(tmp_path):
    repo = tmp_path / "repo"
    _copy_repository(repo)
    before = _snapshot(repo)
    # Step 1: the model. Step 3: its gin file, the include line, its experiment file.
    shutil.copy(REPO_ROOT / "tests" / "harness" / "toy_baseline.py", repo / "models" / "my_model.py")
    (repo / "gin" / "models" / "my_model.gin").write_text(MODEL_GIN)
    with open(repo / "gin" / "models" / "all.gin", "a") as f:
        f.write(INCLUDE_LINE)
    (repo / "gin" / "my_model_noisy.gin").write_text(EXPERIMENT_GIN)
    table = repo / "tests" / "models" / "model_table.py"
    text = table.read_text().replace("from models.vrkn import VRKN\n", "from models.vrkn import VRKN\n" + TABLE_IMPORT)
    table.write_text(text.replace("MODELS = {\n", "MODELS = {\n" + TABLE_LINE))
    changed = _changed(before, _snapshot(repo))
    assert changed == {"models/my_model.py", "gin/models/my_model.gin", "gin/models/all.gin",
                       "gin/my_model_noisy.gin", "tests/models/model_table.py"}
    assert changed <= _doc_files()
    # Step 2: the contract tests run on the new model.
    contract = _run(repo, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", "my_model",
                    "tests/models/test_world_models.py")
    assert " passed" in contract and " failed" not in contract

    # Every gin file still parses and builds, the new experiment among them.
    _run(repo, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "tests/test_gin_files.py")
    # Step 4: the smoke run and the benchmark.
    _run(repo, "-m", "harness.run", "--gin", "gin/my_model_noisy.gin", "--gin", "gin/quick.gin",
         "--out", str(tmp_path / "my_model_smoke"))
    info = json.loads((tmp_path / "my_model_smoke" / "run.json").read_text())
    assert info["status"] == "done" and info["method"] == "my_model"
    assert "ExponentialFilter.init_smoothing = 0.3" in (tmp_path / "my_model_smoke" / "config.gin").read_text()
    train = [json.loads(line) for line in (tmp_path / "my_model_smoke" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/model/prediction_error" in line for line in train)
    bench = _run(repo, "-m", "harness.bench", "models", "--gin", "gin/my_model_noisy.gin", "gin/kalmamba_noisy.gin",
                 "--overlay", "gin/quick.gin", "--devices", "cpu", "--lengths", "3", "--batch", "1",
                 "--repeats", "1", "--warmup", "0")
    assert "| T | my_model ms | kalmamba ms | kalmamba / my_model |" in bench
    # Step 5: a sweep; step 6: the leaderboard.
    sweep = repo / "gin" / "sweeps" / "my_comparison.gin"
    sweep.write_text(SWEEP_GIN.format(results=tmp_path / "results"))
    _run(repo, "-m", "harness.sweep", "--gin", "gin/sweeps/my_comparison.gin", "--workers", "2")
    run_dir = tmp_path / "results" / "my_comparison" / "my_model" / "noisy_state" / "cartpole_swingup" / "ctx32" / "seed0"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    _run(repo, "-m", "harness.report", str(tmp_path / "results" / "my_comparison"), "--reps", "100")
    board = (tmp_path / "results" / "my_comparison" / "report" / "leaderboard.md").read_text()
    assert "| my_model |" in board and "| sac |" in board
    sweep.unlink()
    assert not any(path.startswith("harness/") for path in _changed(before, _snapshot(repo)))


def _doc_files():
    """The paths of the doc's 'What you touch' table."""
    section = DOC.read_text().split("## What you touch", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([\w./]+)`", section, flags=re.M))


def _copy_repository(repo):
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=ignore)
        else:
            shutil.copy(source, repo / name)


def _snapshot(repo):
    return {path.relative_to(repo).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in repo.rglob("*") if path.is_file() and "__pycache__" not in path.parts}


def _changed(before, after):
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def _run(repo, *args):
    result = subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout
