"""`python -m harness.bench e2e` on tiny sizes: the real training loop is timed, the table has the
expected columns and positive rates, `--concurrent` runs copies as processes and prints its own
table, and user errors exit with status 2, one line, and nothing written."""
import json
import re
import tempfile

import gin
import pytest
import torch

from harness import bench, executors
from harness.benchmarks import concurrent, e2e
from harness.benchmarks.timing import CallClock

# One measured episode of cartpole (125 agent steps) at quick.gin's sizes, few updates, one thread.
TINY = ["--gin", "gin/kalmamba_noisy.gin", "--overlay", "gin/quick.gin", "--env-steps", "1000",
        "--warmup-env-steps", "0", "--threads", "1", "--device", "cpu"]
FEWER_UPDATES = ["--bind", "Schedule.agent_steps_per_update = 16", "--bind", "Schedule.eval_episodes = 1"]
COLUMNS = ("| experiment | task | compile | T | env steps | env steps/s | agent steps/s | updates/s | "
           "ms/update | ms/act | eval s | h per 1M env steps |")


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Temporary files go to tmp_path/tmp and the working directory is tmp_path/cwd: both must be
    empty once the benchmark returns (but for torch's own compiler cache, which torch may create)."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    yield tmp, cwd
    assert [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor")] == []
    assert list(cwd.iterdir()) == []


def _rows(out):
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()
            if re.match(r"\| (kalmamba|sac)", line)]


def test_table_times_the_training_loop_per_context_length(capsys, private_tmp):
    status = bench.main(["e2e", *TINY, "--lengths", "16", "8"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.startswith("command: python -m harness.bench e2e --gin gin/kalmamba_noisy.gin")
    assert re.search(r"date: \d{4}-\d\d-\d\d; torch \S+; device: CPU \(1 threads\); mamba_ssm kernel: (yes|no)", out)
    assert COLUMNS in out
    rows = _rows(out)
    assert [row[:4] for row in rows] == [["kalmamba", "cartpole_swingup", "none", "16"],
                                         ["kalmamba", "cartpole_swingup", "none", "8"]]
    for row in rows:
        assert row[4] == "1000"  # one cartpole episode (125 agent steps at action repeat 8)
        assert all(float(cell) > 0 for cell in row[5:])  # rates, ms per call, eval seconds, hours


def test_json_counts_updates_at_the_schedules_ratio(capsys, private_tmp):
    status = bench.main(["e2e", *TINY, *FEWER_UPDATES, "--json", "--seed", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0 and len(lines) == 1
    result = json.loads(lines[0])
    assert result["seed"] == 3 and result["compile"] == result["compile_mode"] == "none"
    assert result["agent_steps"] == 125 and result["env_steps"] == 1000
    assert result["updates"] == 125 // 16  # prefill ended just before: the updates due after it
    assert result["env_steps_per_s"] == pytest.approx(result["env_steps"] / result["seconds"])
    assert result["update_ms"] * result["updates"] < 1e3 * result["seconds"]
    evaluations = 1_000_000 // 1000 + 1  # quick.gin evaluates every 1000 env steps
    assert result["hours_per_1m_env_steps"] == pytest.approx(
        (1e6 / result["env_steps_per_s"] + evaluations * result["eval_s"]) / 3600)


def test_concurrent_copies_print_the_aggregate_table(capsys, private_tmp):
    status = bench.main(["e2e", *TINY, *FEWER_UPDATES, "--no-eval", "--concurrent", "1", "2"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    out = captured.out
    assert ("| experiment | task | compile | T | N | aggregate env steps/s | per-run env steps/s | min | max | "
            "common window | speedup vs N=1 |") in out
    rows = [row for row in _rows(out) if len(row) == 11]
    assert [row[4] for row in rows] == ["1", "2"]
    for row in rows:
        aggregate, per_run, low, high = (float(cell) for cell in row[5:9])
        assert aggregate > 0 and low <= per_run <= high
        assert aggregate == pytest.approx(int(row[4]) * per_run, rel=1e-3)
    assert rows[0][10] == "1.00x"
    assert re.search(r"best N: kalmamba cartpole_swingup none T=32: N=[12] \([\d.]+ env steps/s\)", out)


@pytest.mark.parametrize("argv,message", [
    (["--gin", "gin/does_not_exist.gin"], "gin file not found"),
    (["--overlay", "gin/does_not_exist.gin"], "gin file not found"),
    (["--gin", "gin/quick.gin"], "gin/quick.gin does not build an experiment"),
    (["--gin", "gin/offline/decision_mamba.gin"], "e2e times the online training loop"),
    (["--bind", "KalMamba.no_such_parameter = 1"], "no_such_parameter"),
    (["--task", "cartpole_fly"], "cartpole_fly"),
    (["--compile", "fast"], "invalid choice: 'fast'"),
    (["--compile", "none", "graph"], "--compile graph records CUDA graphs: it needs a CUDA device, not cpu"),
    (["--lengths", "1"], "--lengths must be >= 2"),
    (["--env-steps", "0"], "--env-steps: expected an integer >= 1"),
    (["--warmup-env-steps", "-1"], "--warmup-env-steps must be >= 0"),
    (["--json", "--concurrent"], "does not combine with --concurrent"),
    (["--overlay", "gin/quick.gin", "--lengths", "127"], "exceeds the 126 agent steps of a cartpole_swingup episode"),
])
def test_user_errors_exit_2_with_one_line_and_write_nothing(capsys, private_tmp, argv, message):
    try:
        status = bench.main(["e2e", "--device", "cpu", "--env-steps", "1000", *argv])
    except SystemExit as exit:  # argparse's own checks
        status = exit.code
    assert status == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and message in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1


def _one_config(argv):
    args = e2e._parse([*TINY, *argv])
    return args, e2e._configs(args, "cpu")[0]


def test_interrupting_the_parent_stops_every_copy(monkeypatch, tmp_path):
    started, start_process = [], executors.start_process

    def start(job):
        started.append(start_process(job))
        return started[-1]

    def interrupt(processes, jobs):  # Ctrl-C while the copies are still getting ready
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrent.executors, "start_process", start)
    monkeypatch.setattr(concurrent, "_check_running", interrupt)
    args, cfg = _one_config(["--concurrent", "2"])
    with pytest.raises(KeyboardInterrupt):
        concurrent.run_copies(args, e2e.argv_for_copy, cfg, 2, tmp_path / "copies")
    assert len(started) == 2 and all(process.poll() is not None for process in started)


def test_a_copy_that_fails_is_named_with_its_last_line(tmp_path):
    args, cfg = _one_config(["--concurrent", "1"])
    with pytest.raises(concurrent.CopyFailed, match=r"copy 0 exited with status 2 before its measured "
                                                      r"phase: error: --lengths must be >= 2"):
        concurrent.run_copies(args, lambda *_: ["--lengths", "1"], cfg, 1, tmp_path / "copies")


def test_call_clock_times_calls_and_restores_the_method():
    class Agent:
        def update(self, x):
            return x + 1

    agent, clock = Agent(), CallClock(torch.device("cpu"))
    with clock.wrapping(agent, "update"):
        assert agent.update(1) == 2 and agent.update(2) == 3
    assert clock.calls == 2 and clock.mean_ms() > 0
    assert "update" not in vars(agent) and agent.update(0) == 1
    assert CallClock("cpu").mean_ms() is None
