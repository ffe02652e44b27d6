"""`python -m harness.bench env`: runs, prints a table with real numbers, rejects bad input."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def bench(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "harness.bench", "env", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_prints_a_table_for_both_suites():
    result = bench("--tasks", "cartpole_swingup", "reacher_easy", "--env-steps", "80", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    assert "pinned to core" in result.stdout
    for task, repeat in (("cartpole_swingup", 8), ("reacher_easy", 4)):
        row = re.search(rf"^\| {task} \| {repeat} \| (\d+) / (\d+) \| (\d+) / (\d+) \| (-?[\d.]+) \|$",
                        result.stdout, re.MULTILINE)
        assert row, result.stdout
        state_cpu, state_wall, image_cpu, image_wall = (int(value) for value in row.groups()[:4])
        assert min(state_cpu, state_wall, image_cpu, image_wall) > 0
        assert state_cpu > image_cpu  # rendering costs time


def test_bad_input_exits_with_code_2():
    unknown = bench("--tasks", "cartpole_fly")
    assert unknown.returncode == 2 and "unknown task 'cartpole_fly'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert bench("--env-steps", "0").returncode == 2
