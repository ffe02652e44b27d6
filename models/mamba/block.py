r"""Mamba block with episode resets: time-parallel `forward` and a recurrent O(1)-state `step`.

Parameters have the names and shapes of `mamba_ssm.modules.mamba_simple.Mamba`, so a state_dict
loads in either (E = expand * d_model channels, N = d_state, R = dt_rank, K = d_conv):

    in_proj  (2E, d_model)     conv1d (E, 1, K) + bias (E,)     x_proj (R + 2N, E)
    dt_proj  (E, R) + bias (E,)     A_log (E, N)     D (E,)     out_proj (d_model, E)

Computation for x (B, L, d_model):

    u, z      = split(in_proj(x))                        (B, L, E) each
    u         = silu(causal depthwise conv of u, width K)   (taps never reach across an episode start)
    dt, Bm, Cm = split(x_proj(u)),  delta = dt_proj.weight dt     (bias enters as delta_bias)
    y         = selective_scan(u, delta, A = -exp(A_log), Bm, Cm, D, z, dt_proj.bias)
    out       = out_proj(y)

`is_first[b, t]` restarts the recurrent state at t: the SSM state and the conv window are zeroed, so
the output from t on equals running the block fresh on x[b, t:]. The state between calls is
`MambaState(conv (B, E, K): the last K conv inputs, oldest first; ssm (B, E, N))`, the layout of
mamba_ssm's inference cache.

On CUDA with mamba_ssm installed, the selective scan runs in mamba_ssm's kernel (resets through
the exact substitution in `models.mamba.cuda`); everywhere else, and when continuing from a given
state, it runs the pure-PyTorch associative scan.
"""
import math
from typing import NamedTuple

import gin
import torch
import torch.nn.functional as F
from torch import nn

from models.mamba.cuda import mamba_ssm_available, selective_scan_cuda
from models.mamba.selective_scan import selective_scan


class MambaState(NamedTuple):
    conv: torch.Tensor  # (B, E, K): last K inputs of the conv, oldest first
    ssm: torch.Tensor  # (B, E, N)


