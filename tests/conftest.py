"""Test-wide settings: headless rendering before any dm_control import, one torch thread.

Most tests run many small tensor ops, which are faster on one thread than split across the 2 cores
of a CI machine (and deterministic in their reduction order).
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

torch.set_num_threads(1)
