"""Fused Triton Kalman filter + RTS smoother (`models.kalman_triton`) against the float64 sequential
reference of `models.kalman`: all seven outputs and the gradients of every floating input under a
random cotangent on every output, with missing observations, resets mid-sequence, T in
{1, 2, 7, 33}, B D not a multiple of the kernels' channel block (and more than one block),
broadcast and strided inputs; then KalMamba's loss through `kalman_backend='triton'`.

Where it runs: with CUDA the kernels are compiled and run on the GPU. Without CUDA they run on CPU
tensors through Triton's interpreter, which tests/conftest.py switches on (TRITON_INTERPRET=1)
before anything imports triton, since Triton reads the switch when a kernel is defined. The
interpreter walks every time step in Python, so sizes here stay tiny. Skipped when triton does not
import; the CUDA-graph test needs CUDA.

Tolerances: float64 kernels vs the float64 reference, values and gradients: 1e-10 absolute (measured
below 1e-13 on the interpreter). Float32 kernels on float32-rounded inputs vs the float64 reference on the same inputs
upcast: values and gradients within 2e-6 of each output's (gradient's) largest magnitude (measured
at most 2.6e-7, on the interpreter at T=9 and on an H100 at T=1024).
"""
import os

import pytest
import torch

from models.kalman import kalman_filter, kalman_smoother, triton_available
from tests.models.model_table import build
from tests.models.test_kalmamba import make_batch
from tests.models.test_kalman import make_problem

F64 = torch.float64
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
INPUTS = ("A", "b", "Q", "y", "R", "mean0", "var0")

pytestmark = [
    pytest.mark.skipif(not triton_available(), reason="triton does not import"),
    pytest.mark.skipif(not CUDA and os.environ.get("TRITON_INTERPRET") != "1",
                       reason="no CUDA, and TRITON_INTERPRET=1 was not set before triton was imported"),
]


def outputs(problem, backend):
    """The seven float outputs: filtered mean, var, predicted mean, var, smoothed mean, var, gain."""
    filtered = kalman_filter(**problem, backend=backend)
    smoothed = kalman_smoother(filtered, problem["A"], problem["b"], problem["Q"], backend=backend)
    return tuple(filtered)[:4] + tuple(smoothed)


def values_and_grads(problem, backend, cotangents, device=DEVICE):
    """Outputs and d <cotangents, outputs> / d inputs, computed on `device`, returned on the CPU."""
    leaves = {k: (v.to(device).requires_grad_() if k in INPUTS else v.to(device)) for k, v in problem.items()}
    outs = outputs(leaves, backend)
    loss = sum((w.to(device, x.dtype) * x).sum() for w, x in zip(cotangents, outs))
    grads = torch.autograd.grad(loss, [leaves[k] for k in INPUTS])
    return [x.detach().cpu() for x in outs], [g.cpu() for g in grads]


def random_cotangents(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=F64) for _ in range(7)]


@pytest.mark.parametrize("T,B,D", [(1, 2, 3), (2, 2, 3), (7, 3, 50), (33, 2, 5)])
def test_values_and_gradients_match_the_sequential_reference_float64(T, B, D):
    """(7, 3, 50): 150 channels, two programs of 128, the second partly empty."""
    p = make_problem(B=B, T=T, D=D, seed=T, p_missing=0.3, p_reset=0.25)
    if T > 2:
        assert p["is_first"][:, 1:].any() and (~p["mask"]).any()
    cotangents = random_cotangents((B, T, D), seed=T)
    want_values, want_grads = values_and_grads(p, "sequential", cotangents, device="cpu")
    got_values, got_grads = values_and_grads(p, "triton", cotangents)
    for i, (got, want) in enumerate(zip(got_values, want_values)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"output {i}")
    for name, got, want in zip(INPUTS, got_grads, want_grads):
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=name)
    if T > 1:
        assert all(g.abs().max() > 0 for g in want_grads)


def test_float32_kernels_against_the_float64_reference():
    """Two chunks of steps and two channel blocks on the interpreter; a long sequence on CUDA."""
    B, T, D = (8, 1024, 230) if CUDA else (3, 9, 50)
    p = make_problem(B=B, T=T, D=D, dtype=torch.float32, seed=3, p_missing=0.3, p_reset=0.02)
    cotangents = random_cotangents((B, T, D), seed=1)
    p64 = {k: (v.double() if v.is_floating_point() else v) for k, v in p.items()}
    want_values, want_grads = values_and_grads(p64, "sequential", cotangents, device="cpu")
    got_values, got_grads = values_and_grads(p, "triton", cotangents)
    for i, (got, want) in enumerate(zip(got_values, want_values)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6 * want.abs().max(), msg=f"output {i}")
    for name, got, want in zip(INPUTS, got_grads, want_grads):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6 * want.abs().max(), msg=name)


