"""Associative scan: order, lengths, directions, depth, work, gradients."""
import math

import pytest
import torch

from models.scan import associative_scan, linear_recurrence

LENGTHS = [1, 2, 3, 5, 7, 8, 13, 64, 100]


def matmul_combine(earlier, later):
    """2x2 matrix products, later @ earlier: associative and not commutative, so order shows."""
    return (later[0] @ earlier[0],)


def random_matrices(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 2, 2, generator=g, dtype=torch.float64) / 1.5


def sequential_products(m, reverse=False):
    steps = range(m.shape[1] - 1, -1, -1) if reverse else range(m.shape[1])
    acc, out = None, [None] * m.shape[1]
    for t in steps:
        acc = m[:, t] if acc is None else (acc @ m[:, t] if reverse else m[:, t] @ acc)
        out[t] = acc
    return torch.stack(out, 1)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
def test_noncommutative_scan_matches_sequential_fold(T, reverse):
    m = random_matrices(3, T, seed=T)
    (got,) = associative_scan(matmul_combine, (m,), dim=1, reverse=reverse)
    torch.testing.assert_close(got, sequential_products(m, reverse), rtol=0, atol=1e-12)


@pytest.mark.parametrize("T", LENGTHS)
def test_tuple_elements_and_other_time_axis(T):
    """Sums and maxima carried together, time on axis 0 (and given as a negative dim)."""
    x = torch.randn(T, 4, dtype=torch.float64)
    combine = lambda e, l: (e[0] + l[0], torch.maximum(e[1], l[1]))  # noqa: E731
    total, running_max = associative_scan(combine, (x, -x), dim=-2)
    torch.testing.assert_close(total, x.cumsum(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(running_max, (-x).cummax(0).values, rtol=0, atol=0)


@pytest.mark.parametrize("T", [1, 2, 3, 7, 8, 9, 100, 1000, 1024, 1025])
def test_depth_is_logarithmic_and_work_linear(T):
    calls, combined = [0], [0]

    def counting_add(earlier, later):
        calls[0] += 1
        combined[0] += earlier[0].shape[1]
        return (earlier[0] + later[0],)

    x = torch.arange(T, dtype=torch.float64).reshape(1, T)
    (got,) = associative_scan(counting_add, (x,))
    torch.testing.assert_close(got, x.cumsum(1), rtol=0, atol=0)
    assert calls[0] <= 2 * math.ceil(math.log2(T)) if T > 1 else calls[0] == 0
    assert combined[0] <= 2 * T


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_recurrence_and_its_gradient(T, reverse):
    g = torch.Generator().manual_seed(T)
    a = torch.rand(2, T, 3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, T, 3, generator=g, dtype=torch.float64).requires_grad_()
    weights = torch.randn(2, T, 3, generator=g, dtype=torch.float64)

    h, expected = linear_recurrence(a, b, reverse=reverse), []
    state = torch.zeros(2, 3, dtype=torch.float64)
    for t in (reversed(range(T)) if reverse else range(T)):
        state = a[:, t] * state + b[:, t]
        expected.append(state)
    expected = torch.stack(expected[::-1] if reverse else expected, 1)
    torch.testing.assert_close(h, expected, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((weights * h).sum(), (a, b), materialize_grads=True)  # a_0 is unused
    expected_grads = torch.autograd.grad((weights * expected).sum(), (a, b), materialize_grads=True)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_gradcheck_through_the_scan():
    m = random_matrices(1, 6, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: associative_scan(matmul_combine, (x,))[0], (m,))
    assert torch.autograd.gradcheck(lambda x: associative_scan(matmul_combine, (x,), reverse=True)[0], (m,))


@pytest.mark.parametrize("elems,message", [
    ((), "at least one tensor"),
    ((torch.zeros(2, 3), torch.zeros(2, 4)), "same length along dim 1"),
    ((torch.zeros(2, 0),), "non-empty time axis"),
])
def test_bad_inputs_raise_one_clear_error(elems, message):
    with pytest.raises(ValueError, match=message):
        associative_scan(lambda e, l: e, elems)
