"""records.load_results on run directories written here in the contract's format (results/README.md)."""
import json
import pathlib

import numpy as np
import pytest

from harness import records


def write_run(root, method="sac", task="cartpole_swingup", seed=0, suite="noisy_state",
              context_length=32, returns=(100.0, 400.0, 700.0), eval_every=1000, status="done",
              wall_clock_s=60.0, experiment="exp", extra_lines=(), speeds=(50.0, 70.0),
              conditions=None, loop_speeds=(), extra_info=None, error=None):
    """Write one run directory in the contract's format; returns its path.

    The i-th eval point is at env step i * eval_every with return_mean returns[i]. `conditions`
    adds identity fields (variant, world_model, noise); None writes a record as older versions did.
    `loop_speeds` are the train lines' interval_env_steps_per_s, `extra_info` more run.json fields (e.g.
    gpu_seconds, machines), `error` a failed run's error (default: a NaN loss).
    """
    conditions = conditions or {}
    label = method + (f"+{conditions['variant']}" if conditions.get("variant") else "")
    noise = "" if conditions.get("obs_noise_std") is None else f"-obs{conditions['obs_noise_std']}"
    run_dir = (pathlib.Path(root) / experiment / (label + noise) / suite / task / f"ctx{context_length}"
               / f"seed{seed}")
    run_dir.mkdir(parents=True)
    env_steps = (len(returns) - 1) * eval_every
    info = {"experiment": experiment, "method": method, "suite": suite, "task": task, "seed": seed,
            "context_length": context_length, "status": status, "env_steps": env_steps,
            "total_env_steps": env_steps, "wall_clock_s": wall_clock_s, "git_commit": "abc",
            "versions": {"python": "3.11"}, "device": "cpu", "started_at": "2025-01-01T00:00:00+00:00",
            "updated_at": "2025-01-01T00:01:00+00:00", **conditions}
    if status == "failed":
        info["error"] = error or "Traceback (most recent call last):\nRuntimeError: loss is nan"
    (run_dir / "run.json").write_text(json.dumps(dict(info, **(extra_info or {}))))
    lines = []
    for i, ret in enumerate(returns):
        if i < len(speeds):
            lines.append({"kind": "train", "env_step": i * eval_every + 1,
                          "env_steps_per_s": speeds[i], "train/critic_loss": 0.5,
                          **({"interval_env_steps_per_s": loop_speeds[i]} if i < len(loop_speeds) else {})})
        lines.append({"kind": "eval", "env_step": i * eval_every, "return_mean": ret,
                      "return_std": 1.0, "returns": [ret - 1, ret + 1], "wall_clock_s": i * 10.0})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run_dir / "metrics.jsonl").write_text(text + "".join(extra_lines))
    (run_dir / "config.gin").write_text(f"Experiment.task = '{task}'\nExperiment.seed = {seed}\n")
    return run_dir


def test_finished_run_becomes_a_record_with_its_values(tmp_path):
    write_run(tmp_path, returns=(10.0, 250.5, 600.25), eval_every=500, wall_clock_s=12.5,
              speeds=(40.0, 80.0, 90.0))
    found, excluded = records.load_results(tmp_path)
    assert excluded == []
    (record,) = found
    assert record.path == "exp/sac/noisy_state/cartpole_swingup/ctx32/seed0"
    assert (record.method, record.task, record.seed, record.context_length) == ("sac", "cartpole_swingup", 0, 32)
    np.testing.assert_array_equal(record.eval_steps, [0, 500, 1000])
    np.testing.assert_array_equal(record.eval_returns, [10.0, 250.5, 600.25])
    assert record.final_return == 600.25
    assert record.wall_clock_s == 12.5 and record.env_steps == 1000
    assert record.env_steps_per_s == 80.0  # median of the train lines


@pytest.mark.parametrize("status, kind, words", [
    ("failed", "failed", "loss is nan"),
    ("running", "incomplete", "status 'running' at 2000/2000 env steps, last written 2025-01-01T00:01:00+00:00"),
])
def test_failed_and_running_runs_are_excluded_with_reason(tmp_path, status, kind, words):
    write_run(tmp_path, status=status)
    found, (excluded,) = records.load_results(tmp_path)
    assert found == []
    assert excluded.kind == kind and words in excluded.reason
    assert (excluded.method, excluded.task, excluded.seed) == ("sac", "cartpole_swingup", 0)