def test_broadcast_and_strided_inputs():
    """A, b, Q as strided chunks of one (B, T, 3 D) tensor (as the models produce them), one Q_t for
    every batch element (1, T, D), R one number (a 0-dim tensor), mean0 and var0 (D,): gradients come
    back in the callers' shapes."""
    B, T, D = 2, 9, 4
    p = make_problem(B=B, T=T, D=D, seed=4)
    transitions = torch.cat([p["A"], p["b"], p["Q"]], -1).to(DEVICE).requires_grad_()
    Q1 = p["Q"][:1].to(DEVICE).requires_grad_()
    mean0, var0 = (p[k][0].to(DEVICE).requires_grad_() for k in ("mean0", "var0"))
    y, R = p["y"].to(DEVICE).requires_grad_(), torch.tensor(0.7, dtype=F64, device=DEVICE).requires_grad_()
    mask, is_first = p["mask"].to(DEVICE), p["is_first"].to(DEVICE)
    cotangents = [w.to(DEVICE) for w in random_cotangents((B, T, D), seed=4)]
    results = {}
    for backend in ("sequential", "triton"):
        A, b, _ = transitions.chunk(3, -1)
        filtered = kalman_filter(A, b, Q1, y, R, mean0, var0, mask, is_first, backend=backend)
        smoothed = kalman_smoother(filtered, A, b, Q1, backend=backend)
        outs = tuple(filtered)[:4] + tuple(smoothed)
        loss = sum((w * x).sum() for w, x in zip(cotangents, outs))
        results[backend] = outs, torch.autograd.grad(loss, [transitions, Q1, y, R, mean0, var0])
    for got, want in zip(*(results[k][0] for k in ("triton", "sequential"))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for got, want in zip(*(results[k][1] for k in ("triton", "sequential"))):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_missing_observations_are_ignored_even_if_nan():
    p = make_problem(B=2, T=8, D=3, seed=8, p_missing=0.4)
    cotangents = random_cotangents((2, 8, 3), seed=8)
    clean_values, clean_grads = values_and_grads(p, "triton", cotangents)
    missing = ~p["mask"]
    p["y"] = p["y"].masked_fill(missing.unsqueeze(-1), float("nan"))
    p["R"] = p["R"].masked_fill(missing.unsqueeze(-1), float("inf"))
    got_values, got_grads = values_and_grads(p, "triton", cotangents)
    for got, want in zip(got_values + got_grads, clean_values + clean_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    grad_y, grad_r = got_grads[3], got_grads[4]
    assert (grad_y[missing] == 0).all() and (grad_r[missing] == 0).all() and (grad_y[~missing] != 0).any()


@pytest.mark.parametrize("name", ["kalmamba", "vrkn"])
def test_world_model_loss_gradients_and_continued_observe_match_the_scan_backend(name):
    """One small model (eval mode: z is the smoothed mean), kalman_backend switched between runs."""
    torch.manual_seed(0)
    model = build(name, "state", 2).double().eval().to(DEVICE)
    batch = {k: v.to(DEVICE) for k, v in make_batch(B=2, T=9, obs_dim=5, resets=((1, 4),)).items()}
    results = {}
    for backend in ("scan", "triton"):
        model.kalman_backend = backend
        loss, _, _ = model.loss(batch)
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        _, state = model.observe(batch["obs"][:, :4], batch["prev_action"][:, :4], batch["is_first"][:, :4])
        beliefs, _ = model.observe(batch["obs"][:, 4:], batch["prev_action"][:, 4:], batch["is_first"][:, 4:], state)
        results[backend] = loss, grads, beliefs
    (loss_scan, grads_scan, beliefs_scan), (loss, grads, beliefs) = results["scan"], results["triton"]
    torch.testing.assert_close(loss, loss_scan, rtol=0, atol=1e-10)
    for (param, _), got, want in zip(model.named_parameters(), grads, grads_scan):
        if want is None:
            assert got is None, param
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=param)
    for key in ("mean", "var"):
        torch.testing.assert_close(beliefs[key], beliefs_scan[key], rtol=0, atol=1e-10)
    assert sum(g.abs().sum() for g in grads if g is not None) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_forward_and_backward_replay_in_a_cuda_graph():
    """No host synchronisation: the whole forward + backward is captured once and replayed on new inputs."""
    B, T, D = 4, 37, 70
    static = {k: (v.float().cuda() if v.is_floating_point() else v.cuda())
              for k, v in make_problem(B=B, T=T, D=D, seed=5).items()}
    leaves = {k: (static[k].requires_grad_() if k in INPUTS else static[k]) for k in static}

    def step():
        outs = outputs(leaves, "triton")
        return torch.autograd.grad(sum(x.square().sum() for x in outs), [leaves[k] for k in INPUTS])

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm-up: compiles the kernels
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    fresh = make_problem(B=B, T=T, D=D, seed=6)
    with torch.no_grad():
        for k, v in fresh.items():
            static[k].copy_(v)
    graph.replay()
    expected = step()
    for got, want in zip(captured, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
