"""Tight-bound KL: against a dense joint-Gaussian KL, the bound's tightness (it equals log p(y)),
a Monte-Carlo estimate of the expected conditional KL, and float32 behaviour on long sequences."""
import math

import pytest
import torch

from models.kalman import kalman_filter, kalman_smoother
from models.tight_elbo import gaussian_kl_terms, tight_kl
from tests.models.test_kalman import dense_prior

F64 = torch.float64


def make_chain(B, T, D, seed=0, p_reset=0.25, dtype=F64):
    """A random diagonal chain with A in [0.4, 0.99], variances in [0.05, 2] and mid-sequence resets."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo, hi, *shape):
        return (lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=F64)).to(dtype)

    is_first = torch.rand(B, T, generator=g) < p_reset
    is_first[:, 0] = False  # step 0 is a start anyway; keep one sequence without any flag at 0
    return dict(A=uniform(0.4, 0.99, B, T, D), b=torch.randn(B, T, D, generator=g, dtype=F64).to(dtype),
                Q=uniform(0.05, 2.0, B, T, D), y=(2 * torch.randn(B, T, D, generator=g, dtype=F64)).to(dtype),
                R=uniform(0.05, 2.0, B, T, D), mean0=torch.randn(B, D, generator=g, dtype=F64).to(dtype),
                var0=uniform(0.05, 2.0, B, D), is_first=is_first)


def infer(chain, backend="scan"):
    filtered = kalman_filter(**chain, backend=backend)
    smoothed = kalman_smoother(filtered, chain["A"], chain["b"], chain["Q"], backend=backend)
    return filtered, smoothed


def kl_of(chain, filtered, smoothed):
    return tight_kl(filtered.filtered_var, smoothed.smoothed_mean, smoothed.smoothed_var, chain["A"],
                    chain["b"], chain["Q"], chain["mean0"], chain["var0"], chain["is_first"])


def dense_posterior(mu, cov, y, R):
    gain = cov @ torch.linalg.inv(cov + torch.diag(R))
    return mu + gain @ (y - mu), cov - gain @ cov


def dense_kl(mean_q, cov_q, mean_p, cov_p):
    n = mean_q.shape[0]
    inv_p = torch.linalg.inv(cov_p)
    diff = mean_p - mean_q
    return 0.5 * (torch.trace(inv_p @ cov_q) - n + diff @ inv_p @ diff
                  + torch.logdet(cov_p) - torch.logdet(cov_q))


@pytest.mark.parametrize("T", [1, 2, 7, 13])
def test_sum_of_step_kls_equals_the_dense_joint_kl(T):
    chain = make_chain(B=3, T=T, D=2, seed=T)
    filtered, smoothed = infer(chain)
    kl = kl_of(chain, filtered, smoothed)
    assert kl.shape == (3, T)
    for bi in range(3):
        expected = 0.0
        for di in range(2):
            mu, cov = dense_prior(chain, bi, di)
            post_mean, post_cov = dense_posterior(mu, cov, chain["y"][bi, :, di], chain["R"][bi, :, di])
            expected = expected + dense_kl(post_mean, post_cov, mu, cov)
        torch.testing.assert_close(kl[bi].sum(), expected, rtol=1e-10, atol=1e-10)


def test_bound_is_tight_expected_log_likelihood_minus_kl_is_log_evidence():
    chain = make_chain(B=2, T=11, D=3, seed=4)
    filtered, smoothed = infer(chain)
    y, R = chain["y"], chain["R"]
    # E_{z ~ N(mu, P)} log N(y | z, R) = -1/2 [log 2 pi R + ((y - mu)^2 + P) / R]
    expected_ll = -0.5 * (torch.log(2 * math.pi * R)
                          + ((y - smoothed.smoothed_mean).square() + smoothed.smoothed_var) / R)
    elbo = expected_ll.sum((1, 2)) - kl_of(chain, filtered, smoothed).sum(1)
    for bi in range(2):
        log_evidence = 0.0
        for di in range(3):
            mu, cov = dense_prior(chain, bi, di)
            evidence = torch.distributions.MultivariateNormal(mu, cov + torch.diag(R[bi, :, di]))
            log_evidence = log_evidence + evidence.log_prob(y[bi, :, di])
        torch.testing.assert_close(elbo[bi], log_evidence, rtol=1e-10, atol=1e-10)


def test_closed_form_matches_a_monte_carlo_estimate_of_the_expected_conditional_kl():
    """Samples z_{t-1} from the smoothed marginal and averages the KL between the conditional
    posterior (direct variance formula P_t - G c P_t) and the prior transition at each sample."""
    chain = make_chain(B=1, T=6, D=4, seed=7, p_reset=0.0)
    filtered, smoothed = infer(chain)
    kl = tight_kl(filtered.filtered_var, smoothed.smoothed_mean, smoothed.smoothed_var, chain["A"], chain["b"],
                  chain["Q"], chain["mean0"], chain["var0"], chain["is_first"])
    g = torch.Generator().manual_seed(0)
    n = 400_000
    mu, P, gain = smoothed.smoothed_mean[0], smoothed.smoothed_var[0], smoothed.gain[0]
    for t in range(1, 6):
        A, b, Q = chain["A"][0, t - 1], chain["b"][0, t - 1], chain["Q"][0, t - 1]
        c = gain[t - 1]
        G = c * P[t] / P[t - 1]
        V = P[t] - G * c * P[t]
        z_prev = mu[t - 1] + P[t - 1].sqrt() * torch.randn(n, 4, generator=g, dtype=F64)
        cond_mean = mu[t] + G * (z_prev - mu[t - 1])
        samples = gaussian_kl_terms(V / Q, (cond_mean - (A * z_prev + b)).square() / Q).sum(-1)
        standard_error = samples.std() / math.sqrt(n)
        assert abs(samples.mean() - kl[0, t]) < 5 * standard_error, (t, samples.mean(), kl[0, t])
        assert standard_error < 0.01 * kl[0, t]  # the check is sharp, not vacuous


def test_start_steps_are_the_kl_to_the_initial_belief():
    chain = make_chain(B=2, T=9, D=3, seed=11, p_reset=0.4)
    filtered, smoothed = infer(chain)
    kl = kl_of(chain, filtered, smoothed)
    starts = chain["is_first"].clone()
    starts[:, 0] = True
    assert starts[:, 1:].any()
    mean0, var0 = chain["mean0"].unsqueeze(1), chain["var0"].unsqueeze(1)
    q = torch.distributions.Normal(smoothed.smoothed_mean, smoothed.smoothed_var.sqrt())
    p = torch.distributions.Normal(mean0.expand_as(q.loc), var0.sqrt().expand_as(q.loc))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(kl[starts], expected[starts], rtol=1e-12, atol=1e-12)


def test_float32_stays_accurate_and_positive_on_a_long_sequence_with_tiny_noise():
    chain = make_chain(B=2, T=1000, D=8, seed=3, p_reset=0.002)
    chain["Q"] = chain["Q"] * 1e-2  # transition noise 5e-4 .. 2e-2: conditional variances get small
    filtered, smoothed = infer(chain)
    reference = kl_of(chain, filtered, smoothed)
    chain32 = {k: (v.float() if v.is_floating_point() else v) for k, v in chain.items()}
    filtered32, smoothed32 = infer(chain32)
    kl32 = kl_of(chain32, filtered32, smoothed32)
    assert kl32.dtype == torch.float32 and torch.isfinite(kl32).all() and (kl32 >= 0).all()
    torch.testing.assert_close(kl32.double(), reference, rtol=2e-3, atol=2e-4)


def test_gradients_flow_to_every_model_input():
    chain = make_chain(B=2, T=8, D=2, seed=5)
    leaves = {k: v.clone().requires_grad_() for k, v in chain.items() if k != "is_first"}
    full = dict(leaves, is_first=chain["is_first"])
    filtered, smoothed = infer(full)
    kl_of(full, filtered, smoothed).sum().backward()
    for name, leaf in leaves.items():
        assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0, name


def test_mismatched_shapes_give_one_clear_error():
    chain = make_chain(B=2, T=5, D=3)
    filtered, smoothed = infer(chain)
    with pytest.raises(ValueError, match=r"one shape \(B, T, D\)"):
        tight_kl(filtered.filtered_var, smoothed.smoothed_mean, smoothed.smoothed_var, chain["A"][:, :4],
                 chain["b"], chain["Q"], chain["mean0"], chain["var0"])
    with pytest.raises(ValueError, match="is_first must have shape"):
        tight_kl(filtered.filtered_var, smoothed.smoothed_mean, smoothed.smoothed_var, chain["A"], chain["b"],
                 chain["Q"], chain["mean0"], chain["var0"], chain["is_first"][:, :3])
