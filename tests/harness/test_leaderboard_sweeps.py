"""The three leaderboard sweeps (issue 11) plan exactly the cells the issue asks for, nothing is run;
per-method context lengths; flags every run receives; a run whose checkpoint stayed on another
machine starts again instead of failing its resume."""
import collections
import json

import gin
import pytest

from harness import config, executors, rundir, sweep as sweep_cli, sweep_plan, sweep_runner
from harness.config import REPO_ROOT

SWEEPS = REPO_ROOT / "gin" / "sweeps"
NOISY_TASKS = {"cartpole_swingup", "walker_walk", "cheetah_run", "finger_spin", "reacher_easy"}


def planned(study):
    sweep = sweep_plan.load_sweep([SWEEPS / f"leaderboard_{study}.gin"])
    return sweep, sweep_plan.plan(sweep)


def row(run):
    return f"{run['method']}+{run['variant']}" if run["variant"] else run["method"]


def bound(run, *names):
    """The values the run's gin files and bindings give `names` (as harness.run would parse them)."""
    config.parse(run["gin_files"], run["bindings"])
    try:
        return [gin.query_parameter(name) for name in names]
    finally:
        gin.clear_config()


def cells(runs):
    """{row: {context length: {task: [seeds]}}}"""
    table = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    for run in runs:
        table[row(run)][run["context_length"]][run["task"]].append(run["seed"])
    return table


@pytest.mark.parametrize("study, runs", [("noisy100k", 150), ("context", 42), ("image100k", 18)])
def test_each_study_lands_under_results_leaderboard_v1_with_its_protocol(study, runs):
    sweep, plan = planned(study)
    assert len(plan) == runs and len({r["run_dir"] for r in plan}) == runs
    assert sweep.name == study and sweep.directory.as_posix() == f"results/leaderboard_v1/{study}"
    budget = bound(plan[0], "Schedule.total_env_steps", "Schedule.eval_every", "Schedule.eval_episodes",
                   "Schedule.agent_steps_per_update", "Schedule.prefill_env_steps", "Schedule.batch_size",
                   "Schedule.checkpoint_every")
    assert budget == [100_000, 10_000, 10, 2, 5_000, 32, 5_000]  # gin/base.gin's protocol at 100k env steps


def test_noisy100k_is_six_methods_five_tasks_five_seeds_at_context_32():
    _, plan = planned("noisy100k")
    table = cells(plan)
    assert set(table) == {"sac+noise_free", "sac", "kalmamba", "kalmamba+no_regulariser", "rssm", "vrkn"}
    for by_length in table.values():
        assert set(by_length) == {32}
        assert set(by_length[32]) == NOISY_TASKS
        assert all(sorted(seeds) == [0, 1, 2, 3, 4] for seeds in by_length[32].values())
    assert {r["suite"] for r in plan} == {"noisy_state"}
    noise = {row(r): bound(r, "make_env.obs_noise_std", "make_env.action_noise_std")
             for r in plan if r["task"] == "walker_walk" and r["seed"] == 0}
    assert noise == {"sac+noise_free": [0.0, 0.0], "sac": [0.3, 0.3], "kalmamba": [0.3, 0.3],
                     "kalmamba+no_regulariser": [0.3, 0.3], "rssm": [0.3, 0.3], "vrkn": [0.3, 0.3]}
    weights = {row(r): bound(r, "KalMamba.regulariser_weight")[0]
               for r in plan if r["method"] == "kalmamba" and r["task"] == "walker_walk" and r["seed"] == 0}
    assert weights == {"kalmamba": 1.0, "kalmamba+no_regulariser": 0.0}


def test_context_study_runs_512_and_1024_for_kalmamba_only():
    _, plan = planned("context")
    table = cells(plan)
    lengths = {r: sorted(by_length) for r, by_length in table.items()}
    assert lengths == {"kalmamba": [32, 64, 128, 256], "rssm": [32, 64, 128, 256], "vrkn": [32, 64, 128, 256],
                       "kalmamba+cross_episode": [512, 1024]}
    assert all(set(tasks) == {"walker_walk"} and sorted(tasks["walker_walk"]) == [0, 1, 2]
               for by_length in table.values() for tasks in by_length.values())
    windows = {(row(r), r["context_length"]): bound(r, "ReplayBuffer.windows_within_episode")[0]
               for r in plan if r["seed"] == 0}
    assert windows[("kalmamba+cross_episode", 512)] is False and windows[("kalmamba+cross_episode", 1024)] is False
    assert all(within for (name, _), within in windows.items() if name != "kalmamba+cross_episode")
    assert {r["suite"] for r in plan} == {"noisy_state"}


def test_image100k_is_three_models_on_two_tasks_three_seeds():
    _, plan = planned("image100k")
    table = cells(plan)
    assert set(table) == {"kalmamba", "rssm", "vrkn"}
    assert all(set(by_length) == {32} and set(by_length[32]) == {"cartpole_swingup", "walker_walk"}
               and all(sorted(s) == [0, 1, 2] for s in by_length[32].values()) for by_length in table.values())
    assert {r["suite"] for r in plan} == {"image"}


@pytest.mark.parametrize("lengths, words", [
    ({"gin/rssm_noisy.gin": [64]}, "not one of Sweep.methods"),
    ({"gin/sac_noisy.gin": []}, "non-empty list of integers >= 2"),
    ({"gin/sac_noisy.gin": [1]}, "non-empty list of integers >= 2"),
    ([512], "must be a dict"),
])
def test_bad_per_method_context_lengths_are_one_line_errors(lengths, words, tmp_path):
    with pytest.raises(config.ConfigError, match=words):
        sweep_plan.Sweep(name="t", methods=["gin/sac_noisy.gin"], tasks=["cartpole_swingup"],
                         results_dir=str(tmp_path), context_lengths_by_method=lengths)


