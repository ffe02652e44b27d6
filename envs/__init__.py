"""DeepMind Control environments of the two benchmark suites: `make_env(suite, task, seed, ...)`.

`envs.rendering` is imported first: it sets MUJOCO_GL=egl (unless set) before dm_control loads.
"""
from envs import rendering  # noqa: F401  (must precede any dm_control import)
from envs.factory import make_env
from envs.suites import ALL_TASKS, DEFAULT_TASKS, SUITES

__all__ = ["make_env", "ALL_TASKS", "DEFAULT_TASKS", "SUITES"]
