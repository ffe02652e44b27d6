"""Mamba backbone: mamba_ssm's CUDA kernel when it imports and the input is on CUDA, else pure PyTorch.

`Mamba` makes that choice per call (see `models/mamba/block.py`); `selective_scan` (parallel),
`selective_scan_ref` (sequential) and `selective_scan_cuda` (kernel) share one signature.
"""
from models.mamba.block import Mamba, MambaState
from models.mamba.cuda import mamba_ssm_available, selective_scan_cuda
from models.mamba.selective_scan import selective_scan, selective_scan_ref

__all__ = ["Mamba", "MambaState", "mamba_ssm_available", "selective_scan", "selective_scan_cuda",
           "selective_scan_ref"]
