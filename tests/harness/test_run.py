"""End-to-end runs of `python -m harness.run` on real dm_control with the quick budget."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from harness.config import REPO_ROOT

QUICK = ["--gin", "gin/sac_noisy.gin", "--gin", "gin/quick.gin", "--no-progress"]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.run", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_quick_run_writes_the_run_directory_contract(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*QUICK, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "done"
    assert {k: info[k] for k in ("method", "variant", "world_model", "suite", "task", "seed", "context_length",
                                 "obs_noise_std", "action_noise_std")} == {
        "method": "sac", "variant": "", "world_model": "models.identity.Identity", "suite": "noisy_state",
        "task": "cartpole_swingup", "seed": 0, "context_length": 32, "obs_noise_std": 0.3, "action_noise_std": 0.3}
    assert info["env_steps"] == 3000 and info["wall_clock_s"] > 0
    assert {"git_commit", "versions", "device", "started_at"} <= info.keys()
    lines = read_lines(out / "metrics.jsonl")
    evals = [line for line in lines if line["kind"] == "eval"]
    assert [e["env_step"] for e in evals] == [0, 1000, 2000, 3000]
    for e in evals:
        assert len(e["returns"]) == 2 and 0 <= e["return_mean"] <= 1000
    train = [line for line in lines if line["kind"] == "train"]
    assert train and all(line["env_steps_per_s"] > 0 for line in train)
    assert any("train/sac/critic_loss" in line for line in train)
    config = (out / "config.gin").read_text()
    assert "Experiment.world_model = @Identity" in config and "Schedule.total_env_steps = 3000" in config
    assert (out / "checkpoint" / "state.pt").is_file()


def test_resume_after_sigkill_has_exactly_the_uninterrupted_eval_points(tmp_path):
    _kill_resume_and_check(tmp_path, QUICK)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_in_graph_mode_has_exactly_the_uninterrupted_eval_points(tmp_path):
    """KalMamba with its update and acting step replayed as CUDA graphs, killed and resumed. Without
    mamba_ssm's kernel, not deterministic on the GPU (docs/leaderboard.md), so that the comparison is exact."""
    _kill_resume_and_check(tmp_path, ["--gin", "gin/kalmamba_noisy.gin", "--gin", "gin/quick.gin", "--no-progress",
                                      "--device", "cuda", "--bind", "LatentSAC.compile = 'graph'",
                                      "--bind", "KalMamba.use_kernel = False"])


def _kill_resume_and_check(tmp_path, args):
    out = tmp_path / "run"
    budget = ["--bind", "Schedule.total_env_steps = 5000"]
    process = subprocess.Popen([sys.executable, "-m", "harness.run", *args, *budget, "--out", str(out)],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and '"env_step": 2000, "kind": "eval"' in metrics.read_text():
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert json.loads((out / "run.json").read_text())["status"] == "running"

    again = run_cli(*args, *budget, "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run_cli(*args, *budget, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lines = read_lines(metrics)  # every line parses: nothing truncated
    assert [line["env_step"] for line in lines if line["kind"] == "eval"] == [0, 1000, 2000, 3000, 4000, 5000]
    assert [line["env_step"] for line in lines if line["kind"] == "train"] == [1000, 2000, 3000, 4000, 5000]
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    assert run_cli(*args, *budget, "--out", str(out), "--resume").returncode == 0  # already done

    assert_same_as_uninterrupted(lines, [*args, *budget], tmp_path / "uninterrupted")


# Metrics-line fields that measure time (online and offline runs), not learning.
TIMINGS = frozenset({"wall_clock_s", "env_steps_per_s", "interval_env_steps_per_s", "updates_per_s",
                     "act_ms_per_step"})


def learning_values(line):
    """A metrics line without its timings: what an exact resume must reproduce bit for bit."""
    return {key: value for key, value in line.items() if key not in TIMINGS}


def assert_same_as_uninterrupted(lines, args, out):
    """`lines`, the metrics of a resumed run, equal those of `python -m harness.run *args` in one go."""
    uninterrupted = run_cli(*args, "--out", str(out))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert [learning_values(line) for line in lines] == \
        [learning_values(line) for line in read_lines(out / "metrics.jsonl")]


@pytest.mark.parametrize("bad, message", [
    (["--bind", "Experiment.no_such_param = 1"], "no_such_param"),
    (["--bind", "Experiment.task = 'cartpole_fly'"], "cartpole_fly"),
    (["--bind", "Experiment.suite = 'audio'"], "audio"),
    (["--gin", "gin/does_not_exist.gin"], "does_not_exist"),
    (["--bind", "Schedule.eval_every = 0"], "eval_every"),
    (["--bind", "Experiment.context_length = 1"], "context_length"),
    (["--bind", "Experiment.world_model = @StateEncoder"], "error"),  # a factory of the wrong kind
])
def test_user_errors_exit_2_with_one_message_and_write_nothing(tmp_path, bad, message):
    out = tmp_path / "run"
    result = run_cli(*QUICK, *bad, "--out", str(out))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_existing_run_is_never_overwritten_without_asking(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"status": "done"}')
    result = run_cli(*QUICK, "--out", str(out))
    assert result.returncode == 2 and "exists" in result.stderr
    assert (out / "run.json").read_text() == '{"status": "done"}'
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_corrupt_run_json_or_a_file_as_run_directory_exit_2_and_stay_untouched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"status": "runn')
    result = run_cli(*QUICK, "--out", str(out), "--resume")
    assert result.returncode == 2 and "run.json" in result.stderr and "Traceback" not in result.stderr
    assert (out / "run.json").read_text() == '{"status": "runn'
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run_cli(*QUICK, "--out", str(afile))
    assert result.returncode == 2 and "is a file" in result.stderr and afile.read_text() == "x"
