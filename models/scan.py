"""Associative scans over the time axis, forward and reverse, for tuples of tensors.

For an associative operator (x) and elements e_0 .. e_{T-1} (each a tuple of tensors that share the
time axis `dim`), the forward scan returns the prefixes

    s_k = e_0 (x) e_1 (x) ... (x) e_k,

and the reverse scan the suffixes  s_k = e_k (x) e_{k+1} (x) ... (x) e_{T-1}.  The operator is always
called as `combine(earlier, later)`, in both directions, so one operator serves both.

Algorithm (odd-even recursion): combine neighbouring pairs (e_0, e_1), (e_2, e_3), ...; scan that
half-length sequence recursively, which yields the prefixes at odd positions; each even prefix
s_{2k} is then s_{2k-1} (x) e_{2k}. Every level calls `combine` twice on whole tensors, so the depth
is 2 ceil(log2 T) calls and the work at most 2T element combinations, for any T (odd lengths carry
their last element along). Everything is slicing, `combine` and `torch.stack`/`torch.cat`, so
autograd differentiates through it and the number of kernel launches grows with log T, not T.
"""
from typing import Callable, Sequence

import torch

Elements = tuple[torch.Tensor, ...]
Combine = Callable[[Elements, Elements], Sequence[torch.Tensor]]


def associative_scan(combine: Combine, elems: Sequence[torch.Tensor], dim: int = 1,
                     reverse: bool = False) -> Elements:
    """Inclusive scan of `elems` along `dim` with the associative `combine(earlier, later)`.

    elems: tensors with the same length T >= 1 along `dim` (other dimensions may differ, as long as
    `combine` handles them). Returns a tuple shaped like `elems`.
    """
    elems = tuple(elems)
    if not elems:
        raise ValueError("associative_scan needs at least one tensor")
    dim = dim % elems[0].dim()
    length = elems[0].shape[dim]
    if any(e.shape[dim] != length for e in elems):
        raise ValueError(f"all tensors need the same length along dim {dim}: "
                         f"got {[tuple(e.shape) for e in elems]}")
    if length == 0:
        raise ValueError("associative_scan needs a non-empty time axis")
    if not reverse:
        return _scan(combine, elems, dim)
    flipped = tuple(e.flip(dim) for e in elems)
    suffixes = _scan(lambda later, earlier: combine(earlier, later), flipped, dim)
    return tuple(s.flip(dim) for s in suffixes)


def _take(elems: Elements, dim: int, start: int, stop: int | None, step: int = 1) -> Elements:
    index = (slice(None),) * dim + (slice(start, stop, step),)
    return tuple(e[index] for e in elems)


def _scan(combine: Combine, elems: Elements, dim: int) -> Elements:
    length = elems[0].shape[dim]
    if length < 2:
        return elems
    pairs = tuple(combine(_take(elems, dim, 0, length - 1, 2), _take(elems, dim, 1, None, 2)))
    odd = _scan(combine, pairs, dim)  # prefixes at positions 1, 3, 5, ...
    rest = _take(elems, dim, 2, None, 2)  # elements at positions 2, 4, ...
    n_rest = rest[0].shape[dim]
    if n_rest:
        tail = tuple(combine(_take(odd, dim, 0, n_rest), rest))
        even = tuple(torch.cat([e0, t], dim) for e0, t in zip(_take(elems, dim, 0, 1), tail))
    else:
        even = _take(elems, dim, 0, 1)
    return tuple(_interleave(e, o, dim) for e, o in zip(even, odd))


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int) -> torch.Tensor:
    """[even_0, odd_0, even_1, odd_1, ...]; `even` is as long as `odd` or one longer."""
    n_odd = odd.shape[dim]
    paired = torch.stack([even.narrow(dim, 0, n_odd), odd], dim + 1).flatten(dim, dim + 1)
    if even.shape[dim] == n_odd:
        return paired
    return torch.cat([paired, even.narrow(dim, n_odd, 1)], dim)


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, dim: int = 1, reverse: bool = False) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t with h_{-1} = 0 (reverse: h_t = a_t h_{t+1} + b_t, h_T = 0).

    a, b: broadcastable tensors with the time axis at `dim`; returns h shaped like a * b.
    The pair (a, b) is the affine map h -> a h + b; composing two such maps is associative:
    earlier (a_i, b_i) then later (a_j, b_j) gives (a_j a_i, a_j b_i + b_j) (reverse: the map of
    the earlier step is applied last, which `combine(earlier, later)` expresses the same way).
    """
    a, b = torch.broadcast_tensors(a, b)
    combine = _compose_reverse if reverse else _compose_forward
    return associative_scan(combine, (a, b), dim=dim, reverse=reverse)[1]


def _compose_forward(earlier: Elements, later: Elements) -> Elements:
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j * a_i, torch.addcmul(b_j, a_j, b_i)


def _compose_reverse(earlier: Elements, later: Elements) -> Elements:
    a_i, b_i = earlier
    a_j, b_j = later
    return a_i * a_j, torch.addcmul(b_i, a_i, b_j)
