r"""Selective scan (the SSM inside Mamba) in pure PyTorch: time-parallel, and its sequential `_ref` twin.

Shapes (batch-first; E = channels, N = state size):
    u, delta, z: (B, L, E)    A: (E, N)    B, C: (B, L, N)    D, delta_bias: (E,)
    is_first: (B, L) bool     initial_state, last_state: (B, E, N)    y: (B, L, E)

Math, per channel e and state entry n:

    dt_t  = softplus(delta_t + delta_bias)              (no softplus if delta_softplus=False)
    h_t   = exp(dt_t A) h_{t-1} + dt_t B_t u_t          (h_{-1} = initial_state or 0;
                                                         h_{t-1} is dropped where is_first[t])
    y_t   = (C_t . h_t + D u_t) * silu(z_t)

The recurrence h_t = a_t h_{t-1} + b_t is a linear recurrence, computed by associative scan in
O(log L) depth (`models.scan.linear_recurrence`). Both functions compute in at least float32 and
return y in u's dtype, and `last_state` = h_{L-1} detached: it is for continuing a sequence, not
for backpropagating across chunks.
"""
import torch
import torch.nn.functional as F

from models.scan import linear_recurrence


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                   is_first=None, initial_state=None):
    """Time-parallel selective scan; returns (y (B, L, E), last_state (B, E, N))."""
    decay, drive, C, compute_dtype = _discretize(u, delta, A, B, C, delta_bias, delta_softplus, is_first)
    if initial_state is not None:
        first = drive[:, :1] + decay[:, :1] * initial_state.to(compute_dtype).unsqueeze(1)
        drive = torch.cat([first, drive[:, 1:]], 1)
    states = linear_recurrence(decay, drive, dim=1)  # (B, L, E, N)
    y = torch.einsum("blen,bln->ble", states, C)
    return skip_and_gate(y, u, D, z), states[:, -1].detach()


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                       is_first=None, initial_state=None):
    """Sequential reference, one time step at a time; same signature and results as `selective_scan`."""
    decay, drive, C, compute_dtype = _discretize(u, delta, A, B, C, delta_bias, delta_softplus, is_first)
    state = decay.new_zeros(decay[:, 0].shape) if initial_state is None else initial_state.to(compute_dtype)
    ys = []
    for decay_t, drive_t, C_t in zip(decay.unbind(1), drive.unbind(1), C.unbind(1)):
        state = decay_t * state + drive_t
        ys.append(torch.einsum("ben,bn->be", state, C_t))
    return skip_and_gate(torch.stack(ys, 1), u, D, z), state.detach()


def _discretize(u, delta, A, B, C, delta_bias, delta_softplus, is_first):
    """decay = exp(dt A) (zero where is_first), drive = dt B u: both (B, L, E, N)."""
    compute_dtype = torch.promote_types(u.dtype, torch.float32)
    u, delta, B, C = (x.to(compute_dtype) for x in (u, delta, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute_dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta.unsqueeze(-1) * A.to(compute_dtype))
    if is_first is not None:
        decay = decay.masked_fill(is_first[:, :, None, None], 0)
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    return decay, drive, C, compute_dtype


def skip_and_gate(y, u, D, z):
    """(y + D u) * silu(z), computed in y's dtype, returned in u's."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(u.dtype)
