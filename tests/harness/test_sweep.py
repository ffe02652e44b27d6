"""harness.sweep and its library (sweep_plan, sweep_runner): grid expansion over methods, tasks,
seeds, context lengths and any gin binding, manifest, skip/resume/retry, Ctrl-C, CLI errors, and
real sweeps.

Most tests replace only the child program: `FakeRunExecutor` is the real LocalExecutor running
FAKE_RUN (below) instead of `python -m harness.run`, with the same arguments. FAKE_RUN follows the
run-directory contract and behaves by seed, so scheduling is tested in seconds. The slow tests run
the real harness.run through `python -m harness.sweep`, with the local pool and with Ray.
"""
import dataclasses
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import gin
import pytest

from harness import config, executors, sweep as sweep_cli, sweep_plan, sweep_runner

REPO = pathlib.Path(__file__).resolve().parents[2]
TASKS = ["cartpole_swingup", "reacher_easy"]

FAKE_RUN = r'''
import json, os, pathlib, signal, sys, time
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--out") + 1])
seed = next(int(b.split("=")[1]) for b in args if b.startswith("Experiment.seed"))
with open(os.environ["FAKE_RUN_CALLS"], "a") as f:
    f.write(json.dumps({"out": str(out), "resume": "--resume" in args, "pid": os.getpid()}) + "\n")
if seed == 2 or out.exists() and "--resume" not in args:   # user errors: exit 2, nothing written
    print("error: unknown task 'bogus'" if seed == 2 else "error: run directory exists", file=sys.stderr)
    sys.exit(2)
out.mkdir(parents=True, exist_ok=True)
info = {"experiment": "t", "method": "sac", "suite": "noisy_state", "task": out.parts[-3],
        "seed": seed, "context_length": 32, "status": "running", "env_steps": 0, "total_env_steps": 2000}
(out / "run.json").write_text(json.dumps(info))
first = not (out / "attempted").exists()
(out / "attempted").touch()
if seed == 1 and first or seed == 3:
    (out / "run.json").write_text(json.dumps(dict(info, status="failed", error="RuntimeError: diverged")))
    print("RuntimeError: diverged")
    sys.exit(1)
if seed == 9:   # dies of a signal after printing a line that is not the cause
    print("step 1000: eval return 12.5", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if seed == 10:  # caught SIGTERM and exited the shell way, 128 + 15
    print("saving checkpoint", flush=True)
    sys.exit(143)
if seed in (7, 8):
    if seed == 7:
        signal.signal(signal.SIGTERM, lambda *_: ((out / "got_sigterm").touch(), sys.exit(143)))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (out / "started").touch()
    time.sleep(600)
lines = [{"kind": "eval", "env_step": s, "return_mean": 100.0 * seed + s / 10, "return_std": 0.0,
          "returns": [0.0], "wall_clock_s": 1.0} for s in (0, 1000, 2000)]
(out / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
(out / "run.json").write_text(json.dumps(dict(info, status="done", env_steps=2000, wall_clock_s=2.0)))
'''


class FakeRunExecutor(executors.LocalExecutor):
    """LocalExecutor whose jobs run FAKE_RUN with harness.run's arguments."""

    def __init__(self, workers, fake_path, gpus=None):
        super().__init__(workers, gpus=gpus, runs_per_gpu=workers)
        self.fake_path = str(fake_path)

    def submit(self, job):
        rest = job.command[job.command.index("harness.run") + 1:]
        super().submit(dataclasses.replace(job, command=(sys.executable, self.fake_path, *rest)))


def make_sweep(root, seeds, methods=("gin/sac_noisy.gin",), **overrides):
    return sweep_plan.Sweep(name="t", methods=list(methods), tasks=overrides.pop("tasks", TASKS),
                           seeds=seeds, results_dir=str(root), overlays=["gin/quick.gin"], **overrides)


