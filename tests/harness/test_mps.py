"""harness.mps and `harness.sweep --mps`: the daemon's lifetime, the variables every run receives,
and the one-line errors. Checked on CPU with a stand-in for nvidia-cuda-mps-control (the real one
needs a GPU): FAKE_CONTROL records how it was called, from which pipe directory, and what it read."""
import dataclasses
import json
import os
import pathlib
import stat
import sys

import pytest

from harness import executors, mps, sweep as sweep_cli

FAKE_CONTROL = f'''#!{sys.executable}
import json, os, sys
call = {{"args": sys.argv[1:], "pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
        "log": os.environ.get("CUDA_MPS_LOG_DIRECTORY")}}
call["pipe_exists"] = bool(call["pipe"]) and os.path.isdir(call["pipe"])
if not call["args"]:
    call["stdin"] = sys.stdin.read()
with open(os.environ["FAKE_MPS_CALLS"], "a") as f:
    f.write(json.dumps(call) + "\\n")
if os.environ.get("FAKE_MPS_FAIL"):
    print("An instance of this daemon is already running", file=sys.stderr)
    sys.exit(1)
'''

# A run that only records the MPS variable it received and then finishes as a done run.
FAKE_RUN = r'''
import json, os, pathlib, sys
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "seen_pipe").write_text(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", ""))
(out / "run.json").write_text(json.dumps({"status": "done", "env_steps": 1, "total_env_steps": 1}))
'''