@gin.configurable
class Mamba(nn.Module):
    """Selective state-space block, (B, L, d_model) -> (B, L, d_model). See the module docstring."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 use_kernel: bool = True, device=None, dtype=None):
        super().__init__()
        if d_model < 1 or d_state < 1 or d_conv < 1 or expand < 1:
            raise ValueError(f"Mamba needs positive sizes, got d_model={d_model}, d_state={d_state}, "
                             f"d_conv={d_conv}, expand={expand}")
        factory = dict(device=device, dtype=dtype)
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_kernel = use_kernel
        E = self.d_inner

        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias, **factory)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(E, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, E, bias=True, **factory)
        self.out_proj = nn.Linear(E, d_model, bias=bias, **factory)

        # dt_proj keeps the variance of its input; its bias makes softplus(bias) log-uniform in
        # [dt_min, dt_max], so each channel starts with its own time scale.
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.empty(E, **factory).uniform_(math.log(dt_min), math.log(dt_max))
        dt = log_dt.exp().clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.dt_proj.bias._no_reinit = True
        # A = -(1, 2, ..., N) in every channel; kept in float32 like D.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(E, 1)
        self.A_log = nn.Parameter(A.log())
        self.D = nn.Parameter(torch.ones(E, device=device))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    @property
    def A(self) -> torch.Tensor:
        """(E, N) = -exp(A_log), in at least float32."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    def initial_state(self, batch_size: int) -> MambaState:
        """Zero state: what every sequence and every episode starts from."""
        weight = self.conv1d.weight
        return MambaState(weight.new_zeros(batch_size, self.d_inner, self.d_conv),
                          self.dt_proj.weight.new_zeros(batch_size, self.d_inner, self.d_state))

    def forward(self, x: torch.Tensor, is_first: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d_model), is_first (B, L) bool or None -> (B, L, d_model), from a zero state."""
        return self.forward_with_state(x, None, is_first)[0]

    def forward_with_state(self, x, state: MambaState | None = None, is_first=None):
        """Continue from `state` (None: zero) over x (B, L, d_model) -> (out, last state).

        The returned state is detached (it carries filtering forward, not gradients: mamba_ssm's
        kernel does not differentiate its last state, and every path behaves alike).
        """
        self._check_sequence(x, state, is_first)
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u, window = self._causal_conv(u, None if state is None else state.conv, is_first)
        u = F.silu(u)
        dt, Bm, Cm = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)
        scan = selective_scan_cuda if self._uses_kernel(x, state) else selective_scan
        y, ssm = scan(u, delta, self.A, Bm, Cm, self.D, z, self.dt_proj.bias, True, is_first,
                      None if state is None else state.ssm)
        return self.out_proj(y), MambaState(window.detach(), ssm.to(self.dt_proj.weight.dtype))

    def step(self, x: torch.Tensor, state: MambaState, is_first: torch.Tensor | None = None):
        """One time step: x (B, d_model), is_first (B,) bool or None -> (out (B, d_model), state).

        O(1) time and memory per step; differentiable through `state` (nothing is detached).
        """
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"Mamba.step needs x of shape (B, d_model={self.d_model}), got {got}")
        self._check_state(state, x.shape[0])
        if is_first is not None:
            keep = (~is_first).to(state.ssm.dtype)[:, None, None]
            state = MambaState(state.conv * keep.to(state.conv.dtype), state.ssm * keep)
        u, z = self.in_proj(x).chunk(2, dim=-1)
        window = torch.cat([state.conv[:, :, 1:], u.unsqueeze(-1)], dim=-1)
        u = (window * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        dt, Bm, Cm = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        ssm = torch.exp(delta.unsqueeze(-1) * self.A) * state.ssm + (delta * u).unsqueeze(-1) * Bm.unsqueeze(1)
        y = (torch.einsum("ben,bn->be", ssm, Cm) + self.D * u) * F.silu(z)
        return self.out_proj(y.to(x.dtype)), MambaState(window, ssm.to(state.ssm.dtype))

    def _uses_kernel(self, x, state) -> bool:
        kernel_dtype = x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        return self.use_kernel and state is None and x.is_cuda and kernel_dtype and mamba_ssm_available()

    def _causal_conv(self, u, window, is_first):
        """Depthwise causal conv over [window inputs, u] whose taps stop at episode starts.

        u: (B, L, E); window: (B, E, K) or None (zeros). Returns (conv output (B, L, E), new window).
        """
        K, L = self.d_conv, u.shape[1]
        if window is None:
            history = u.new_zeros(u.shape[0], K - 1, u.shape[2])
        else:
            history = window[:, :, 1:].transpose(1, 2).to(u.dtype)
        padded = torch.cat([history, u], dim=1)  # (B, K - 1 + L, E)
        if is_first is None:
            out = F.conv1d(padded.transpose(1, 2), self.conv1d.weight, self.conv1d.bias,
                           groups=self.d_inner).transpose(1, 2)
            return out, padded[:, -K:].transpose(1, 2)
        # Episode index of every padded position; the history belongs to the episode before t = 0.
        episode = F.pad(is_first.cumsum(1), (K - 1, 0))
        weight = self.conv1d.weight[:, 0]  # (E, K): tap k multiplies the input at t - (K - 1) + k
        out = 0 if self.conv1d.bias is None else self.conv1d.bias
        for k in range(K):
            same_episode = (episode[:, k:k + L] == episode[:, K - 1:]).unsqueeze(-1)
            out = out + weight[:, k] * padded[:, k:k + L] * same_episode
        last = (episode[:, -K:] == episode[:, -1:]).unsqueeze(-1)
        return out, (padded[:, -K:] * last).transpose(1, 2)

    def _check_sequence(self, x, state, is_first):
        if not torch.is_tensor(x) or x.dim() != 3 or x.shape[-1] != self.d_model or x.shape[1] == 0:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"Mamba needs x of shape (B, L >= 1, d_model={self.d_model}), got {got}")
        batch, length = x.shape[:2]
        if is_first is not None and (is_first.dtype != torch.bool or tuple(is_first.shape) != (batch, length)):
            raise ValueError(f"is_first must be a bool tensor of shape (B, L) = {(batch, length)}, "
                             f"got {is_first.dtype} {tuple(is_first.shape)}")
        if state is not None:
            self._check_state(state, batch)

    def _check_state(self, state, batch):
        expected = ((batch, self.d_inner, self.d_conv), (batch, self.d_inner, self.d_state))
        got = tuple(tuple(s.shape) for s in state) if isinstance(state, tuple) else type(state).__name__
        if got != expected:
            raise ValueError(f"state must be MambaState(conv {expected[0]}, ssm {expected[1]}), got {got}")
