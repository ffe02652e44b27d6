r"""Diagonal Kalman filter and Rauch-Tung-Striebel smoother, sequential and time-parallel.

Model (all tensors (B, T, D); every latent dimension is an independent scalar filter, H = I):

    z_0 ~ N(mean0, var0)                       (and again wherever is_first[t]: an episode restarts)
    z_{t+1} = A_t z_t + b_t + N(0, Q_t)       (A, b, Q at the last step are unused)
    y_t     = z_t + N(0, R_t)                 (no update where mask[t] is False: y_t is missing)

Writing the transition *into* step t as (a_t, c_t, q_t) = (A_{t-1}, b_{t-1}, Q_{t-1}), and
(0, mean0, var0) at t = 0 or where is_first[t], every step is the same predict + update:

    predict:  m-_t = a_t m+_{t-1} + c_t,          P-_t = a_t^2 P+_{t-1} + q_t
    update:   s = P-_t + R_t,   K = P-_t / s,    m+_t = m-_t + K (y_t - m-_t),   P+_t = P-_t R_t / s

(K = 0 and P+_t = P-_t where y_t is missing). Smoother, with the gain G_t = P+_t A_t / P-_{t+1}:

    m^s_t = m+_t + G_t (m^s_{t+1} - m-_{t+1}),     P^s_t = G_t^2 P^s_{t+1} + P+_t Q_t / P-_{t+1}

and G_t = 0 (so m^s_t = m+_t, P^s_t = P+_t) at the last step and before an episode start.

Time-parallel form (Sarkka and Garcia-Fernandez 2021). Filter element of step t, for one scalar:

    e_t = (F, f, C, eta, J) = (a r/s', c + q (y - c)/s', q r/s', a (y - c)/s', a^2/s'),  s' = q + r

encodes p(z_t | z_{t-1}, y_t) = N(F z_{t-1} + f, C) and the likelihood of y_t as a function of z_{t-1}
in information form (eta, J). With a missing observation r = inf: (a, c, q, 0, 0). At a start a = 0
cuts the dependence on earlier steps. Combining earlier i with later j, d = 1 + C_i J_j >= 1:

    F = F_j F_i / d,   f = F_j (f_i + C_i eta_j) / d + f_j,   C = F_j^2 C_i / d + C_j,
    eta = F_i (eta_j - J_j f_i) / d + eta_i,   J = F_i^2 J_j / d + J_i,

and the prefix (f, C) up to t is (m+_t, P+_t). Smoother element of step t: (G_t, m+_t - G_t m-_{t+1},
P+_t Q_t / P-_{t+1}) is the affine map (m^s_{t+1}, P^s_{t+1}) -> (m^s_t, P^s_t); a reverse scan
composes those maps. All denominators are >= the added noise, so float32 stays finite and every
variance is a sum of non-negative terms.
"""
import functools
from typing import NamedTuple

import torch

from models.scan import associative_scan


class FilterResult(NamedTuple):
    """Marginals (B, T, D); predicted_* at t is the prior of z_t before seeing y_t. is_first (B, T)
    bool marks the steps whose prior was the initial belief (step 0 and every episode start): the
    smoother reads it from here, so it cannot smooth across a reset the filter restarted at.
    From `kalman_step` all are one step: (B, D) and is_first (B,)."""

    filtered_mean: torch.Tensor
    filtered_var: torch.Tensor
    predicted_mean: torch.Tensor
    predicted_var: torch.Tensor
    is_first: torch.Tensor


class SmootherResult(NamedTuple):
    """All (B, T, D). gain[t] = P+_t A_t / P-_{t+1}; zero at the last step and before a reset."""

    smoothed_mean: torch.Tensor
    smoothed_var: torch.Tensor
    gain: torch.Tensor


# ---------------------------------------------------------------------------------------------
# Single steps (any leading shape, e.g. (B, D) when acting online).

def kalman_predict(mean, var, A, b, Q):
    """Prior of the next state: (A mean + b, A^2 var + Q)."""
    return A * mean + b, A * A * var + Q


