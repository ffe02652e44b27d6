"""Diagonal Kalman filter and smoother: sequential vs an independent dense joint Gaussian,
scan vs sequential, gradients, float32 robustness, missing data and resets."""
import pytest
import torch

from models.kalman import FilterResult, kalman_filter, kalman_smoother, kalman_step

F64 = torch.float64


def make_problem(B, T, D, dtype=F64, seed=0, p_missing=0.3, p_reset=0.2, var_range=(0.1, 2.0)):
    """Random model with A in [0.4, 0.99], log-uniform variances, missing steps and resets."""
    g = torch.Generator().manual_seed(seed)

    def log_uniform(*shape):
        lo, hi = torch.tensor(var_range, dtype=F64).log()
        return (lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=F64)).exp().to(dtype)

    problem = dict(
        A=(0.4 + 0.59 * torch.rand(B, T, D, generator=g, dtype=F64)).to(dtype),
        b=torch.randn(B, T, D, generator=g, dtype=F64).to(dtype),
        Q=log_uniform(B, T, D),
        y=(3 * torch.randn(B, T, D, generator=g, dtype=F64)).to(dtype),
        R=log_uniform(B, T, D),
        mean0=torch.randn(B, D, generator=g, dtype=F64).to(dtype),
        var0=log_uniform(B, D),
        mask=torch.rand(B, T, generator=g) >= p_missing,
        is_first=torch.rand(B, T, generator=g) < p_reset,
    )
    return problem


def run(problem, backend):
    filtered = kalman_filter(**problem, backend=backend)
    smoothed = kalman_smoother(filtered, problem["A"], problem["b"], problem["Q"], backend=backend)
    return filtered, smoothed


def values(problem, backend):
    """The seven float outputs: filtered mean, var, predicted mean, var, smoothed mean, var, gain."""
    filtered, smoothed = run(problem, backend)
    return tuple(filtered)[:4] + tuple(smoothed)


def dense_prior(p, bi, di):
    """Mean (T,) and covariance (T, T) of z_{0:T-1} for one (batch, dim), built independently."""
    T = p["y"].shape[1]
    transition = torch.zeros(T, T, dtype=F64)
    offset, noise = torch.zeros(T, dtype=F64), torch.zeros(T, dtype=F64)
    for t in range(T):
        if t == 0 or p["is_first"][bi, t]:
            offset[t], noise[t] = p["mean0"][bi, di], p["var0"][bi, di]
        else:
            transition[t, t - 1] = p["A"][bi, t - 1, di]
            offset[t], noise[t] = p["b"][bi, t - 1, di], p["Q"][bi, t - 1, di]
    # z = transition z + offset + w  =>  z = M (offset + w)
    M = torch.linalg.inv(torch.eye(T, dtype=F64) - transition)
    return M @ offset, M @ torch.diag(noise) @ M.T


def dense_posterior(p, bi, di):
    """Brute force for one (batch, dim): build the joint Gaussian of z_{0:T-1} and condition.

    Returns dict of (T,) tensors: filtered/predicted/smoothed mean and var, and the smoother gain
    Cov(z_t, z_{t+1} | y_{0:t}) / Var(z_{t+1} | y_{0:t}).
    """
    T = p["y"].shape[1]
    mu, cov = dense_prior(p, bi, di)
    y, R = p["y"][bi, :, di], p["R"][bi, :, di]
    observed = [t for t in range(T) if p["mask"][bi, t]]

    def condition(upto):
        S = [t for t in observed if t < upto]
        if not S:
            return mu, cov
        gain = cov[:, S] @ torch.linalg.inv(cov[S][:, S] + torch.diag(R[S]))
        return mu + gain @ (y[S] - mu[S]), cov - gain @ cov[S, :]

    out = {k: torch.zeros(T, dtype=F64) for k in
           ("filtered_mean", "filtered_var", "predicted_mean", "predicted_var", "gain")}
    for t in range(T):
        m, c = condition(t + 1)
        out["filtered_mean"][t], out["filtered_var"][t] = m[t], c[t, t]
        if t + 1 < T:
            out["gain"][t] = c[t, t + 1] / c[t + 1, t + 1]
        m, c = condition(t)
        out["predicted_mean"][t], out["predicted_var"][t] = m[t], c[t, t]
    m, c = condition(T)
    out["smoothed_mean"], out["smoothed_var"] = m, torch.diagonal(c)
    return out


@pytest.mark.parametrize("T,seed", [(1, 0), (2, 1), (5, 2), (7, 3), (9, 4)])
@pytest.mark.parametrize("backend", ["sequential", "scan"])
def test_matches_dense_joint_gaussian(T, seed, backend):
    p = make_problem(B=2, T=T, D=3, seed=seed, p_missing=0.35, p_reset=0.25)
    filtered, smoothed = run(p, backend)
    results = {**filtered._asdict(), **smoothed._asdict()}
    for bi in range(2):
        for di in range(3):
            dense = dense_posterior(p, bi, di)
            for key, expected in dense.items():
                torch.testing.assert_close(results[key][bi, :, di], expected, rtol=0, atol=1e-8, msg=key)