def drive(root, seeds, workers=2, grace_s=5.0, retries=1, gpus=None, manifest_every_s=60.0):
    """Plan and run a sweep under FakeRunExecutor (its runs placed on `gpus`, all on one when given);
    returns (exit status, manifest dict, calls)."""
    root = pathlib.Path(root)
    (root / "fake_run.py").write_text(FAKE_RUN)
    os.environ["FAKE_RUN_CALLS"] = str(root / "calls.jsonl")
    sweep = make_sweep(root / "results", seeds, retries=retries)
    manifest = sweep_runner.Manifest(sweep, sweep_plan.plan(sweep), "local")
    status = sweep_runner.run_sweep(sweep, manifest, FakeRunExecutor(workers, root / "fake_run.py", gpus),
                                 workers, grace_s=grace_s, log=lambda line: None,
                                 manifest_every_s=manifest_every_s)
    return status, json.loads(manifest.path.read_text()), _calls(root)


def _calls(root):
    path = pathlib.Path(root) / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _by_seed(manifest):
    return {(r["task"], r["seed"]): r for r in manifest["runs"]}


def test_plan_expands_the_grid_into_describe_run_directories(tmp_path):
    variant = tmp_path / "sac_b.gin"
    variant.write_text("include 'gin/sac_noisy.gin'\nExperiment.variant = 'b'\n")
    sweep = make_sweep(tmp_path, seeds=[0, 5, 6], methods=("gin/sac_noisy.gin", str(variant)),
                       context_lengths=[32, 48], bindings=["Schedule.eval_episodes = 1"])
    runs = sweep_plan.plan(sweep)
    assert len(runs) == 2 * 2 * 3 * 2
    assert len({r["run_dir"] for r in runs}) == len(runs)
    run = next(r for r in runs if r["variant"] == "b" and r["seed"] == 6 and r["context_length"] == 48)
    assert run["run_dir"] == "sac+b/noisy_state/cartpole_swingup/ctx48/seed6" and run["method"] == "sac"
    assert run["grid"] == {}
    assert run["bindings"] == ["Experiment.name = 't'", "Experiment.task = 'cartpole_swingup'",
                               "Experiment.seed = 6", "Experiment.context_length = 48",
                               "Schedule.eval_episodes = 1"]
    spec, run_dir = config.describe_run(run["gin_files"], run["bindings"], root=tmp_path)
    assert run_dir == tmp_path / "t" / run["run_dir"] and spec["context_length"] == 48


def test_two_methods_with_one_label_are_rejected(tmp_path):
    with pytest.raises(config.ConfigError, match="share the run directory"):
        sweep_plan.plan(make_sweep(tmp_path, [0], methods=("gin/sac_noisy.gin", "gin/sac_noisy.gin")))


def test_runs_retry_then_report_and_user_errors_are_not_retried(tmp_path):
    status, manifest, calls = drive(tmp_path, seeds=[0, 1, 2, 3], retries=1)
    runs = _by_seed(manifest)
    assert status == 1  # some runs failed for good
    for task in TASKS:
        assert runs[task, 0]["status"] == "done" and runs[task, 0]["attempts"] == 1
        assert runs[task, 1]["status"] == "done" and runs[task, 1]["attempts"] == 2  # retried once
        assert runs[task, 2]["status"] == "failed" and runs[task, 2]["attempts"] == 1  # exit 2: no retry
        assert runs[task, 2]["error"] == "error: unknown task 'bogus'" and runs[task, 2]["exit_code"] == 2
        assert runs[task, 3]["status"] == "failed" and runs[task, 3]["attempts"] == 2
        assert runs[task, 3]["error"] == "RuntimeError: diverged" and runs[task, 3]["exit_code"] == 1
    retried = [c for c in calls if c["out"].endswith("cartpole_swingup/ctx32/seed1")]
    assert [c["resume"] for c in retried] == [False, True]  # the retry continues the run directory
    log = tmp_path / "results" / "t" / runs[TASKS[0], 3]["log"]
    assert log.read_text().count("RuntimeError: diverged") == 2  # both attempts appended


def test_a_run_killed_by_a_signal_is_retried_and_reported_by_the_signal(tmp_path):
    status, manifest, _ = drive(tmp_path, seeds=[9, 10], retries=1)
    runs = _by_seed(manifest)
    assert status == 1
    for task in TASKS:
        assert runs[task, 9]["attempts"] == 2 and runs[task, 10]["attempts"] == 2  # retried once
        assert runs[task, 9]["error"] == "killed by SIGKILL" and runs[task, 9]["exit_code"] == -9
        assert runs[task, 10]["error"] == "terminated by SIGTERM" and runs[task, 10]["exit_code"] == 143


