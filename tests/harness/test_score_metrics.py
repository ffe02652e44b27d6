"""harness.score_metrics equals rliable's metrics bit for bit: random scores, ties, one run, runs of
unequal number, one task and many."""
import numpy as np
import pytest
from rliable import metrics

from harness import score_metrics

SHAPES = [(1, 1), (3, 1), (5, 5), (10, 3), (7, 2), (2, 9)]


def draws(shape, seed, ties):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, shape)
    return np.round(scores, 1) if ties else scores  # rounding makes many equal scores


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True])
def test_iqm_is_rliables(shape, ties):
    for seed in range(20):
        scores = draws(shape, seed, ties)
        assert score_metrics.iqm(scores) == metrics.aggregate_iqm(scores)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True])
def test_probability_of_improvement_is_rliables(shape, ties):
    for seed in range(20):
        x, y = draws(shape, seed, ties), draws((shape[0] + seed % 3, shape[1]), seed + 100, ties)
        assert score_metrics.probability_of_improvement(x, y) == metrics.probability_of_improvement(x, y)
        assert score_metrics.probability_of_improvement(x, x) == metrics.probability_of_improvement(x, x) == 0.5


def test_probability_of_improvement_counts_ties_as_one_half():
    x, y = np.array([[1.0], [2.0]]), np.array([[2.0], [0.0]])
    # pairs (1,2) <, (1,0) >, (2,2) =, (2,0) >: (2 + 0.5) / 4
    assert score_metrics.probability_of_improvement(x, y) == 0.625
