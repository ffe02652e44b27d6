"""`harness.sweep --executor ray` on a multi-node Ray cluster started by the test (ray.cluster_utils:
every node a set of processes on this machine, GPUs faked as a resource, so fractional placement is
exercised without a GPU): runs placed on nodes and GPU fractions, their placement recorded, and runs
lost with their worker or node retried from the last checkpoint.

The fast tests run a stand-in for harness.run (FAKE_RUN, below) on one two-node cluster shared by
the module; the slow one runs the real harness.run through `python -m harness.sweep`, removes the
node a run is training on, and compares the resumed run's evaluations with an uninterrupted run's.
"""
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from harness import device, executors, sweep as sweep_cli, sweep_plan, sweep_runner
from tests.harness.test_sweep import assert_user_error

ray = pytest.importorskip("ray", reason="needs ray (pip install 'ray[default]')")
from ray.cluster_utils import Cluster  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]

# Reports where it ran (through harness.device, as harness.run does) and for how long.
REPORT = r'''
import json, os, sys, time
from harness.device import placement_info
began = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    json.dump({"placement": placement_info(), "began": began, "ended": time.time()}, f)
'''

# A stand-in for harness.run that follows the run-directory contract: it holds the directory's lock
# while it runs. Its first attempt kills the Ray worker that started it (its parent), then takes a
# while to stop on the SIGTERM that follows; the retry must wait for that lock, then resumes.
FAKE_RUN = r'''
import fcntl, json, os, pathlib, signal, sys, time
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
lock = open(out / ".lock", "a")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    print("error: another process is writing the run directory", file=sys.stderr)
    sys.exit(2)
with open(out / "calls.jsonl", "a") as f:
    f.write(json.dumps({"resume": "--resume" in args, "node": os.environ.get("SSM_BENCH_NODE")}) + "\n")
info = {"experiment": "t", "method": "sac", "suite": "noisy_state", "task": "cartpole_swingup", "seed": 0,
        "context_length": 32, "status": "running", "env_steps": 0, "total_env_steps": 2000}
(out / "run.json").write_text(json.dumps(info))
if "--resume" not in args:
    def stop(*_):
        time.sleep(1.5)  # saving, as harness.run does on SIGTERM
        (out / "run.json").write_text(json.dumps(dict(info, status="interrupted")))
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(60)
(out / "run.json").write_text(json.dumps(dict(info, status="done", env_steps=2000)))
'''