@pytest.mark.parametrize("exit_code, reason", [
    (-9, "killed by SIGKILL"), (137, "killed by SIGKILL"), (-15, "terminated by SIGTERM"),
    (143, "terminated by SIGTERM"), (130, "interrupted by SIGINT"), (-11, "killed by SIGSEGV"),
    (0, None), (1, None), (2, None), (3, None), (None, None), (255, None)])
def test_signal_reason_reads_both_exit_code_conventions(exit_code, reason):
    assert executors.signal_reason(exit_code) == reason


def test_rerun_skips_done_runs_and_retries_failed_ones(tmp_path):
    drive(tmp_path, seeds=[0, 3], retries=0)
    first = len(_calls(tmp_path))
    status, manifest, calls = drive(tmp_path, seeds=[0, 3], retries=0)
    again = calls[first:]
    assert status == 1 and len(again) == 2  # only the two failed seed-3 runs start again
    assert all(c["out"].endswith("seed3") and c["resume"] for c in again)
    assert _by_seed(manifest)[TASKS[0], 3]["attempts"] == 2  # attempts add up across invocations
    assert _by_seed(manifest)[TASKS[0], 0]["status"] == "done"


def test_ctrl_c_stops_runs_marks_them_interrupted_and_resumes(tmp_path):
    # Python leaves SIGINT ignored when it starts with it ignored (a background job of a script,
    # e.g. the test suite started with `&`), so the driver restores the handler a terminal gives it.
    driver = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from tests.harness.test_sweep import drive; "
         f"sys.exit(drive({str(tmp_path)!r}, seeds=[7, 8], workers=4, grace_s=1.0)[0])"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    run_dirs = [tmp_path / "results" / "t" / "sac" / "noisy_state" / task / "ctx32" / f"seed{seed}"
                for task in TASKS for seed in (7, 8)]
    _wait_for(lambda: all((d / "started").exists() for d in run_dirs), driver)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) == 130
    manifest = json.loads((tmp_path / "results" / "t" / "sweep.json").read_text())
    assert {r["status"] for r in manifest["runs"]} == {"interrupted"}
    for call in _calls(tmp_path):
        with pytest.raises(ProcessLookupError):
            os.kill(call["pid"], 0)  # SIGTERM, or SIGKILL for the run that ignores it
    assert all((d / "got_sigterm").exists() for d in run_dirs if d.name == "seed7")
    for d in run_dirs:  # the runs stopped before writing anything final: resumable, not corrupt
        assert json.loads((d / "run.json").read_text())["status"] == "running"


