"""A wheel built by `pip wheel .`, installed into a fresh venv, runs an experiment from any directory:
the gin tree ships inside the package (setup.py) and harness/config.py finds it there."""
import json
import site
import subprocess
import sys

import pytest

from harness.config import REPO_ROOT

pytestmark = pytest.mark.slow


def test_wheel_in_a_fresh_venv_runs_a_quick_experiment_outside_the_clone(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("ssm_bench-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, mujoco, ...) are this interpreter's: reused, not downloaded again
    (tmp_path / "venv" / purelib.split(str(venv) + "/", 1)[1] / "reuse_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import harness; print(harness.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), "the installed wheel, not the clone, must be imported"
    run = subprocess.run([python, "-m", "harness.run", "--gin", "gin/kalmamba_noisy.gin", "--gin", "gin/quick.gin",
                          "--bind", "Schedule.total_env_steps = 2000", "--no-progress"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    assert "Path not found" not in run.stderr and "ERROR" not in run.stderr, run.stderr
    run_dir = elsewhere / "results" / "default" / "kalmamba" / "noisy_state" / "cartpole_swingup" / "ctx32" / "seed0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["world_model"] == "models.kalmamba.KalMamba"
    assert "KalMamba.latent_dim = 32" in (run_dir / "config.gin").read_text()  # quick.gin's sizes applied
