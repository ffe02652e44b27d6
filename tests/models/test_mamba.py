"""Mamba: parallel scan vs sequential loop vs rolling `step`, resets, chunking, state_dict layout;
on CUDA with mamba_ssm, the kernel path and mamba_ssm's own module vs the fallback."""
import math

import pytest
import torch
import torch.nn.functional as F

from models.mamba import Mamba, mamba_ssm_available, selective_scan, selective_scan_cuda, selective_scan_ref

F64 = torch.float64


def scan_inputs(Bt=2, L=9, E=5, N=3, dtype=F64, seed=0, resets=True, device="cpu"):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=F64)).to(dtype=dtype, device=device)

    is_first = torch.rand(Bt, L, generator=g) < 0.25 if resets else None
    return dict(
        u=randn(Bt, L, E), delta=randn(Bt, L, E, scale=0.5),
        A=-torch.rand(E, N, generator=g, dtype=F64).mul(3).add(0.1).to(dtype=dtype, device=device),
        B=randn(Bt, L, N), C=randn(Bt, L, N), D=randn(E), z=randn(Bt, L, E), delta_bias=randn(E, scale=0.3),
        is_first=None if is_first is None else is_first.to(device),
        initial_state=randn(Bt, E, N))


@pytest.mark.parametrize("L", [1, 2, 5, 16, 33])
@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_parallel_scan_matches_sequential_loop(L, resets, with_state):
    inputs = scan_inputs(L=L, seed=L, resets=resets)
    if not with_state:
        inputs["initial_state"] = None
    names = [k for k, v in inputs.items() if torch.is_tensor(v) and v.is_floating_point()]
    leaves = {k: (v.clone().requires_grad_() if k in names else v) for k, v in inputs.items()}
    y_par, last_par = selective_scan(**leaves)
    y_seq, last_seq = selective_scan_ref(**leaves)
    torch.testing.assert_close(y_par, y_seq, rtol=0, atol=1e-10)
    torch.testing.assert_close(last_par, last_seq, rtol=0, atol=1e-10)
    weights = torch.randn(y_par.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    # materialize: with L = 1 and no start state, A does not enter the parallel graph at all
    g_par = torch.autograd.grad((weights * y_par).sum(), [leaves[k] for k in names], materialize_grads=True)
    g_seq = torch.autograd.grad((weights * y_seq).sum(), [leaves[k] for k in names], materialize_grads=True)
    for name, gp, gs in zip(names, g_par, g_seq):
        torch.testing.assert_close(gp, gs, rtol=0, atol=1e-10, msg=name)


def make_block(seed=0, d_model=6, d_state=3, d_conv=4, dtype=F64, **kwargs):
    torch.manual_seed(seed)
    block = Mamba(d_model, d_state=d_state, d_conv=d_conv, **kwargs).to(dtype)
    with torch.no_grad():  # move away from the symmetric init so every parameter matters
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


def rolling_step(block, x, is_first=None, state=None):
    state = block.initial_state(x.shape[0]) if state is None else state
    outs = []
    for t in range(x.shape[1]):
        out, state = block.step(x[:, t], state, None if is_first is None else is_first[:, t])
        outs.append(out)
    return torch.stack(outs, 1), state


def random_resets(B, L, seed, p=0.2):
    return torch.rand(B, L, generator=torch.Generator().manual_seed(seed)) < p


@pytest.mark.parametrize("L", [1, 3, 7, 20])
@pytest.mark.parametrize("resets", [False, True])
def test_forward_matches_rolling_step(L, resets):
    block = make_block(seed=L)
    x = torch.randn(3, L, 6, dtype=F64)
    is_first = random_resets(3, L, seed=L, p=0.3) if resets else None
    expected, expected_state = rolling_step(block, x, is_first)
    out, state = block.forward_with_state(x, None, is_first)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(block(x, is_first), expected, rtol=0, atol=1e-10)
    for got, want in zip(state, expected_state):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_gradients_of_forward_match_rolling_step():
    block = make_block(seed=3)
    x = torch.randn(2, 11, 6, dtype=F64, requires_grad=True)
    is_first = random_resets(2, 11, seed=3, p=0.3)
    weights = torch.randn(2, 11, 6, dtype=F64)
    params = [x, *block.parameters()]
    g_par = torch.autograd.grad((weights * block(x, is_first)).sum(), params)
    g_step = torch.autograd.grad((weights * rolling_step(block, x, is_first)[0]).sum(), params)
    for gp, gs in zip(g_par, g_step):
        assert gs.abs().max() > 0
        torch.testing.assert_close(gp, gs, rtol=0, atol=1e-10)


def upstream_formulation(block, x):
    """mamba_ssm's slow path written out: padded nn.Conv1d truncated to L, dt bias inside softplus."""
    L = x.shape[1]
    u, z = block.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, E, L)
    u = F.silu(block.conv1d(u)[..., :L]).transpose(1, 2)  # (B, L, E)
    dt, Bm, Cm = block.x_proj(u).split([block.dt_rank, block.d_state, block.d_state], dim=-1)
    delta = F.softplus(dt @ block.dt_proj.weight.T + block.dt_proj.bias)
    A = -torch.exp(block.A_log)
    h, ys = torch.zeros(x.shape[0], block.d_inner, block.d_state, dtype=x.dtype), []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + block.D * u[:, t])
    return block.out_proj(torch.stack(ys, 1) * F.silu(z.transpose(1, 2)))