def start_sweep_of_waiting_runs(tmp_path, **drive_options):
    """A sweep process driving seed 7's runs (they wait for SIGTERM), once both have started:
    (the process, the run directories)."""
    options = "".join(f", {key}={value!r}" for key, value in drive_options.items())
    driver = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tests.harness.test_sweep import drive; "
         f"sys.exit(drive({str(tmp_path)!r}, seeds=[7], workers=2{options})[0])"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    run_dirs = [tmp_path / "results" / "t" / "sac" / "noisy_state" / task / "ctx32" / "seed7" for task in TASKS]
    _wait_for(lambda: all((d / "started").exists() for d in run_dirs), driver)
    return driver, run_dirs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_runs_do_not_outlive_a_killed_sweep(tmp_path):
    driver, run_dirs = start_sweep_of_waiting_runs(tmp_path)
    driver.kill()  # SIGKILL: the sweep cannot clean up, the kernel signals its children
    driver.wait(timeout=30)
    _wait_for(lambda: all((d / "got_sigterm").exists() for d in run_dirs), None, timeout_s=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_a_sweep_killed_without_notice_has_recorded_the_gpu_time_it_held(tmp_path):
    driver, run_dirs = start_sweep_of_waiting_runs(tmp_path, gpus=["0"], manifest_every_s=0.2)
    started = time.monotonic()
    time.sleep(2.0)  # both runs on GPU 0 for at least this long
    driver.kill()  # SIGKILL, as when the machine is taken back: no handler writes sweep.json
    driver.wait(timeout=30)
    killed_after = time.monotonic() - started
    manifest = json.loads((tmp_path / "results" / "t" / "sweep.json").read_text())
    assert {r["status"] for r in manifest["runs"]} == {"running"}
    held = manifest["gpu_seconds_held"]  # one GPU, counted once however many runs it holds
    assert 2.0 - 0.5 <= held <= killed_after + 10.0  # at most one rewrite interval (plus start-up) short
    _wait_for(lambda: all((d / "got_sigterm").exists() for d in run_dirs), None, timeout_s=30)


@pytest.mark.parametrize("argv, words", [
    (["--gin", "gin/sweeps/missing.gin"], "gin file not found: gin/sweeps/missing.gin"),
    (["--gin", "gin/sweeps/tiny.gin", "--bind", "Sweep.colour = 1"],
     "invalid gin configuration: Configurable 'Sweep' doesn't have a parameter named 'colour'."),
    (["--gin", "gin/sweeps/tiny.gin", "--bind", "Sweep.seeds = []"], "Sweep.seeds is empty"),
    (["--gin", "gin/sweeps/tiny.gin", "--bind", "Sweep.methods = ['gin/nope.gin']"],
     "gin file not found: gin/nope.gin"),
    (["--gin", "gin/sweeps/tiny.gin", "--workers", "0"], "argument --workers: expected an integer >= 1, got '0'"),
    (["--gin", "gin/sweeps/tiny.gin", "--address", "auto"], "--address needs --executor ray"),
    (["--gin", "gin/sweeps/tiny.gin", "--gpus", "0,a"], "argument --gpus: expected distinct GPU numbers"),
    (["--gin", "gin/sweeps/tiny.gin", "--runs-per-gpu", "2"], "--runs-per-gpu needs --gpus"),
    (["--gin", "gin/sweeps/tiny.gin", "--gpus", "0", "--executor", "ray"], "--gpus is for --executor local"),
    (["--gin", "gin/sweeps/tiny.gin", "--mps"], "--mps needs --executor local and --gpus"),
])
def test_cli_user_errors_are_one_line_and_exit_2(argv, words, tmp_path, capsys):
    argv = argv + ["--bind", f"Sweep.results_dir = '{tmp_path}'"]
    if "Sweep.methods" not in str(argv):
        argv += ["--bind", "Sweep.methods = ['gin/sac_noisy.gin']"]
    assert_user_error(argv, words, capsys)
    assert not (tmp_path / "t").exists() and not (tmp_path / "tiny").exists()


def assert_user_error(argv, words, capsys):
    """`harness.sweep` with argv exits 2 (argparse's checks or ours) with one line `error: <words>...`."""
    try:
        status = sweep_cli.main(argv)
    except SystemExit as usage_error:  # argparse's own checks
        status = usage_error.code
    assert status == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {words}")


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path, capsys):
    held = sweep_runner.lock_sweep_dir(tmp_path / "tiny")
    try:
        argv = ["--gin", "gin/sweeps/tiny.gin", "--bind", f"Sweep.results_dir = '{tmp_path}'",
                "--bind", "Sweep.methods = ['gin/sac_noisy.gin']"]
        assert sweep_cli.main(argv) == 2
        assert capsys.readouterr().err == f"error: another sweep is running in {tmp_path / 'tiny'}\n"
        assert not (tmp_path / "tiny" / "sweep.json").exists()
    finally:
        held.close()
    assert sweep_runner.lock_sweep_dir(tmp_path / "tiny") is not None  # released with its holder


