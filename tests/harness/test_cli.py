"""Every entry point: `--help` exits 0 and explains each option; a bad value is one line naming it."""
import re
import subprocess
import sys

import pytest

from harness.config import REPO_ROOT

ENTRY_POINTS = ("run", "sweep", "aggregate", "report", "bench", "evaluate")


def python_m(module, *args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def options_without_help(text):
    """Options of an argparse --help listing that have no help text after them."""
    lines = text.split("\noptions:\n", 1)[1].split("\n\n")[0].splitlines()
    bare = []
    for i, line in enumerate(lines):
        match = re.match(r"^  (-\w, )?(--?[\w-]+)(.*)$", line)
        if not match:
            continue
        has_text = re.search(r"\S\s{2,}\S", line.strip()) or (
            i + 1 < len(lines) and re.match(r"^\s{6,}\S", lines[i + 1]) and not re.match(r"^  -", lines[i + 1]))
        if not has_text:
            bare.append(match.group(2))
    return bare


@pytest.mark.parametrize("tool", ENTRY_POINTS)
def test_help_is_complete(tool):
    result = python_m(f"harness.{tool}", "--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    usage, description = result.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: python -m harness.{tool} ")
    assert description.strip().endswith("."), f"the description is cut: {description!r}"
    assert options_without_help(result.stdout) == [], "every option explains itself"


def test_report_help_names_its_own_output_directory():
    text = " ".join(python_m("harness.report", "--help").stdout.split())
    assert "--out DIR output directory (default: RESULTS_DIR/report" in text


@pytest.mark.parametrize("tool, args, words", [
    ("run", ["--gin", "gin/quick.gin", "--device", "gpu"], ["--device", "'gpu'"]),
    ("sweep", ["--gin", "gin/sweeps/tiny.gin", "--workers", "0"], ["--workers", "'0'"]),
    ("sweep", ["--gin", "gin/sweeps/tiny.gin", "--grace", "-1"], ["--grace", "'-1'"]),
    ("aggregate", ["results", "--reps", "0"], ["--reps", "'0'"]),
    ("report", ["results", "--confidence", "1.5"], ["--confidence", "'1.5'"]),
    ("evaluate", ["results", "--episodes", "two"], ["--episodes", "'two'"]),
    ("bench", ["nope"], ["benchmark", "'nope'"]),
    ("bench", ["env", "--env-steps", "0"], ["--env-steps"]),
])
def test_a_bad_value_is_one_line_naming_its_parameter(tool, args, words):
    result = python_m(f"harness.{tool}", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr


def test_bench_passes_options_to_the_benchmark():
    result = python_m("harness.bench", "kalman", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m harness.bench kalman")