def test_dense_check_covers_resets_and_missing_steps():
    p = make_problem(B=2, T=9, D=3, seed=4, p_missing=0.35, p_reset=0.25)
    assert p["is_first"][:, 1:].any() and (~p["mask"]).any()


@pytest.mark.parametrize("T", [1, 2, 3, 8, 13, 33, 100])
def test_parallel_matches_sequential_float64(T):
    p = make_problem(B=3, T=T, D=5, seed=T)
    for par, seq in zip(values(p, "scan"), values(p, "sequential")):
        torch.testing.assert_close(par, seq, rtol=0, atol=1e-10)


def _scalar_loss(filtered, smoothed, weights):
    outputs = tuple(filtered)[:4] + tuple(smoothed)
    return sum((w * x).sum() for w, x in zip(weights, outputs))


def test_gradients_parallel_match_sequential():
    p = make_problem(B=2, T=11, D=3, seed=5)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(2, 11, 3, generator=g, dtype=F64) for _ in range(7)]
    names = ("A", "b", "Q", "y", "R", "mean0", "var0")
    grads = []
    for backend in ("scan", "sequential"):
        leaves = {k: (v.clone().requires_grad_() if k in names else v) for k, v in p.items()}
        loss = _scalar_loss(*run(leaves, backend), weights)
        grads.append(torch.autograd.grad(loss, [leaves[k] for k in names]))
    for name, gp, gs in zip(names, *grads):
        assert gs.abs().max() > 0, name
        torch.testing.assert_close(gp, gs, rtol=0, atol=1e-10, msg=name)


