r"""The mamba_ssm CUDA selective-scan kernel behind the signature of `selective_scan`, resets included.

The kernel has no notion of an episode start. Resets are made exact by two substitutions at every
position t with is_first[t], with dt_t the discretisation step and M_e = min_n |A_en|:

    dt'_t = big_e = 128 / M_e          so exp(dt'_t A_en) <= exp(-128) = 0 in float32: h_{t-1} is dropped
    u'_t  = u_t dt_t / big_e           so dt'_t B_t u'_t = dt_t B_t u_t: the input term is unchanged

The skip term D u_t and the gate silu(z_t) are applied here, on the original u, rather than in the
kernel. Gradients stay exact: at a reset the kernel's gradient for u' carries the factor big_e,
which dt_t / big_e cancels, and exp(dt' A) = 0 contributes nothing to dA. The trick needs
big_e to stay finite (min |A| > 1e-36, i.e. A_log > -83), far outside any trained Mamba.
"""
import functools

import torch
import torch.nn.functional as F

from models.mamba.selective_scan import skip_and_gate

RESET_EXPONENT = 128.0  # exp(-128) underflows to exactly 0 in float32 (smallest subnormal ~1.4e-45)


@functools.cache
def mamba_ssm_available() -> bool:
    """True when mamba_ssm and its compiled CUDA extension import (it cannot without CUDA)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # no extension, or one built for another CUDA
        return False
    return True


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                        is_first=None, initial_state=None):
    """mamba_ssm kernel; shapes and results as `models.mamba.selective_scan.selective_scan`.

    initial_state is not supported by the kernel (pass None; use `selective_scan` to continue a
    sequence from a state). last_state is returned detached, as everywhere.
    """
    if initial_state is not None:
        raise ValueError("selective_scan_cuda cannot start from a given state; use selective_scan")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    def to_kernel(x):  # (B, L, X) -> (B, X, L), the kernel's layout
        return x.transpose(1, 2)

    if is_first is None:
        y, last_state = selective_scan_fn(
            to_kernel(u), to_kernel(delta), A.float(), to_kernel(B), to_kernel(C),
            None if D is None else D.float(), None if z is None else to_kernel(z),
            None if delta_bias is None else delta_bias.float(), delta_softplus, return_last_state=True)
        return to_kernel(y), last_state.detach()

    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    if delta_softplus:
        dt = F.softplus(dt)
    big = (RESET_EXPONENT / A.detach().float().abs().amin(dim=1)).to(u.dtype).float()  # (E,)
    reset = is_first.unsqueeze(-1)
    kernel_dt = torch.where(reset, big.expand_as(dt), dt).to(u.dtype)
    kernel_u = torch.where(reset, u.float() * (dt / big), u.float()).to(u.dtype)
    y, last_state = selective_scan_fn(
        to_kernel(kernel_u), to_kernel(kernel_dt), A.float(), to_kernel(B), to_kernel(C),
        None, None, None, False, return_last_state=True)
    return skip_and_gate(to_kernel(y).float(), u, D, z), last_state.detach()