@pytest.mark.parametrize("d_conv,conv_bias,bias", [(4, True, False), (2, False, True), (1, True, True)])
def test_matches_the_mamba_ssm_formulation(d_conv, conv_bias, bias):
    block = make_block(seed=4, d_model=20, d_state=5, d_conv=d_conv, conv_bias=conv_bias, bias=bias)
    x = torch.randn(2, 13, 20, dtype=F64)
    torch.testing.assert_close(block(x), upstream_formulation(block, x), rtol=0, atol=1e-10)


def test_reset_is_a_fresh_start():
    block = make_block(seed=5)
    x = torch.randn(2, 15, 6, dtype=F64)
    is_first = torch.zeros(2, 15, dtype=torch.bool)
    is_first[0, 6], is_first[1, 1] = True, True
    out = block(x, is_first)
    torch.testing.assert_close(out[0, 6:], block(x[:1, 6:])[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[1, 1:], block(x[1:, 1:])[0], rtol=0, atol=1e-10)
    assert not torch.allclose(out[0, 6:], block(x[:1])[0, 6:])  # the reset changed something


@pytest.mark.parametrize("split", [1, 2, 5, 9])
def test_chunks_continue_from_the_returned_state(split):
    block = make_block(seed=6)
    x = torch.randn(3, 12, 6, dtype=F64)
    is_first = random_resets(3, 12, seed=split, p=0.2)
    is_first[0, split] = True  # a reset exactly at the chunk boundary
    whole, whole_state = block.forward_with_state(x, None, is_first)
    first, state = block.forward_with_state(x[:, :split], None, is_first[:, :split])
    second, last = block.forward_with_state(x[:, split:], state, is_first[:, split:])
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-10)
    stepped, stepped_state = rolling_step(block, x[:, split:], is_first[:, split:], state)
    torch.testing.assert_close(second, stepped, rtol=0, atol=1e-10)
    for got, want, also in zip(last, whole_state, stepped_state):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        torch.testing.assert_close(got, also, rtol=0, atol=1e-10)


def test_parameter_layout_and_initialisation_follow_mamba_ssm():
    block = Mamba(40, d_state=8, d_conv=3, expand=2, dt_min=0.002, dt_max=0.05)
    E, R = 80, math.ceil(40 / 16)
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == {
        "A_log": (E, 8), "D": (E,), "in_proj.weight": (2 * E, 40), "conv1d.weight": (E, 1, 3),
        "conv1d.bias": (E,), "x_proj.weight": (R + 16, E), "dt_proj.weight": (E, R),
        "dt_proj.bias": (E,), "out_proj.weight": (40, E)}
    torch.testing.assert_close(block.A, -torch.arange(1.0, 9.0).repeat(E, 1))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 0.002 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    assert block.A_log.dtype == block.D.dtype == torch.float32
    Mamba(40, d_state=8, d_conv=3, use_kernel=False).load_state_dict(block.state_dict())


