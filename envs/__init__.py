"""DeepMind Control environments of the two benchmark suites: `make_env(suite, task, seed, ...)`,
also registered with gymnasium as GYMNASIUM_ID.

`envs.rendering` is imported first: it sets MUJOCO_GL=egl (unless set) before dm_control loads.
"""
from envs import rendering  # noqa: F401  (must precede any dm_control import)
import gymnasium

from envs.factory import GYMNASIUM_ID, make_env
from envs.suites import ALL_TASKS, DEFAULT_TASKS, SUITES

if GYMNASIUM_ID not in gymnasium.registry:  # gymnasium.make(GYMNASIUM_ID, suite=..., task=..., seed=...)
    gymnasium.register(GYMNASIUM_ID, entry_point="envs.factory:make_gymnasium_env")

__all__ = ["make_env", "GYMNASIUM_ID", "ALL_TASKS", "DEFAULT_TASKS", "SUITES"]