@pytest.fixture(scope="module")
def cluster():
    """A head node without resources and two nodes of 4 CPUs and 1 (fake) GPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=4, num_gpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _drain(executor, jobs, timeout_s=120):
    for job in jobs:
        executor.submit(job)
    finished, deadline = [], time.monotonic() + timeout_s
    while executor.running():
        assert time.monotonic() < deadline, "timed out"
        finished += executor.wait(timeout_s=1.0)
    return finished


def test_half_a_gpu_per_run_puts_two_runs_at_a_time_on_each_node(cluster, tmp_path):
    (tmp_path / "report.py").write_text(REPORT)
    executor = executors.RayExecutor(cluster.address, num_cpus=1, num_gpus=0.5)
    try:
        jobs = [executors.Job(f"run{i}", (sys.executable, str(tmp_path / "report.py"), str(tmp_path / f"run{i}.json"),
                                          "3"), str(tmp_path / f"run{i}.log"), {}, str(REPO)) for i in range(6)]
        finished = _drain(executor, jobs)
    finally:
        executor.shutdown()
    assert sorted(f.key for f in finished) == [f"run{i}" for i in range(6)]
    assert all(f.exit_code == 0 and f.error is None for f in finished), finished
    reports = [json.loads((tmp_path / f"run{i}.json").read_text()) for i in range(6)]
    nodes = {r["placement"]["node"] for r in reports}
    assert len(nodes) == 2 and None not in nodes  # both nodes used, each recorded by its id
    for report in reports:
        assert report["placement"]["gpus"] == ["0"]  # the node's one GPU, half of it
        assert report["placement"]["cuda_visible_devices"] == "0"  # set by Ray, inherited by the run
        assert report["placement"]["node_ip"]

    def most_at_once(rows):
        return max(sum(r["began"] <= row["began"] < r["ended"] for r in rows) for row in rows)
    for node in nodes:  # 0.5 GPU each: never a third run on a node's one GPU, though CPUs were free
        assert most_at_once([r for r in reports if r["placement"]["node"] == node]) == 2
    assert most_at_once(reports) == 4


class FakeRunRayExecutor(executors.RayExecutor):
    """RayExecutor whose jobs run FAKE_RUN with harness.run's arguments."""

    def __init__(self, fake_path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fake_path = str(fake_path)

    def submit(self, job):
        rest = job.command[job.command.index("harness.run") + 1:]
        super().submit(dataclasses.replace(job, command=(sys.executable, self.fake_path, *rest)))


def test_a_run_whose_worker_dies_is_retried_and_resumes_after_the_old_process_let_go(cluster, tmp_path):
    (tmp_path / "fake_run.py").write_text(FAKE_RUN)
    sweep = sweep_plan.Sweep(name="t", methods=["gin/sac_noisy.gin"], tasks=["cartpole_swingup"], seeds=[0],
                             results_dir=str(tmp_path / "results"), overlays=["gin/quick.gin"], retries=0)
    manifest = sweep_runner.Manifest(sweep, sweep_plan.plan(sweep), "ray")
    executor = FakeRunRayExecutor(tmp_path / "fake_run.py", cluster.address, num_cpus=1, num_gpus=0.5)
    lines = []
    status = sweep_runner.run_sweep(sweep, manifest, executor, 2, log=lines.append, max_attempts=3)
    (run,) = json.loads(manifest.path.read_text())["runs"]
    assert status == 0 and run["status"] == "done", lines
    assert run["attempts"] == 2  # retried though Sweep.retries = 0: the worker died, not the run
    assert run["last_failure"].startswith("Ray task failed") and run["error"] is None
    out = manifest.run_dir(run)
    calls = [json.loads(line) for line in (out / "calls.jsonl").read_text().splitlines()]
    assert [c["resume"] for c in calls] == [False, True]  # the retry continued the run directory
    assert any("retrying" in line for line in lines)


def test_a_run_lost_every_time_stops_at_max_attempts(cluster, tmp_path):
    (tmp_path / "fake_run.py").write_text(FAKE_RUN.replace('if "--resume" not in args:', "if True:"))
    sweep = sweep_plan.Sweep(name="t", methods=["gin/sac_noisy.gin"], tasks=["cartpole_swingup"], seeds=[0],
                             results_dir=str(tmp_path / "results"), overlays=["gin/quick.gin"], retries=5)
    manifest = sweep_runner.Manifest(sweep, sweep_plan.plan(sweep), "ray")
    executor = FakeRunRayExecutor(tmp_path / "fake_run.py", cluster.address, num_cpus=1)
    status = sweep_runner.run_sweep(sweep, manifest, executor, 2, log=lambda line: None, max_attempts=2)
    (run,) = json.loads(manifest.path.read_text())["runs"]
    assert status == 1 and run["status"] == "failed" and run["attempts"] == 2
    assert run["error"].startswith("Ray task failed") and run["error"] == run["last_failure"]


def test_placement_info_reads_what_the_scheduler_set():
    assert device.placement_info({}) == {"node": None, "node_ip": None, "gpus": None, "cuda_visible_devices": None,
                                         "cuda_mps": False}
    placed = {"SSM_BENCH_NODE": "ab12", "SSM_BENCH_NODE_IP": "10.0.0.2", "SSM_BENCH_GPUS": "1,3",
              "CUDA_VISIBLE_DEVICES": "1,3"}
    assert device.placement_info(placed) == {"node": "ab12", "node_ip": "10.0.0.2", "gpus": ["1", "3"],
                                             "cuda_visible_devices": "1,3", "cuda_mps": False}
    assert device.placement_info({"CUDA_MPS_PIPE_DIRECTORY": "/tmp/harness-mps-x/pipe"})["cuda_mps"] is True
    assert device.placement_info({"SSM_BENCH_NODE": "ab12", "SSM_BENCH_GPUS": ""})["gpus"] == []  # no GPU


@pytest.mark.parametrize("argv, words", [
    (["--gpus-per-run", "0.5"], "--gpus-per-run needs --executor ray"),
    (["--gpus-per-run", "0", "--executor", "ray"], "argument --gpus-per-run: expected a number in (0, 1]"),
    (["--gpus-per-run", "-1", "--executor", "ray"], "argument --gpus-per-run: expected a number in (0, 1]"),
    (["--gpus-per-run", "1.5", "--executor", "ray"], "argument --gpus-per-run: expected a number in (0, 1]"),
    (["--gpus-per-run", "nan", "--executor", "ray"], "argument --gpus-per-run: expected a number in (0, 1]"),
    (["--gpus-per-run", "inf", "--executor", "ray"], "argument --gpus-per-run: expected a number in (0, 1]"),
    (["--max-attempts", "0"], "argument --max-attempts: expected an integer >= 1"),
    (["--storage", "setup.py"], "--storage setup.py is not a directory"),
])
def test_placement_options_are_checked_before_anything_runs(argv, words, tmp_path, capsys):
    argv = ["--gin", "gin/sweeps/tiny.gin", "--bind", f"Sweep.results_dir = '{tmp_path}'", *argv]
    assert_user_error(argv, words, capsys)
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("text, value", [("0.25", 0.25), ("1", 1.0), ("2", 2.0), ("0.5", 0.5)])
def test_gpus_per_run_accepts_fractions_and_whole_gpus(text, value, tmp_path, capsys):
    args = sweep_cli.parse_args(["--gin", "gin/sweeps/tiny.gin", "--executor", "ray", "--gpus-per-run", text,
                                 "--storage", str(tmp_path / "shared")])
    assert args.gpus_per_run == value
    sweep_cli.check_executor_args(args)
    sweep = sweep_plan.load_sweep(args.gin, args.bind + sweep_cli.storage_binding(args))
    assert sweep.results_dir == tmp_path / "shared"  # --storage is the results root of every run


# -- the real harness.run: a node dies mid-run --------------------------------------------------------

RUN_GIN = ["--gin", "gin/sac_noisy.gin", "--gin", "gin/quick.gin"]


def _evals(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["env_step"], r["return_mean"]) for r in rows if r.get("kind") == "eval"]