def test_parallel_passes_gradcheck():
    p = make_problem(B=2, T=6, D=2, seed=6)
    names = ("A", "b", "Q", "y", "R", "mean0", "var0")

    def f(*tensors):
        problem = {**p, **dict(zip(names, tensors))}
        return values(problem, "scan")

    inputs = tuple(p[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_float32_long_sequence_with_wide_variances():
    """T = 1024, Q, R, var0 log-uniform in [1e-4, 1e2]. Documented tolerances, measured against
    the float64 sequential filter: means within 1e-3 posterior standard deviations and variances
    within 1e-3 relative error (measured on this seed, scan and sequential alike:
    means 2e-4 standard deviations, variances 8e-7, gains 7e-7 relative)."""
    p64 = make_problem(B=4, T=1024, D=16, seed=7, var_range=(1e-4, 1e2))
    p32 = {k: (v.float() if v.is_floating_point() else v) for k, v in p64.items()}
    truth = values(p64, "sequential")
    for backend in ("scan", "sequential"):
        f_mean, f_var, p_mean, p_var, s_mean, s_var, gain = values(p32, backend)
        for name, mean, var, ref_mean, ref_var in (
                ("filtered", f_mean, f_var, truth[0], truth[1]),
                ("predicted", p_mean, p_var, truth[2], truth[3]),
                ("smoothed", s_mean, s_var, truth[4], truth[5])):
            assert torch.isfinite(mean).all() and (var > 0).all(), name
            std_err = ((mean.double() - ref_mean) / ref_var.sqrt()).abs().max()
            rel_err = ((var.double() - ref_var) / ref_var).abs().max()
            assert std_err < 1e-3 and rel_err < 1e-3, (name, backend, std_err.item(), rel_err.item())
        assert torch.isfinite(gain).all()
        torch.testing.assert_close(gain.double(), truth[6], rtol=1e-3, atol=1e-5)


def test_missing_observations_are_ignored_even_if_nan():
    p = make_problem(B=2, T=10, D=3, seed=8, p_missing=0.4)
    expected = values(p, "scan")
    missing = ~p["mask"]
    p["y"] = p["y"].masked_fill(missing.unsqueeze(-1), float("nan")).requires_grad_()
    p["R"] = p["R"].masked_fill(missing.unsqueeze(-1), float("inf"))
    for backend in ("scan", "sequential"):
        got = values(p, backend)
        for x, e in zip(got, expected):
            torch.testing.assert_close(x, e, rtol=0, atol=1e-12)
        (grad,) = torch.autograd.grad(got[4].sum(), p["y"])
        assert torch.isfinite(grad).all() and (grad[missing] == 0).all()


def test_reset_splits_into_independent_episodes():
    p = make_problem(B=1, T=12, D=4, seed=9, p_reset=0.0)
    p["is_first"][0, 5] = True
    whole = values(p, "scan")
    for start, stop in ((0, 5), (5, 12)):
        part = {k: (v[:, start:stop] if v.dim() >= 2 and k not in ("mean0", "var0") else v) for k, v in p.items()}
        for w, x in zip(whole, values(part, "scan")):
            torch.testing.assert_close(w[:, start:stop], x, rtol=0, atol=1e-12)


def test_priors_at_starts_and_zero_gain_before_them():
    p = make_problem(B=3, T=8, D=2, seed=10, p_reset=0.3)
    for backend in ("scan", "sequential"):
        filtered, smoothed = run(p, backend)
        starts = p["is_first"].clone()
        starts[:, 0] = True
        bi, ti = starts.nonzero(as_tuple=True)
        torch.testing.assert_close(filtered.predicted_mean[bi, ti], p["mean0"][bi], rtol=0, atol=0)
        torch.testing.assert_close(filtered.predicted_var[bi, ti], p["var0"][bi], rtol=0, atol=0)
        cut = torch.ones_like(starts)
        cut[:, :-1] = p["is_first"][:, 1:]
        assert (smoothed.gain[cut] == 0).all() and (smoothed.gain[~cut] > 0).all()
        torch.testing.assert_close(smoothed.smoothed_mean[:, -1], filtered.filtered_mean[:, -1], rtol=0, atol=0)


def test_online_steps_reproduce_the_filter():
    p = make_problem(B=3, T=9, D=2, seed=11)
    expected = kalman_filter(**p)
    mean, var = torch.zeros(3, 2, dtype=F64), torch.ones(3, 2, dtype=F64)
    for t in range(9):
        prev = max(t - 1, 0)
        is_first = p["is_first"][:, t] | (t == 0)
        step = kalman_step(mean, var, p["A"][:, prev], p["b"][:, prev], p["Q"][:, prev], p["y"][:, t],
                           p["R"][:, t], p["mask"][:, t], is_first, p["mean0"], p["var0"])
        assert isinstance(step, FilterResult)
        for got, want in zip(step, expected):
            torch.testing.assert_close(got, want[:, t], rtol=0, atol=1e-12)
        mean, var = step.filtered_mean, step.filtered_var


@pytest.mark.parametrize("change,message", [
    (dict(y=torch.zeros(2, 5)), "y of shape (B, T, D)"),
    (dict(A=torch.zeros(2, 4, 3)), "A of shape (2, 4, 3) does not broadcast to (2, 5, 3)"),
    (dict(var0=torch.ones(3, 3)), "var0 of shape (3, 3) does not broadcast to (2, 3)"),
    (dict(mask=torch.ones(2, 5)), "mask must be a bool tensor of shape (B, T) = (2, 5)"),
    (dict(is_first=torch.zeros(2, 4, dtype=torch.bool)), "is_first must be a bool tensor"),
])
def test_bad_inputs_raise_one_clear_error(change, message):
    p = make_problem(B=2, T=5, D=3)
    p.update(change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kalman_filter(**p)


def test_broadcast_parameters_are_accepted():
    p = make_problem(B=2, T=6, D=3, seed=12)
    p["Q"] = p["Q"][:1, :1]  # (1, 1, 3): one noise level for all batches and steps
    p["var0"] = p["var0"][0]  # (3,): a learned initial variance
    full = dict(p, Q=p["Q"].expand(2, 6, 3), var0=p["var0"].expand(2, 3))
    for x, e in zip(values(p, "scan"), values(full, "sequential")):
        torch.testing.assert_close(x, e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["scan", "sequential"])
def test_smoother_reads_the_resets_from_the_filter_result(backend):
    """The filter result carries is_first (step 0 set), and the smoother uses it without being told:
    nothing flows back across a reset, so smoothing the whole sequence equals smoothing each episode."""
    p = make_problem(B=1, T=12, D=4, seed=11, p_reset=0.0)
    p["is_first"][0, 6] = True
    filtered, smoothed = run(p, backend)
    expected_flags = p["is_first"].clone()
    expected_flags[:, 0] = True
    assert torch.equal(filtered.is_first, expected_flags)
    head = {k: (v[:, :6] if v.dim() >= 2 and k not in ("mean0", "var0") else v) for k, v in p.items()}
    torch.testing.assert_close(smoothed.smoothed_mean[:, :6], run(head, backend)[1].smoothed_mean, rtol=0, atol=1e-12)
    # the same marginals without the flag would smooth across the reset: the flag is what matters
    unflagged = filtered._replace(is_first=torch.zeros_like(filtered.is_first))
    across = kalman_smoother(unflagged, p["A"], p["b"], p["Q"], backend=backend)
    assert (across.smoothed_mean[:, 5] - smoothed.smoothed_mean[:, 5]).abs().max() > 1e-3
    with pytest.raises(TypeError):
        FilterResult(*tuple(filtered)[:4])  # no way to build one that forgets the resets