def kalman_update(mean, var, y, R, mask=None):
    """Condition N(mean, var) on y = z + N(0, R); unchanged where mask is False.

    mask: bool broadcastable to `mean` (None: everything observed). Values of y and R where mask is
    False are ignored (they may be NaN or inf).
    """
    if mask is None:
        s = var + R
        return mean + var / s * (y - mean), var * R / s
    y, R, observed = _drop_missing(y, R, mask)
    s = var + R
    gain = observed * var / s
    return mean + gain * (y - mean), var * (R + (1 - observed) * var) / s


def _drop_missing(y, R, mask):
    """(y, R, observed as 0/1) with y = 0, R = 1 where missing, so no NaN or inf reaches autograd."""
    return (torch.where(mask, y, torch.zeros_like(y)), torch.where(mask, R, torch.ones_like(R)),
            mask.to(y.dtype))


def kalman_step(mean, var, A, b, Q, y, R, mask=None, is_first=None, mean0=None, var0=None) -> FilterResult:
    """One predict + update for a model acting online; all (B, D) except mask, is_first: (B,) bool.

    (mean, var) is the filtered belief of z_{t-1}; (A, b, Q) the transition z_{t-1} -> z_t.
    Where is_first, the prior of z_t is N(mean0, var0) instead; where mask is False, y is missing.
    Returns a FilterResult of (B, D), is_first (B,).
    """
    if is_first is not None:
        if mean0 is None or var0 is None:
            raise ValueError("kalman_step needs mean0 and var0 when is_first is given")
        A, b, Q = _restart(A, b, Q, is_first.unsqueeze(-1), mean0, var0)
    else:
        is_first = torch.zeros(y.shape[:-1], dtype=torch.bool, device=y.device)
    pred_mean, pred_var = kalman_predict(mean, var, A, b, Q)
    filt_mean, filt_var = kalman_update(pred_mean, pred_var, y, R, None if mask is None else mask.unsqueeze(-1))
    return FilterResult(filt_mean, filt_var, pred_mean, pred_var, is_first)


def rts_step(filtered_mean, filtered_var, A, b, Q, next_smoothed_mean, next_smoothed_var):
    """One backward smoother step; returns (smoothed_mean, smoothed_var, gain) for time t.

    A, b, Q are the transition z_t -> z_{t+1}; pass A = 0, Q = 1 where no information flows back
    (last step, or z_{t+1} starts an episode): then the result is the filtered belief, gain 0.
    """
    pred_mean, pred_var = kalman_predict(filtered_mean, filtered_var, A, b, Q)
    gain = filtered_var * A / pred_var
    mean = filtered_mean + gain * (next_smoothed_mean - pred_mean)
    var = gain * gain * next_smoothed_var + filtered_var * Q / pred_var
    return mean, var, gain


def _restart(A, b, Q, restart, mean0, var0):
    """Replace the transition by (0, mean0, var0) where `restart` (bool, broadcastable)."""
    return (torch.where(restart, torch.zeros_like(A), A), torch.where(restart, mean0, b),
            torch.where(restart, var0, Q))


# ---------------------------------------------------------------------------------------------
# Whole sequences.

BACKENDS = ("scan", "sequential", "triton")


def kalman_filter(A, b, Q, y, R, mean0, var0, mask=None, is_first=None, backend="scan") -> FilterResult:
    """Filtered and one-step predicted marginals of z_t for every t (see the module docstring).

    A, b, Q, y, R: (B, T, D) (A, b, Q, R may be anything broadcastable to y's shape);
    mean0, var0: broadcastable to (B, D); mask, is_first: (B, T) bool or None.
    backend: 'scan' (associative scan), 'sequential' (the reference) or 'triton' (fused kernels of
    `models.kalman_triton`; CUDA tensors, or CPU under TRITON_INTERPRET=1); same results.
    """
    A, b, Q, y, R, mean0, var0, mask, is_first = _check_filter_inputs(A, b, Q, y, R, mean0, var0, mask, is_first)
    return _implementation(backend, "filter")(A, b, Q, y, R, mean0, var0, mask, is_first)