@pytest.mark.slow
def test_a_sweep_survives_the_death_of_the_node_a_run_trains_on(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    env = dict(os.environ, MUJOCO_GL="egl", PYTHONPATH=str(REPO))
    storage = tmp_path / "shared"
    command = [sys.executable, "-m", "harness.sweep", "--gin", "gin/sweeps/tiny.gin", "--executor", "ray",
               "--address", cluster.address, "--gpus-per-run", "0.5", "--storage", str(storage),
               "--device", "cpu", "--bind", "Sweep.methods = ['gin/sac_noisy.gin']",
               "--bind", "Sweep.tasks = ['cartpole_swingup']", "--bind", "Sweep.seeds = [0]",
               "--bind", "Sweep.retries = 0"]
    sweep = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        run_dir = storage / "tiny" / "sac" / "noisy_state" / "cartpole_swingup" / "ctx32" / "seed0"
        deadline = time.monotonic() + 600
        while not _checkpointed(run_dir):  # a checkpoint to resume from, and training still going on
            assert sweep.poll() is None, sweep.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.5)
        node_id = json.loads((run_dir / "run.json").read_text())["placement"]["node"]
        (dying,) = [node for node in nodes if node.node_id == node_id]
        cluster.remove_node(dying)  # its raylet and workers die; the run gets SIGTERM, the task an error
        cluster.add_node(num_cpus=1, num_gpus=1)  # the cluster keeps two nodes
        output, _ = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)
            sweep.wait(timeout=60)
        cluster.shutdown()
    assert sweep.returncode == 0, output[-3000:]
    (run,) = json.loads((storage / "tiny" / "sweep.json").read_text())["runs"]
    assert run["status"] == "done" and run["attempts"] >= 2 and run["last_failure"], run
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["env_steps"] == 3000
    assert len({p["node"] for p in info["placements"]}) == 2  # trained on two nodes
    assert all(p["gpus"] == ["0"] and p["cuda_visible_devices"] == "0" for p in info["placements"])

    reference = tmp_path / "reference"
    bindings = [arg for binding in ("Experiment.name = 'tiny'", "Experiment.task = 'cartpole_swingup'",
                                    "Experiment.seed = 0", "Experiment.context_length = 32")
                for arg in ("--bind", binding)]
    whole = subprocess.run([sys.executable, "-m", "harness.run", *RUN_GIN, *bindings, "--device", "cpu",
                            "--no-progress", "--out", str(reference)],
                           cwd=REPO, env=dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
                           capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert _evals(run_dir) == _evals(reference)  # nothing lost, nothing twice, same numbers
    assert [step for step, _ in _evals(run_dir)] == [0, 1000, 2000, 3000]


def _checkpointed(run_dir):
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return (info.get("checkpoint_env_step") or 0) >= 1000 and info.get("status") == "running"


def test_wait_for_lock_waits_for_the_holder_then_gives_up_at_the_timeout(tmp_path):
    import fcntl
    path = tmp_path / ".lock"
    assert executors.wait_for_lock(str(path), timeout_s=0.1)  # no lock file: nothing to wait for
    with open(path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        began = time.monotonic()
        assert not executors.wait_for_lock(str(path), timeout_s=0.5)
        assert time.monotonic() - began >= 0.5
    assert executors.wait_for_lock(str(path), timeout_s=0.1)  # released with its holder