@pytest.mark.parametrize("call,message", [
    (lambda m: m(torch.zeros(2, 5, 7)), r"x of shape \(B, L >= 1, d_model=6\)"),
    (lambda m: m(torch.zeros(2, 0, 6)), r"x of shape \(B, L >= 1, d_model=6\)"),
    (lambda m: m(torch.zeros(2, 5, 6), torch.zeros(2, 5)), r"is_first must be a bool tensor of shape \(B, L\)"),
    (lambda m: m.forward_with_state(torch.zeros(2, 5, 6), m.initial_state(3)), r"state must be MambaState"),
    (lambda m: m.step(torch.zeros(2, 1, 6), m.initial_state(2)), r"step needs x of shape \(B, d_model=6\)"),
    (lambda m: m.step(torch.zeros(2, 6), m.initial_state(2)[0]), r"state must be MambaState"),
    (lambda m: Mamba(0), "positive sizes"),
])
def test_bad_inputs_raise_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(Mamba(6))


def test_kernel_path_refuses_a_start_state():
    with pytest.raises(ValueError, match="cannot start from a given state"):
        selective_scan_cuda(**scan_inputs())


def stand_in_kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                    return_last_state=False):
    """mamba_ssm's `selective_scan_fn` contract on CPU: (B, E, L) layout, float32 A, loop over time."""
    assert A.dtype == torch.float32 and u.dtype == delta.dtype and u.shape == delta.shape
    delta = delta.float() + (0 if delta_bias is None else delta_bias.float()[:, None])
    delta = F.softplus(delta) if delta_softplus else delta
    h, ys = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32), []
    for t in range(u.shape[2]):
        drive = (delta[:, :, t] * u[:, :, t].float())[..., None] * B[:, None, :, t]
        h = torch.exp(delta[:, :, t, None] * A) * h + drive
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1) + (0 if D is None else u.float() * D[:, None])
    y = (y if z is None else y * F.silu(z.float())).to(u.dtype)
    return (y, h) if return_last_state else y


@pytest.fixture
def cpu_kernel(monkeypatch):
    """Routes `selective_scan_cuda` to `stand_in_kernel`, so its reset substitution runs on CPU."""
    import sys
    import types
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = stand_in_kernel
    for name in ("mamba_ssm", "mamba_ssm.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", interface)


@pytest.mark.parametrize("resets", [False, True])
def test_kernel_adapter_with_resets_is_exact_on_a_stand_in_kernel(cpu_kernel, resets):
    """The substitution dt' = big, u' = u dt / big at resets, checked in float32 like the kernel."""
    inputs = scan_inputs(Bt=3, L=29, E=8, N=4, dtype=torch.float32, seed=7, resets=resets)
    inputs["initial_state"] = None
    inputs["A"] = inputs["A"] * torch.logspace(-2, 1, 4)  # |A| from 1e-3 to 30: big spans 4 decades
    names = [k for k, v in inputs.items() if torch.is_tensor(v) and v.is_floating_point()]
    leaves = {k: (v.clone().requires_grad_() if k in names else v) for k, v in inputs.items()}
    y_kernel, last_kernel = selective_scan_cuda(**leaves)
    y_ref, last_ref = selective_scan_ref(**leaves)
    torch.testing.assert_close(y_kernel, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last_kernel, last_ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2))
    # at L = 1 from a zero state the decay exp(delta A) multiplies nothing: A gets no gradient path
    grads = [torch.autograd.grad((weights * y).sum(), [leaves[k] for k in names], allow_unused=True)
             for y in (y_kernel, y_ref)]
    g_kernel, g_ref = ([torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(names, gs)]
                       for gs in grads)
    for name, gk, gr in zip(names, g_kernel, g_ref):
        torch.testing.assert_close(gk, gr, rtol=1e-4, atol=1e-4, msg=name)


