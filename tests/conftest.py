"""Test-wide settings: headless rendering before any dm_control import, one torch thread, and
Triton's interpreter where there is no CUDA device.

Most tests run many small tensor ops, which are faster on one thread than split across the 2 cores
of a CI machine (and deterministic in their reduction order). Triton reads TRITON_INTERPRET when a
kernel is defined, i.e. when `models.kalman_triton` is first imported, so it is set here, before any
test module can import it: without CUDA the fused Kalman kernels then run on CPU tensors (slowly,
on the tiny sizes of tests/models/test_kalman_triton.py); with CUDA they are compiled as usual.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

torch.set_num_threads(1)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
