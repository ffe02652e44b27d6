"""The belief probes on a synthetic linear-Gaussian state-space model whose exact posterior is known:
the "beliefs" are the filtered means of the exact Kalman filter (models/kalman.py), so the best
possible probe is the posterior itself, x_t | y_{<=t} ~ N(m_t, P_t), and

    R^2_d = 1 - E[P_t,d] / Var[x_d],     NLL = E[ log(2 pi P_t) / 2 + (x_t - m_t)^2 / (2 P_t) ]

(in units of the fitting half's std of x, as the probe scores), coverage 68.3% / 95.4%.

Tolerances, at 20 test episodes x 200 steps (4000 rows per dimension) and A <= 0.8: the probe's
R^2 uses the test half's empirical variance of x, whose sampling error puts R^2 within about 0.013
(one standard error) of the population value, so the analytic R^2 is checked to 0.04 (3 standard
errors) and the R^2 of the exact posterior on the same rows to 0.01 (the probe's own error: it
estimates a slope of 1 and one variance per dimension from the fitting half); NLL to 0.01 nats of
the exact posterior's on the same rows (the MLP's to 0.02); coverage to 0.025 of nominal.
"""
import math

import numpy as np
import pytest
import torch

from harness import belief_probe
from models.kalman import kalman_filter

GAUSSIAN_COVERAGE = (math.erf(1 / math.sqrt(2)), math.erf(2 / math.sqrt(2)))  # 0.683, 0.954


def simulate(a, q, r, episodes, steps, seed, valid_every=None):
    """x_0 ~ N(0, v) (stationary), x_t = a x_{t-1} + N(0, q), y_t = x_t + N(0, r) per dimension
    (y missing except every `valid_every` steps); returns x, filtered means and variances, each
    (episodes, steps, D) numpy, and v = q / (1 - a^2) (D,)."""
    a, q, r = (torch.tensor(value, dtype=torch.float64) for value in (a, q, r))
    v, D = q / (1 - a**2), len(a)
    g = torch.Generator().manual_seed(seed)
    noise = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    x = torch.empty(episodes, steps, D, dtype=torch.float64)
    x[:, 0] = v.sqrt() * noise(episodes, D)
    for t in range(1, steps):
        x[:, t] = a * x[:, t - 1] + q.sqrt() * noise(episodes, D)
    y = x + r.sqrt() * noise(episodes, steps, D)
    mask = None if valid_every is None else (torch.arange(steps) % valid_every == 0).expand(episodes, steps).clone()
    filtered = kalman_filter(a, torch.zeros(D, dtype=torch.float64), q, y, r, torch.zeros(D, dtype=torch.float64),
                             v, mask=mask)
    return x.numpy(), filtered.filtered_mean.numpy(), filtered.filtered_var.numpy(), v.numpy()


def exact_posterior_scores(x, m, P):
    """Scores of N(m, P) on the test half, standardised by the fitting half's std of x."""
    fit, test = belief_probe.split_episodes(list(range(len(x))))
    D = x.shape[-1]
    std = x[fit].reshape(-1, D).std(0)
    xt, mt, Pt = (value[test].reshape(-1, D) for value in (x, m, P))
    return belief_probe.score(mt / std, Pt / std**2, xt / std), Pt.mean(0)


def episodes(array):
    return list(array)


def test_ridge_probe_recovers_the_exact_kalman_posterior():
    x, m, P, v = simulate(a=(0.8, 0.6, 0.3), q=(0.36, 0.64, 0.91), r=(0.5, 0.2, 2.0), episodes=40, steps=200, seed=0)
    result = belief_probe.probe(episodes(m), episodes(x))
    exact, mean_P = exact_posterior_scores(x, m, P)
    analytic_r2 = 1 - mean_P / v
    assert analytic_r2.min() > 0.3 and analytic_r2.max() < 0.9  # neither trivial nor hopeless
    ridge, mlp = result["ridge"], result["mlp"]
    np.testing.assert_allclose(ridge["r2_dims"], analytic_r2, atol=0.04)
    np.testing.assert_allclose(ridge["r2_dims"], exact["r2_dims"], atol=0.01)
    assert ridge["r2"] == pytest.approx(np.mean(ridge["r2_dims"]))
    assert ridge["nll"] == pytest.approx(exact["nll"], abs=0.01)
    assert ridge["coverage_1sigma"] == pytest.approx(GAUSSIAN_COVERAGE[0], abs=0.025)
    assert ridge["coverage_2sigma"] == pytest.approx(GAUSSIAN_COVERAGE[1], abs=0.025)
    assert ridge["alpha"] <= 1e-3  # three informative features: hardly any shrinkage is chosen
    np.testing.assert_allclose(mlp["r2_dims"], exact["r2_dims"], atol=0.02)
    assert mlp["nll"] == pytest.approx(exact["nll"], abs=0.02)
    assert mlp["coverage_1sigma"] == pytest.approx(GAUSSIAN_COVERAGE[0], abs=0.025)
    assert mlp["coverage_2sigma"] == pytest.approx(GAUSSIAN_COVERAGE[1], abs=0.025)
    assert (result["fit_steps"], result["test_steps"]) == (4000, 4000)


def test_heteroscedastic_probe_reads_the_belief_variance():
    """Observations every 8th step only: P_t swings between r and nearly Var[x]. The MLP reading
    (m_t, log P_t) matches the exact posterior's NLL; the ridge probe's single variance cannot."""
    x, m, P, _ = simulate(a=(0.9, 0.7), q=(0.19, 0.51), r=(0.05, 0.1), episodes=40, steps=200, seed=1,
                          valid_every=8)
    result = belief_probe.probe(episodes(m), episodes(x), mlp_features=episodes(np.concatenate([m, np.log(P)], -1)))
    exact, _ = exact_posterior_scores(x, m, P)
    assert result["mlp"]["nll"] == pytest.approx(exact["nll"], abs=0.02)
    assert result["ridge"]["nll"] > result["mlp"]["nll"] + 0.05
    np.testing.assert_allclose(result["ridge"]["r2_dims"], exact["r2_dims"], atol=0.01)
    assert result["mlp"]["coverage_1sigma"] == pytest.approx(GAUSSIAN_COVERAGE[0], abs=0.025)
    assert result["mlp"]["coverage_2sigma"] == pytest.approx(GAUSSIAN_COVERAGE[1], abs=0.025)


def test_score_by_hand():
    y = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    mean = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    var = np.full((3, 2), 1.0)
    scores = belief_probe.score(mean, var, y)
    assert scores["r2_dims"][0] == pytest.approx(1 - 2 / 8) and math.isnan(scores["r2_dims"][1])
    assert scores["r2"] == pytest.approx(0.75)  # the constant dimension is left out of the mean
    assert scores["nll"] == pytest.approx(0.5 * math.log(2 * math.pi) + 2 * 0.5 / 6)
    assert scores["coverage_1sigma"] == 1.0
    assert belief_probe.score(mean, np.full((3, 2), 0.25), y)["coverage_1sigma"] == pytest.approx(4 / 6)


def test_probe_is_deterministic_and_leaves_the_global_rng_alone():
    x, m, _, _ = simulate(a=(0.8,), q=(0.36,), r=(0.5,), episodes=4, steps=60, seed=2)
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    first = belief_probe.probe(episodes(m), episodes(x))
    assert torch.equal(torch.rand(3), expected_next)
    assert belief_probe.probe(episodes(m), episodes(x)) == first
    with pytest.raises(ValueError, match="at least 2 episodes"):
        belief_probe.probe(episodes(m)[:1], episodes(x)[:1])