# ------------------------------------------------------------------------------------------------
# CUDA + mamba_ssm: run by the lead on a GPU machine (`pytest -m gpu`).

def _kernel_usable():
    return torch.cuda.is_available() and mamba_ssm_available()


gpu = pytest.mark.gpu
needs_kernel = pytest.mark.skipif(not _kernel_usable(), reason="needs CUDA and mamba_ssm's CUDA extension")


def relative_error(got, want):
    """||got - want|| / ||want|| over the whole tensor, in float32."""
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


@gpu
@needs_kernel
@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("L", [1, 37, 256])
def test_kernel_scan_matches_fallback(resets, L):
    inputs = scan_inputs(Bt=4, L=L, E=64, N=16, dtype=torch.float32, seed=L, resets=resets, device="cuda")
    inputs["initial_state"] = None
    names = [k for k, v in inputs.items() if torch.is_tensor(v) and v.is_floating_point()]
    leaves = {k: (v.clone().requires_grad_() if k in names else v) for k, v in inputs.items()}
    y_kernel, last_kernel = selective_scan_cuda(**leaves)
    y_ref, last_ref = selective_scan(**leaves)
    assert relative_error(y_kernel, y_ref) < 1e-4
    assert relative_error(last_kernel, last_ref) < 1e-4
    weights = torch.randn_like(y_ref)
    # at L = 1 from a zero state the decay exp(delta A) multiplies nothing: A gets no gradient path
    grads = [torch.autograd.grad((weights * y).sum(), [leaves[k] for k in names], allow_unused=True)
             for y in (y_kernel, y_ref)]
    g_kernel, g_ref = ([torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(names, gs)]
                       for gs in grads)
    for name, gk, gr in zip(names, g_kernel, g_ref):
        if not gr.any():  # e.g. A at L = 1: both must be exactly zero (relative error is 0 / 0)
            assert not gk.any(), name
            continue
        assert relative_error(gk, gr) < 1e-3, name


def _block_pair(d_model=64):
    torch.manual_seed(0)
    fast = Mamba(d_model, use_kernel=True).cuda()
    slow = Mamba(d_model, use_kernel=False).cuda()
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def _forward_and_input_grad(block, x, is_first=None):
    x = x.clone().requires_grad_()
    out = block(x) if is_first is None else block(x, is_first)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    return out, grad


@gpu
@needs_kernel
@pytest.mark.parametrize("resets", [False, True])
def test_block_kernel_path_matches_fallback(resets):
    fast, slow = _block_pair()
    x = torch.randn(8, 200, 64, device="cuda")
    is_first = random_resets(8, 200, seed=0, p=0.02).cuda() if resets else None
    out_fast, grad_fast = _forward_and_input_grad(fast, x, is_first)
    out_slow, grad_slow = _forward_and_input_grad(slow, x, is_first)
    assert relative_error(out_fast, out_slow) <= 1e-3
    assert relative_error(grad_fast, grad_slow) <= 1e-3


@gpu
@needs_kernel
def test_mamba_ssm_module_loads_our_state_dict_and_agrees():
    from mamba_ssm.modules.mamba_simple import Mamba as UpstreamMamba

    fast, slow = _block_pair()
    upstream = UpstreamMamba(64).cuda()
    upstream.load_state_dict(slow.state_dict())
    x = torch.randn(8, 200, 64, device="cuda")
    out_up, grad_up = _forward_and_input_grad(upstream, x)
    for ours in (fast, slow):
        out, grad = _forward_and_input_grad(ours, x)
        assert relative_error(out, out_up) <= 1e-3
        assert relative_error(grad, grad_up) <= 1e-3
    fast.load_state_dict(upstream.state_dict())
