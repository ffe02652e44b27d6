"""End to end: a quick KalMamba run on the missing_state suite writes belief-quality keys into every
eval line and keeps the validity flag in its replay; the noisy_state suite's eval lines stay as
they were."""
import json
import subprocess
import sys

import numpy as np
import pytest

from harness.config import REPO_ROOT


def run(tmp_path, *gin_files):
    out = tmp_path / "run"
    args = [arg for path in gin_files for arg in ("--gin", path)]
    result = subprocess.run([sys.executable, "-m", "harness.run", *args, "--gin", "gin/quick.gin", "--no-progress",
                             "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    evals = [line for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if line["kind"] == "eval"]
    return out, evals


@pytest.mark.slow
def test_missing_state_run_reports_belief_quality(tmp_path):
    out, evals = run(tmp_path, "gin/kalmamba_missing_state.gin")
    assert json.loads((out / "run.json").read_text())["suite"] == "missing_state"
    assert [e["env_step"] for e in evals] == [0, 1000, 2000, 3000]
    for line in evals:
        for probe in ("ridge", "mlp"):
            assert -1e6 < line[f"belief/{probe}_r2"] <= 1.0
            assert len(line[f"belief/{probe}_r2_dims"]) == 5  # cartpole's state
            assert np.isfinite(line[f"belief/{probe}_nll"])
            assert 0.0 <= line[f"belief/{probe}_coverage_1sigma"] <= line[f"belief/{probe}_coverage_2sigma"] <= 1.0
        for k in (1, 5, 10, 25):
            assert line[f"belief/open_loop_mse_k{k}"] >= 0.0
        assert line["belief/probe_fit_steps"] == line["belief/probe_test_steps"] == 125  # one 125-step episode each
        assert "nonfinite" not in line
    chunks = sorted((out / "checkpoint" / "replay").glob("chunk_*.npz"))
    valid = np.concatenate([np.load(chunk)["obs_valid"] for chunk in chunks])
    assert 0.1 < valid.mean() < 0.3  # valid every 4-8 steps (and at each reset)
    config = (out / "config.gin").read_text()
    assert "BeliefMetrics.enabled = True" in config


@pytest.mark.slow
def test_noisy_state_eval_lines_have_no_belief_keys(tmp_path):
    _, evals = run(tmp_path, "gin/sac_noisy.gin")
    assert evals and not any(key.startswith("belief/") for line in evals for key in line)
