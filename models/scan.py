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
their last element along). Besides `combine` there are only views (split, unbind) and
`torch.stack`/`torch.cat`, whose backwards are again stack/cat rather than zero-filled gradient
buffers: autograd differentiates through it, and kernel launches grow with log T, not T.
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


def _split(elems: Elements, dim: int, sizes: list[int]) -> list[Elements]:
    """Consecutive pieces along `dim` (views; the backward is one `cat`, not zeros + copy)."""
    return list(zip(*(e.split(sizes, dim) for e in elems)))


def _deinterleave(elems: Elements, dim: int) -> tuple[Elements, Elements]:
    """Even and odd positions of an even-length sequence (views; the backward is one `stack`)."""
    pairs = [e.unflatten(dim, (e.shape[dim] // 2, 2)).unbind(dim + 1) for e in elems]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def _scan(combine: Combine, elems: Elements, dim: int) -> Elements:
    length = elems[0].shape[dim]
    if length < 2:
        return elems
    half = length // 2
    body, last = _split(elems, dim, [2 * half, 1]) if length % 2 else (elems, None)
    even, odd = _deinterleave(body, dim)
    odd_prefix = _scan(combine, tuple(combine(even, odd)), dim)  # prefixes at 1, 3, ..., 2 half - 1
    first, even_rest = _split(even, dim, [1, half - 1])  # elements 0 | 2, 4, ..., 2 half - 2
    if last is None:  # even prefixes at 2, ..., 2 half - 2
        earlier, later = _split(odd_prefix, dim, [half - 1, 1])[0], even_rest
    else:  # ... and at 2 half, the last position
        earlier, later = odd_prefix, tuple(torch.cat([r, l], dim) for r, l in zip(even_rest, last))
    tail = tuple(combine(earlier, later)) if later[0].shape[dim] else later
    even_prefix = tuple(torch.cat([f, t], dim) for f, t in zip(first, tail))
    return tuple(_interleave(e, o, dim) for e, o in zip(even_prefix, odd_prefix))


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int) -> torch.Tensor:
    """[even_0, odd_0, even_1, odd_1, ...]; `even` is as long as `odd` or one longer."""
    n_odd = odd.shape[dim]
    if even.shape[dim] == n_odd:
        return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)
    head, last = even.split([n_odd, 1], dim)
    return torch.cat([torch.stack([head, odd], dim + 1).flatten(dim, dim + 1), last], dim)


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