def test_corrupt_metrics_line_excludes_the_run_and_names_the_line(tmp_path):
    write_run(tmp_path, seed=0)
    write_run(tmp_path, seed=1, extra_lines=('{"kind": "eval", "env_st\n',))
    found, (excluded,) = records.load_results(tmp_path)
    assert [r.seed for r in found] == [0]
    assert excluded.kind == "invalid" and excluded.seed == 1
    assert "metrics.jsonl line 6: corrupt JSON" in excluded.reason


def test_run_without_eval_points_is_excluded(tmp_path):
    write_run(tmp_path, returns=())
    found, (excluded,) = records.load_results(tmp_path)
    assert found == [] and excluded.reason == "no eval points in metrics.jsonl"


@pytest.mark.parametrize("mutate, words", [
    (lambda d: (d / "run.json").write_text("{not json"), "run.json is not valid JSON"),
    (lambda d: (d / "run.json").write_text("[1, 2]"), "run.json is not a JSON object"),
    (lambda d: _edit_info(d, seed="zero"), "field 'seed' missing or not a int"),
    (lambda d: _edit_info(d, status="paused"), "status 'paused' is not one of"),
    (lambda d: (d / "metrics.jsonl").unlink(), "metrics.jsonl missing"),
    (lambda d: _append(d, '{"kind": "eval", "env_step": 2000, "return_mean": 5.0}\n'),
     "eval env_step 2000 does not increase"),
    (lambda d: _append(d, '{"kind": "eval", "env_step": 3000, "return_mean": NaN}\n'),
     "needs an integer env_step and a finite return_mean"),
    (lambda d: _append(d, '[]\n'), "not a JSON object"),
])
def test_invalid_files_give_one_line_reasons(tmp_path, mutate, words):
    mutate(write_run(tmp_path))
    found, (excluded,) = records.load_results(tmp_path)
    assert found == [] and excluded.kind == "invalid"
    assert words in excluded.reason and "\n" not in excluded.reason


def test_the_same_cell_in_two_experiments_is_two_runs(tmp_path):
    write_run(tmp_path, experiment="a", returns=(1.0,))
    write_run(tmp_path, experiment="b", returns=(2.0,))
    found, excluded = records.load_results(tmp_path)
    assert [(r.experiment, r.final_return) for r in found] == [("a", 1.0), ("b", 2.0)] and not excluded


def test_the_same_cell_twice_in_one_experiment_is_counted_once(tmp_path):
    write_run(tmp_path, returns=(1.0,))
    copy = tmp_path / "exp" / "zz_copy"
    copy.mkdir()
    for name in ("run.json", "metrics.jsonl"):
        (copy / name).write_bytes((tmp_path / "exp/sac/noisy_state/cartpole_swingup/ctx32/seed0" / name).read_bytes())
    (kept,), (duplicate,) = records.load_results(tmp_path)
    assert duplicate.path == "exp/zz_copy" and "duplicate of exp/sac" in duplicate.reason


def test_identity_fields_are_read_and_older_records_get_defaults(tmp_path):
    write_run(tmp_path, conditions={"variant": "no_mamba", "world_model": "models.kalmamba.KalMamba",
                                    "obs_noise_std": 0.3, "action_noise_std": 0.1}, method="kalmamba")
    write_run(tmp_path, experiment="old")
    new, old = sorted(records.load_results(tmp_path)[0], key=lambda r: r.experiment)
    assert (new.variant, new.world_model, new.obs_noise_std, new.action_noise_std) == (
        "no_mamba", "models.kalmamba.KalMamba", 0.3, 0.1)
    assert (old.variant, old.world_model, old.obs_noise_std, old.action_noise_std) == ("", None, None, None)


def test_interrupted_runs_are_listed_as_incomplete_with_the_signal(tmp_path):
    run_dir = write_run(tmp_path, status="done")
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps(dict(info, status="interrupted", interrupted_by="SIGTERM")))
    _, (excluded,) = records.load_results(tmp_path)
    assert excluded.kind == "incomplete" and "interrupted by SIGTERM" in excluded.reason