@pytest.fixture
def control(tmp_path, monkeypatch):
    """The stand-in control program, first on PATH; returns a function reading its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / mps.CONTROL
    program.write_text(FAKE_CONTROL)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_CALLS", str(tmp_path / "mps_calls.jsonl"))
    monkeypatch.delenv("FAKE_MPS_FAIL", raising=False)
    calls = tmp_path / "mps_calls.jsonl"
    return lambda: [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_daemon_starts_in_a_fresh_directory_and_quits_through_the_same_pipe(control):
    with mps.MpsDaemon() as daemon:
        pipe, log = daemon.env[mps.PIPE_VARIABLE], daemon.env[mps.LOG_VARIABLE]
        directory = pathlib.Path(daemon.directory)
        assert pathlib.Path(pipe).parent == directory == pathlib.Path(log).parent
        assert pathlib.Path(pipe).is_dir() and pathlib.Path(log).is_dir()
        assert [c["args"] for c in control()] == [["-d"]]
    start, stop = control()
    assert start == {"args": ["-d"], "pipe": pipe, "log": log, "pipe_exists": True}
    assert stop["args"] == [] and stop["stdin"] == "quit\n" and stop["pipe"] == pipe
    assert not directory.exists()  # its files go with it
    assert mps.in_use({mps.PIPE_VARIABLE: pipe}) and not mps.in_use({})


def test_two_daemons_never_share_a_pipe_directory(control):
    with mps.MpsDaemon() as first, mps.MpsDaemon() as second:
        assert first.env[mps.PIPE_VARIABLE] != second.env[mps.PIPE_VARIABLE]


def test_a_missing_control_program_is_one_clear_error(tmp_path):
    with pytest.raises(mps.MpsError, match="--mps needs no-such-mps-control on PATH"):
        mps.MpsDaemon(control="no-such-mps-control").start()


def test_a_failed_start_says_why_and_leaves_no_directory(control, monkeypatch):
    monkeypatch.setenv("FAKE_MPS_FAIL", "1")
    daemon = mps.MpsDaemon()
    with pytest.raises(mps.MpsError) as error:
        daemon.start()
    assert str(error.value) == (f"{mps.CONTROL} -d failed with exit status 1: "
                                "An instance of this daemon is already running")
    (call,) = control()
    assert not pathlib.Path(call["pipe"]).parent.exists() and daemon.directory is None
    daemon.stop()  # nothing to stop: no second call
    assert len(control()) == 1


class FakeRunExecutor(executors.LocalExecutor):
    """The real LocalExecutor (with the sweep's env and GPU slots) running FAKE_RUN for harness.run."""
    fake_path = None

    def submit(self, job):
        rest = job.command[job.command.index("harness.run") + 1:]
        super().submit(dataclasses.replace(job, command=(sys.executable, self.fake_path, *rest)))


def tiny_sweep_argv(tmp_path, *options):
    """The tiny sweep's 4 SAC runs on GPU 0, recorded under tmp_path/results, with `options` added."""
    return ["--gin", "gin/sweeps/tiny.gin", "--bind", f"Sweep.results_dir = '{tmp_path / 'results'}'",
            "--bind", "Sweep.methods = ['gin/sac_noisy.gin']", "--gpus", "0", *options]


def sweep_with_fake_runs(tmp_path, monkeypatch, *options) -> dict:
    """Runs the tiny sweep with FAKE_RUN for every run, 4 at once; returns its sweep.json."""
    FakeRunExecutor.fake_path = str(tmp_path / "fake_run.py")
    (tmp_path / "fake_run.py").write_text(FAKE_RUN)
    monkeypatch.setattr(executors, "LocalExecutor", FakeRunExecutor)
    assert sweep_cli.main(tiny_sweep_argv(tmp_path, "--runs-per-gpu", "4", *options)) == 0
    return json.loads((tmp_path / "results" / "tiny" / "sweep.json").read_text())


def test_sweep_with_mps_gives_every_run_the_daemons_pipe_then_stops_it(control, tmp_path, monkeypatch, capsys):
    manifest = sweep_with_fake_runs(tmp_path, monkeypatch, "--mps")
    start, stop = control()
    assert start["args"] == ["-d"] and stop["stdin"] == "quit\n" and stop["pipe"] == start["pipe"]
    log_dir = os.path.join(os.path.dirname(start["pipe"]), "log")
    assert f"[tiny] MPS daemon: CUDA_MPS_PIPE_DIRECTORY={start['pipe']} CUDA_MPS_LOG_DIRECTORY={log_dir}\n" \
        in capsys.readouterr().err  # what a second sweep sets to share the daemon
    assert manifest["resources"]["mps"] is True and len(manifest["runs"]) == 4
    assert manifest["gpu_seconds_held"] > 0  # GPU 0 ran the 4 runs: its held time, counted once
    for run in manifest["runs"]:
        assert run["status"] == "done"
        assert (tmp_path / "results" / "tiny" / run["run_dir"] / "seen_pipe").read_text() == start["pipe"]


def test_a_sweep_without_mps_shares_the_daemon_its_environment_names(control, tmp_path, monkeypatch):
    """The second sweep of the MPS daemon's share hint: started with the variables and no --mps, its
    runs are clients of that daemon, and it neither starts nor stops one."""
    pipe = str(tmp_path / "first-sweeps-daemon" / "pipe")
    monkeypatch.setenv(mps.PIPE_VARIABLE, pipe)
    manifest = sweep_with_fake_runs(tmp_path, monkeypatch)
    assert control() == []
    assert manifest["resources"]["mps"] is False and len(manifest["runs"]) == 4
    for run in manifest["runs"]:
        assert (tmp_path / "results" / "tiny" / run["run_dir"] / "seen_pipe").read_text() == pipe


def test_sweep_without_a_control_program_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control anywhere
    assert sweep_cli.main(tiny_sweep_argv(tmp_path, "--mps")) == 2
    assert capsys.readouterr().err == f"error: --mps needs {mps.CONTROL} on PATH (it comes with the NVIDIA " \
                                      "driver's utilities)\n"
    assert not (tmp_path / "results" / "tiny" / "sweep.json").exists()


def test_bench_e2e_with_mps_measures_as_a_client_of_its_own_daemon(control, capsys):
    import gin
    from harness import bench
    tiny = ["--gin", "gin/kalmamba_noisy.gin", "--overlay", "gin/quick.gin", "--env-steps", "1000",
            "--warmup-env-steps", "0", "--threads", "1", "--device", "cpu", "--no-eval",
            "--bind", "Schedule.agent_steps_per_update = 16"]
    try:
        status = bench.main(["e2e", *tiny, "--mps"])
    finally:
        gin.clear_config()
    out = capsys.readouterr().out
    assert status == 0, out
    assert "; CUDA MPS: yes; " in out  # the header: this process measured with the daemon's variables
    start, stop = control()
    assert start["args"] == ["-d"] and stop["stdin"] == "quit\n" and stop["pipe"] == start["pipe"]
    assert mps.PIPE_VARIABLE not in os.environ  # the variables leave with the daemon


def test_bench_e2e_without_a_control_program_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from harness import bench
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench.main(["e2e", "--device", "cpu", "--mps"]) == 2
    assert capsys.readouterr().err == f"error: --mps needs {mps.CONTROL} on PATH (it comes with the NVIDIA " \
                                      "driver's utilities)\n"