def kalman_smoother(filtered: FilterResult, A, b, Q, backend="scan") -> SmootherResult:
    """Smoothed marginals of z_t given all of y, and the smoother gains (see the module docstring).

    filtered: the result of `kalman_filter` on the same sequence, whose `is_first` says where
    episodes start (no information flows back across them); A, b, Q: as given to the filter;
    backend: as for `kalman_filter`.
    """
    mean, var = filtered.filtered_mean, filtered.filtered_var
    if mean.dim() != 3 or var.shape != mean.shape:
        raise ValueError(f"kalman_smoother needs filtered mean and var of shape (B, T, D), got "
                         f"{tuple(mean.shape)} and {tuple(var.shape)}")
    A, b, Q = (_expand(name, x, mean.shape) for name, x in (("A", A), ("b", b), ("Q", Q)))
    is_first = _check_flags("filtered.is_first", filtered.is_first, mean, required=True)
    return _implementation(backend, "smoother")(mean, var, A, b, Q, is_first)


@functools.cache
def triton_available() -> bool:
    """Whether triton imports (the 'triton' backend needs it)."""
    try:
        import models.kalman_triton  # noqa: F401
    except ImportError:
        return False
    return True


def _implementation(backend, which):
    if backend == "triton":
        if not triton_available():
            raise ValueError(f"kalman {which} backend 'triton' needs the triton package, which does not import")
        from models import kalman_triton
        return getattr(kalman_triton, f"kalman_{which}_triton")
    if backend == "scan":
        return kalman_filter_parallel if which == "filter" else kalman_smoother_parallel
    if backend == "sequential":
        return kalman_filter_sequential if which == "filter" else kalman_smoother_sequential
    raise ValueError(f"kalman {which} backend must be one of {BACKENDS}, got {backend!r}")


def kalman_filter_sequential(A, b, Q, y, R, mean0, var0, mask, is_first) -> FilterResult:
    """Reference: one `kalman_step` per time step. Inputs as checked by `kalman_filter`."""
    # unbind once: indexing x[:, t] inside the loop would make the backward O(T^2)
    A, b, Q, y, R, mask, is_first = (x.unbind(1) for x in (A, b, Q, y, R, mask, _with_first_step(is_first)))
    mean, var = mean0, var0
    outputs = []
    for t in range(len(y)):
        restart = is_first[t]
        prev = max(t - 1, 0)  # at t = 0 the restart replaces the transition anyway
        step = kalman_step(mean, var, A[prev], b[prev], Q[prev], y[t], R[t], mask[t], restart, mean0, var0)
        mean, var = step.filtered_mean, step.filtered_var
        outputs.append(step)
    return FilterResult(*(torch.stack(column, 1) for column in zip(*outputs)))


def kalman_filter_parallel(A, b, Q, y, R, mean0, var0, mask, is_first) -> FilterResult:
    """Associative-scan filter, O(log T) depth. Inputs as checked by `kalman_filter`."""
    a, c, q = _transitions_into(A, b, Q, mean0, var0, is_first)
    y, r, weight = _drop_missing(y, R, mask.unsqueeze(-1))
    s = q + r
    keep = (r + (1 - weight) * q) / s  # r / s where observed, 1 where missing
    residual = weight / s * (y - c)
    elements = (a * keep, c + q * residual, q * keep, a * residual, a * a * weight / s)
    _, mean, var, _, _ = associative_scan(_combine_filter, elements, dim=1)
    pred_mean, pred_var = kalman_predict(_shift_right(mean), _shift_right(var), a, c, q)
    return FilterResult(mean, var, pred_mean, pred_var, _with_first_step(is_first))


def kalman_smoother_sequential(mean, var, A, b, Q, is_first) -> SmootherResult:
    """Reference: one `rts_step` per time step, backwards. Inputs as checked by `kalman_smoother`."""
    A, Q = _cut_before_starts(A, Q, is_first)
    steps = list(zip(*(x.unbind(1) for x in (mean, var, A, b, Q))))
    next_mean, next_var = torch.zeros_like(steps[0][0]), torch.zeros_like(steps[0][1])
    outputs = []
    for step in reversed(steps):
        next_mean, next_var, gain = rts_step(*step, next_mean, next_var)
        outputs.append((next_mean, next_var, gain))
    return SmootherResult(*(torch.stack(column[::-1], 1) for column in zip(*outputs)))