def test_module_entry_point_plans_and_rejects_unknown_executor(tmp_path):
    command = [sys.executable, "-m", "harness.sweep", "--gin", "gin/sweeps/tiny.gin", "--dry-run",
               "--bind", f"Sweep.results_dir = '{tmp_path}'", "--bind", "Sweep.methods = ['gin/sac_noisy.gin']"]
    plan = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0] == f"new     {tmp_path}/tiny/sac/noisy_state/cartpole_swingup/ctx32/seed0"
    bad = subprocess.run(command + ["--executor", "slurm"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2
    (line,) = bad.stderr.splitlines()
    assert line.startswith("error: argument --executor: invalid choice: 'slurm'")


def _missing_methods(sweep_file):
    sweep = sweep_plan.load_sweep([sweep_file])
    return [m for m in sweep.methods if not (REPO / m).is_file()]


@pytest.mark.parametrize("path", sorted((REPO / "gin" / "sweeps").glob("*.gin")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_plans(path, tmp_path):
    if _missing_methods(path):
        pytest.skip(f"method gin files not in the repository yet: {_missing_methods(path)}")
    sweep = sweep_plan.load_sweep([path], [f"Sweep.results_dir = '{tmp_path}'"])
    runs = sweep_plan.plan(sweep)
    grid_size = math.prod(len(values) for values in sweep.grid.values())
    lengths = sum(len(sweep.lengths_of(method)) for method in sweep.methods)
    assert len(runs) == lengths * len(sweep.tasks) * len(sweep.seeds) * grid_size


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_tiny_sweep_end_to_end_then_rerun_skips_and_report(executor, tmp_path):
    if _missing_methods(REPO / "gin" / "sweeps" / "tiny.gin"):
        pytest.skip(f"method gin files not in the repository yet: {_missing_methods(REPO / 'gin/sweeps/tiny.gin')}")
    if executor == "ray":
        pytest.importorskip("ray", reason="needs ray (pip install 'ray[default]')")
    command = [sys.executable, "-m", "harness.sweep", "--gin", "gin/sweeps/tiny.gin",
               "--bind", f"Sweep.results_dir = '{tmp_path}'", "--executor", executor, "--workers", "2"]
    env = dict(os.environ, MUJOCO_GL="egl")
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = json.loads((tmp_path / "tiny" / "sweep.json").read_text())
    assert len(manifest["runs"]) == 8 and {r["status"] for r in manifest["runs"]} == {"done"}
    assert "8/8 done" in first.stderr
    started = time.monotonic()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "8/8 done, 0 running" in second.stderr
    assert json.loads((tmp_path / "tiny" / "sweep.json").read_text())["runs"][0]["attempts"] == 1
    assert executor == "ray" or time.monotonic() - started < 60  # nothing ran again
    report = subprocess.run([sys.executable, "-m", "harness.report", str(tmp_path / "tiny"), "--reps", "200"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr
    board = (tmp_path / "tiny" / "report" / "leaderboard.md").read_text()
    assert "## tiny: noisy_state/ctx32 (2 tasks)" in board
    assert all(f"| {r['method']} |" in board for r in manifest["runs"])
    assert (tmp_path / "tiny" / "report" / "index.html").stat().st_size > 10_000


def _wait_for(condition, process, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process is None or process.poll() is None, "the sweep exited early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


# -- grids over any gin binding ----------------------------------------------------------------------

def test_a_grid_axis_binds_each_value_and_labels_its_run_directory(tmp_path):
    variant = tmp_path / "sac_b.gin"
    variant.write_text("include 'gin/sac_noisy.gin'\nExperiment.variant = 'b'\n")
    sweep = make_sweep(tmp_path, seeds=[0], methods=("gin/sac_noisy.gin", str(variant)), tasks=TASKS[:1],
                       grid={"make_env.obs_noise_std": [0.0, 0.3], "make_env.action_noise_std": [0.1]})
    runs = sweep_plan.plan(sweep)
    assert sorted(r["run_dir"].split("/")[0] for r in runs) == [
        "sac+b,obs_noise_std=0.0,action_noise_std=0.1", "sac+b,obs_noise_std=0.3,action_noise_std=0.1",
        "sac+obs_noise_std=0.0,action_noise_std=0.1", "sac+obs_noise_std=0.3,action_noise_std=0.1"]
    run = next(r for r in runs if r["variant"] == "b,obs_noise_std=0.3,action_noise_std=0.1")
    assert run["grid"] == {"make_env.obs_noise_std": 0.3, "make_env.action_noise_std": 0.1}
    assert run["method"] == "sac"
    assert "make_env.obs_noise_std = 0.3" in run["bindings"]
    spec, run_dir = config.describe_run(run["gin_files"], run["bindings"], root=tmp_path)
    assert gin.query_parameter("make_env.obs_noise_std") == 0.3  # the run is built with the value
    assert spec["variant"] == run["variant"] and run_dir == tmp_path / "t" / run["run_dir"]
    manifest = sweep_runner.Manifest(sweep, runs, "local")
    manifest.save()
    saved = json.loads(manifest.path.read_text())
    assert saved["grid"]["grid"] == {"make_env.obs_noise_std": [0.0, 0.3], "make_env.action_noise_std": [0.1]}
    assert {tuple(r["grid"].values()) for r in saved["runs"]} == {(0.0, 0.1), (0.3, 0.1)}


def test_a_grid_over_strings_and_integers_renders_them_as_written(tmp_path):
    sweep = make_sweep(tmp_path, seeds=[0], tasks=TASKS[:1],
                       grid={"make_env.image_size": [32, 64], "Experiment.suite": ["noisy_state"]})
    runs = sweep_plan.plan(sweep)
    assert [r["variant"] for r in runs] == ["image_size=32,suite=noisy_state", "image_size=64,suite=noisy_state"]
    assert "Experiment.suite = 'noisy_state'" in runs[0]["bindings"]


@pytest.mark.parametrize("grid, words", [
    ({"make_env.obs_noise_std": [0.1, "a/b"]}, "value 'a/b' does not render path-safe"),
    ({"make_env.obs_noise_std": [(0.1, 0.2)]}, "value (0.1, 0.2) does not render path-safe"),
    ({"make_env.obs_noise_std": ["../x"]}, "value '../x' does not render path-safe"),
    ({"make_env.obs_noise_std": []}, "must be a non-empty list"),
    ({"make_env.obs_noise_std": 0.1}, "must be a non-empty list"),
    ({"obs_noise_std": [0.1]}, "a grid key is a gin binding"),
    ({"Experiment.seed": [0, 1]}, "Experiment.seed is set by Sweep.seeds"),
    ({"Experiment.variant": ["a"]}, "Experiment.variant is set by Sweep.bindings"),
    ({"make_env.obs_noise_std": [0.1], "other/make_env.obs_noise_std": [0.2]}, "could not be told apart"),
    ([("make_env.obs_noise_std", [0.1])], "Sweep.grid must be a dict"),
])
def test_a_grid_that_cannot_label_its_runs_is_refused(grid, words, tmp_path):
    with pytest.raises(config.ConfigError) as error:  # gin appends a line naming the configurable
        sweep_plan.plan(make_sweep(tmp_path, seeds=[0], tasks=TASKS[:1], grid=grid))
    assert words in str(error.value).splitlines()[0]


def test_a_grid_axis_also_bound_by_sweep_bindings_is_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="Sweep.bindings also binds make_env.obs_noise_std"):
        make_sweep(tmp_path, seeds=[0], grid={"make_env.obs_noise_std": [0.1]},
                   bindings=["make_env.obs_noise_std=0.2"])


def test_the_cli_reports_a_bad_grid_as_one_line(tmp_path, capsys):
    argv = ["--gin", "gin/sweeps/noise_tiny.gin", "--bind", f"Sweep.results_dir = '{tmp_path}'",
            "--bind", "Sweep.grid = {'make_env.obs_noise_std': ['a b']}", "--dry-run"]
    assert sweep_cli.main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("error: Sweep.grid['make_env.obs_noise_std']: value 'a b' does not render path-safe "
                    "(letters, digits, _ . = , + -)")


@pytest.mark.slow
def test_noise_grid_sweep_runs_one_directory_per_noise_level(tmp_path):
    command = [sys.executable, "-m", "harness.sweep", "--gin", "gin/sweeps/noise_tiny.gin", "--workers", "2",
               "--bind", f"Sweep.results_dir = '{tmp_path}'", "--bind", "Sweep.methods = ['gin/sac_noisy.gin']",
               "--bind", "Sweep.bindings = ['Schedule.total_env_steps = 2000']"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "noise_tiny" / "sweep.json").read_text())
    assert {r["status"] for r in manifest["runs"]} == {"done"}
    assert sorted(r["grid"]["make_env.obs_noise_std"] for r in manifest["runs"]) == [0.0, 0.3]
    for noise in (0.0, 0.3):
        run_dir = tmp_path / "noise_tiny" / f"sac+obs_noise_std={noise}" / "noisy_state" / "cartpole_swingup" / "ctx32" / "seed0"
        assert f"make_env.obs_noise_std = {noise}" in (run_dir / "config.gin").read_text()
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "done" and info["variant"] == f"obs_noise_std={noise}"
        assert info["obs_noise_std"] == noise
    from harness import report
    assert report.main([str(tmp_path / "noise_tiny"), "--reps", "20"]) == 0
    leaderboard = (tmp_path / "noise_tiny" / "report" / "leaderboard.md").read_text()
    rows = [line.split(" | ")[0][2:] for line in leaderboard.splitlines() if line.startswith("| sac+")]
    assert sorted(set(rows)) == ["sac+obs_noise_std=0.0", "sac+obs_noise_std=0.3"]  # one row per noise level


class HeldFor:
    """An executor stand-in that has held its GPUs for `seconds` (what LocalExecutor reports)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def gpu_seconds_held(self):
        return self.seconds


def test_the_manifest_adds_gpu_time_held_over_invocations(tmp_path):
    sweep = make_sweep(tmp_path, seeds=[0])
    first = sweep_runner.Manifest(sweep, sweep_plan.plan(sweep), "local")
    first.save(HeldFor(12.5))
    assert json.loads(first.path.read_text())["gpu_seconds_held"] == 12.5
    second = sweep_runner.Manifest(sweep, sweep_plan.plan(sweep), "local")  # the same command again
    second.save(HeldFor(0.0))
    assert json.loads(second.path.read_text())["gpu_seconds_held"] == 12.5
    second.save(HeldFor(2.0))
    assert json.loads(second.path.read_text())["gpu_seconds_held"] == 14.5  # 12.5 earlier + 2.0 now
    third = sweep_runner.Manifest(sweep, sweep_plan.plan(sweep), "ray")
    third.save(HeldFor(None))  # an executor that does not count keeps what was counted
    assert json.loads(third.path.read_text())["gpu_seconds_held"] == 14.5


def _record_done_run(run, run_dir, edit=lambda text: text):
    """A finished run directory whose config.gin is the config `run` parses to, after `edit`."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text(edit(sweep_plan.parsed_config(run)))
    (run_dir / "run.json").write_text(json.dumps({"status": "done"}))


def test_config_drift_names_a_changed_and_an_added_binding_of_a_done_run(tmp_path):
    sweep = make_sweep(tmp_path, seeds=[0, 1, 2], tasks=TASKS[:1])
    runs = sweep_plan.plan(sweep)
    dirs = [sweep.directory / run["run_dir"] for run in runs]
    _record_done_run(runs[0], dirs[0])
    _record_done_run(runs[1], dirs[1], lambda text: text.replace("SAC.gamma = 0.99", "SAC.gamma = 0.9"))
    _record_done_run(runs[2], dirs[2], lambda text: text.replace("SAC.gamma = 0.99\n", ""))
    assert sweep_plan.config_drift(runs[0], dirs[0]) is None
    assert sweep_plan.config_drift(runs[1], dirs[1]) == "binding SAC.gamma is 0.9 in the run but 0.99 now"
    assert sweep_plan.config_drift(runs[2], dirs[2]) == "binding SAC.gamma is (unset) in the run but 0.99 now"
    assert sweep_plan.config_drift(runs[0], tmp_path / "nothing") is None


def test_a_sweep_over_runs_recorded_with_another_config_starts_nothing(tmp_path, capsys):
    """A changed default must not let old records count as this sweep's: --dry-run says 'changed',
    a real invocation exits 2 with one line before starting any run or writing a manifest."""
    argv = ["--gin", "gin/sweeps/tiny.gin", "--bind", f"Sweep.results_dir = '{tmp_path}'",
            "--bind", "Sweep.methods = ['gin/sac_noisy.gin']", "--bind", "Sweep.seeds = [0]"]
    sweep = sweep_plan.load_sweep(["gin/sweeps/tiny.gin"], argv[3::2])
    (run, *_) = sweep_plan.plan(sweep)
    run_dir = sweep.directory / run["run_dir"]
    _record_done_run(run, run_dir, lambda text: text.replace("SAC.gamma = 0.99", "SAC.gamma = 0.9"))
    assert sweep_cli.main(argv + ["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"changed {run_dir}  (binding SAC.gamma is 0.9 in the run but 0.99 now)" in lines
    assert_user_error(argv, f"1 run(s) in {sweep.directory} were recorded with another config", capsys)
    assert not (sweep.directory / "sweep.json").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.gin", "run.json"]
