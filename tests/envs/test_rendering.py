"""MUJOCO_GL selection and the message a user sees when EGL cannot be used."""
import os
import subprocess
import sys

import pytest

from envs import rendering

PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"


def run_python(code, **environment):
    env = {key: value for key, value in os.environ.items() if key not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_egl_is_the_default_and_a_user_choice_is_kept(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    assert rendering.configure_headless_backend() == "egl" and os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert rendering.configure_headless_backend() == "osmesa" and os.environ["MUJOCO_GL"] == "osmesa"


def test_importing_envs_selects_egl_before_dm_control():
    result = run_python("import os, sys, envs; print(os.environ['MUJOCO_GL'], 'dm_control' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["egl", "False"]


MAKE_IMAGE_ENV = ("import envs\n"
                  "try:\n"
                  "    envs.make_env('image', 'cartpole_swingup', 0).reset()\n"
                  "except envs.rendering.RenderingUnavailableError as error:\n"
                  "    print(error)\n")


@pytest.mark.parametrize("environment", [
    {"__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent.json"},  # no EGL driver, as without libegl-mesa0
    {"PYOPENGL_PLATFORM": "osmesa"},  # PyOpenGL bound to another platform
])
def test_egl_failure_names_the_debian_packages(environment):
    result = run_python(MAKE_IMAGE_ENV, MUJOCO_GL="egl", **environment)
    assert result.returncode == 0, result.stderr
    assert PACKAGES in result.stdout and "MUJOCO_GL='egl'" in result.stdout


def test_disabled_rendering_still_runs_states_but_explains_images():
    code = "import numpy as np, envs\nenv = envs.make_env('noisy_state', 'cartpole_swingup', 0)\nenv.reset()\n"
    result = run_python(code + "env.step(np.zeros(1))\n" + MAKE_IMAGE_ENV, MUJOCO_GL="disable")
    assert result.returncode == 0, result.stderr
    assert "switched off by MUJOCO_GL='disable'" in result.stdout