def kalman_smoother_parallel(mean, var, A, b, Q, is_first) -> SmootherResult:
    """Reverse associative scan over the affine smoother maps. Inputs as checked by `kalman_smoother`."""
    A, Q = _cut_before_starts(A, Q, is_first)
    pred_mean, pred_var = kalman_predict(mean, var, A, b, Q)
    gain = var * A / pred_var
    elements = (gain, mean - gain * pred_mean, var * Q / pred_var)
    _, smoothed_mean, smoothed_var = associative_scan(_combine_smoother, elements, dim=1, reverse=True)
    return SmootherResult(smoothed_mean, smoothed_var, gain)


def _combine_filter(earlier, later):
    F_i, f_i, C_i, eta_i, J_i = earlier
    F_j, f_j, C_j, eta_j, J_j = later
    inv_d = 1 / torch.addcmul(torch.ones_like(C_i), C_i, J_j)
    Fj_d, Fi_d = F_j * inv_d, F_i * inv_d
    return (Fj_d * F_i,
            torch.addcmul(f_j, Fj_d, torch.addcmul(f_i, C_i, eta_j)),
            torch.addcmul(C_j, Fj_d * F_j, C_i),
            torch.addcmul(eta_i, Fi_d, eta_j - J_j * f_i),
            torch.addcmul(J_i, Fi_d * F_i, J_j))


def _combine_smoother(earlier, later):
    G_i, g_i, L_i = earlier
    G_j, g_j, L_j = later
    return G_i * G_j, torch.addcmul(g_i, G_i, g_j), torch.addcmul(L_i, G_i * G_i, L_j)


def _with_first_step(is_first):
    """(B, T) bool: is_first with step 0 set, the steps whose prior is the initial belief."""
    restart = is_first.clone()
    restart[:, 0] = True
    return restart


def _transitions_into(A, b, Q, mean0, var0, is_first):
    """(a_t, c_t, q_t): the transition into step t, (0, mean0, var0) at t = 0 and at resets."""
    return _restart(_shift_right(A), _shift_right(b), _shift_right(Q), _with_first_step(is_first).unsqueeze(-1),
                    mean0.unsqueeze(1), var0.unsqueeze(1))


def _cut_before_starts(A, Q, is_first):
    """A = 0, Q = 1 at the last step and before resets, so nothing flows back across them."""
    cut = torch.ones_like(is_first)
    cut[:, :-1] = is_first[:, 1:]
    cut = cut.unsqueeze(-1)
    return torch.where(cut, torch.zeros_like(A), A), torch.where(cut, torch.ones_like(Q), Q)


def _shift_right(x):
    """x[:, t-1] at t (zeros at t = 0)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)


# ---------------------------------------------------------------------------------------------
# Input checks: one clear message instead of a broadcasting traceback deep inside the scan.

def _check_filter_inputs(A, b, Q, y, R, mean0, var0, mask, is_first):
    if not torch.is_tensor(y) or y.dim() != 3 or y.shape[1] == 0:
        raise ValueError(f"kalman_filter needs y of shape (B, T, D) with T >= 1, got "
                         f"{tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
    shape = y.shape
    A, b, Q, R = (_expand(name, x, shape) for name, x in (("A", A), ("b", b), ("Q", Q), ("R", R)))
    mean0, var0 = (_expand(name, x, (shape[0], shape[2])) for name, x in (("mean0", mean0), ("var0", var0)))
    mask = _check_flags("mask", mask, y, default=True)
    is_first = _check_flags("is_first", is_first, y)
    return A, b, Q, y, R, mean0, var0, mask, is_first


def _expand(name, x, shape):
    x = torch.as_tensor(x)
    try:
        return x.expand(shape)
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(x.shape)} does not broadcast to {tuple(shape)}") from None


def _check_flags(name, flags, like, default=False, required=False):
    """(B, T) bool matching `like` (B, T, D), or None meaning all `default` (unless required)."""
    shape = like.shape
    if flags is None and not required:
        return torch.full(tuple(shape[:2]), default, dtype=torch.bool, device=like.device)
    if not torch.is_tensor(flags) or flags.dtype != torch.bool or tuple(flags.shape) != tuple(shape[:2]):
        got = f"{flags.dtype} {tuple(flags.shape)}" if torch.is_tensor(flags) else type(flags).__name__
        raise ValueError(f"{name} must be a bool tensor of shape (B, T) = {tuple(shape[:2])}, got {got}")
    return flags