def test_per_method_context_lengths_replace_the_shared_ones(tmp_path):
    sweep = sweep_plan.Sweep(name="t", methods=["gin/sac_noisy.gin", "gin/kalmamba_noisy.gin"],
                             tasks=["cartpole_swingup"], seeds=[0], context_lengths=[32, 64],
                             context_lengths_by_method={"gin/kalmamba_noisy.gin": [128]},
                             results_dir=str(tmp_path), overlays=["gin/quick.gin"])
    got = sorted((r["method"], r["context_length"]) for r in sweep_plan.plan(sweep))
    assert got == [("kalmamba", 128), ("sac", 32), ("sac", 64)]
    assert sweep.describe()["context_lengths_by_method"] == {"gin/kalmamba_noisy.gin": [128]}


def _one_run(tmp_path):
    sweep = sweep_plan.Sweep(name="t", methods=["gin/sac_noisy.gin"], tasks=["cartpole_swingup"],
                             results_dir=str(tmp_path), overlays=["gin/quick.gin"])
    manifest = sweep_runner.Manifest(sweep, sweep_plan.plan(sweep), "local")
    (run,) = manifest.runs.values()
    return sweep, manifest, run


def test_every_run_receives_device_and_tf32_flags(tmp_path):
    args = sweep_cli.parse_args(["--gin", "gin/sweeps/tiny.gin", "--device", "cuda", "--no-tf32"])
    assert sweep_cli.run_args(args) == ["--device", "cuda", "--no-tf32"]
    assert sweep_cli.run_args(sweep_cli.parse_args(["--gin", "gin/sweeps/tiny.gin"])) == []
    sweep, manifest, run = _one_run(tmp_path)
    command = sweep_runner._job(sweep, manifest, run, sweep_cli.run_args(args)).command
    assert command[command.index("--device") + 1] == "cuda" and "--no-tf32" in command


def test_bad_device_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        sweep_cli.parse_args(["--gin", "gin/sweeps/tiny.gin", "--device", "gpu"])
    assert stop.value.code == 2 and "--device" in capsys.readouterr().err


@pytest.mark.parametrize("status, checkpoint_on_disk, flag", [
    ("interrupted", True, "--resume"),      # same machine: continue from the checkpoint
    ("interrupted", False, "--overwrite"),  # records copied without checkpoint/: start again
    ("failed", False, "--overwrite"),
    ("running", None, "--resume"),          # killed before its first checkpoint: nothing to lose
])
def test_a_run_whose_checkpoint_is_missing_starts_again(tmp_path, status, checkpoint_on_disk, flag, capsys):
    sweep, manifest, run = _one_run(tmp_path)
    directory = rundir.RunDirectory(manifest.run_dir(run))
    info = {"experiment": "t", "method": "sac", "suite": "noisy_state", "task": "cartpole_swingup", "seed": 0,
            "context_length": 32, "status": status}
    if checkpoint_on_disk is not None:
        info["checkpoint_env_step"] = 1000
    directory.write_info(info)
    if checkpoint_on_disk:
        directory.checkpoint.mkdir()
        directory.state_file.write_bytes(b"state")
    command = sweep_runner._job(sweep, manifest, run).command
    assert flag in command and ("--overwrite" if flag == "--resume" else "--resume") not in command
    assert directory.lost_checkpoint() == (flag == "--overwrite")
    state = "restart" if flag == "--overwrite" else "resume"
    argv = ["--gin", "gin/sweeps/tiny.gin", "--dry-run", "--bind", f"Sweep.results_dir = '{tmp_path}'",
            "--bind", "Sweep.name = 't'", "--bind", "Sweep.methods = ['gin/sac_noisy.gin']",
            "--bind", "Sweep.tasks = ['cartpole_swingup']", "--bind", "Sweep.seeds = [0]"]
    assert sweep_cli.main(argv) == 0
    assert capsys.readouterr().out.split()[:1] == [state]


class RecordingExecutor(executors.Executor):
    """Starts nothing: keeps each job and reports it ended with a user error (not retried)."""

    def __init__(self):
        self.jobs, self._running = [], []

    def submit(self, job):
        self.jobs.append(job)
        self._running.append(job.key)

    def wait(self, timeout_s):
        done, self._running = self._running, []
        return [executors.Finished(key, 2) for key in done]

    def capacity(self):
        return 1

    def running(self):
        return list(self._running)

    def shutdown(self, grace_s=10.0):
        self._running = []


def test_the_cli_passes_its_run_flags_to_every_run_and_records_them(tmp_path, monkeypatch):
    executor = RecordingExecutor()
    monkeypatch.setattr(sweep_cli, "make_executor", lambda args, sweep, env=None: (executor, 1))
    argv = ["--gin", "gin/sweeps/tiny.gin", "--bind", f"Sweep.results_dir = '{tmp_path}'",
            "--bind", "Sweep.methods = ['gin/sac_noisy.gin']", "--bind", "Sweep.seeds = [0]",
            "--device", "cpu", "--no-tf32"]
    assert sweep_cli.main(argv) == 1  # both runs 'failed' (the recording executor's exit status 2)
    assert len(executor.jobs) == 2
    for job in executor.jobs:
        assert job.command[job.command.index("--device") + 1] == "cpu" and "--no-tf32" in job.command
    assert json.loads((tmp_path / "tiny" / "sweep.json").read_text())["run_args"] == ["--device", "cpu", "--no-tf32"]