def test_manifest_lists_runs_that_never_wrote_run_json(tmp_path):
    done = write_run(tmp_path)
    manifest = {"runs": [
        {"run_dir": str(done), "status": "done", "method": "sac", "task": "cartpole_swingup", "seed": 0},
        {"run_dir": "sac/noisy_state/cartpole_swingup/ctx32/seed1", "status": "failed", "exit_code": 2,
         "error": "gin file not found", "method": "sac", "task": "cartpole_swingup", "seed": 1}]}
    (tmp_path / "exp" / "sweep.json").write_text(json.dumps(manifest))
    found, (excluded,) = records.load_results(tmp_path)
    assert len(found) == 1
    assert excluded.path == "exp/sac/noisy_state/cartpole_swingup/ctx32/seed1"
    assert excluded.kind == "failed" and excluded.seed == 1
    assert excluded.reason == "sweep status 'failed' (exit code 2), no run.json written: gin file not found"


def test_unusable_results_directory_raises_results_error(tmp_path):
    with pytest.raises(records.ResultsError, match="results directory not found"):
        records.load_results(tmp_path / "missing")
    with pytest.raises(records.ResultsError, match="no runs under"):
        records.load_results(tmp_path)


def _edit_info(run_dir, **changes):
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, **changes}))


def _append(run_dir, text):
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(text)


def test_run_directories_are_not_searched_below(tmp_path):
    run_dir = write_run(tmp_path)
    (run_dir / "checkpoint" / "replay").mkdir(parents=True)
    (run_dir / "checkpoint" / "replay" / "run.json").write_text("not a run")
    found, excluded = records.load_results(tmp_path)
    assert len(found) == 1 and excluded == []


def test_at_env_steps_reads_each_run_as_it_stood_then(tmp_path):
    # eval points at 0, 1000, 2000, 3000; train lines at 1, 1001, 2001 with cumulative speeds
    write_run(tmp_path, method="sac", returns=(1.0, 2.0, 3.0, 4.0), speeds=(10.0, 20.0, 40.0))
    rssm = write_run(tmp_path, method="rssm", returns=(1.0, 5.0, 6.0), status="running")  # stopped at 2000
    with open(rssm / "metrics.jsonl", "a") as metrics:
        metrics.write('{"kind": "train", "env_st')  # killed while writing a line
    write_run(tmp_path, method="vrkn", returns=(1.0, 7.0, 8.0, 9.0), status="failed")  # failed after 3000
    write_run(tmp_path, method="kalmamba", returns=(1.0, 7.0), status="failed")        # failed before 2000
    write_run(tmp_path, method="dreamer", returns=(1.0, 7.0))                           # done before 2000
    found, excluded = records.load_results(tmp_path, at_env_steps=2000)
    by_method = {r.method: r for r in found}
    assert sorted(by_method) == ["rssm", "sac", "vrkn"]
    np.testing.assert_array_equal(by_method["sac"].eval_steps, [0, 1000, 2000])
    np.testing.assert_array_equal(by_method["sac"].eval_returns, [1.0, 2.0, 3.0])
    assert by_method["sac"].env_steps == 2000 and by_method["sac"].ended_as is None
    assert by_method["sac"].wall_clock_s == 2000 / 20.0  # the speed of the last train line at or before 2000 (1001)
    assert by_method["rssm"].final_return == 6.0 and "running" in by_method["rssm"].ended_as
    assert by_method["vrkn"].final_return == 8.0 and "loss is nan" in by_method["vrkn"].ended_as
    reasons = {e.method: (e.kind, e.reason) for e in excluded}
    assert reasons["kalmamba"][0] == "failed" and "loss is nan" in reasons["kalmamba"][1]
    assert reasons["dreamer"] == ("excluded", "no eval point at env step 2000 (last at or before it: 1000)")
    # without it: only the finished runs, at their last eval point
    found, _ = records.load_results(tmp_path)
    assert {r.method: r.final_return for r in found} == {"dreamer": 7.0, "sac": 4.0}
