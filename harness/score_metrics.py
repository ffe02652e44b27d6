"""Two of rliable's metrics without scipy's per-call argument handling, giving the same bits.

A bootstrap calls a metric thousands of times on small matrices, and scipy's `trim_mean` and
`mannwhitneyu` spend about a millisecond per call in their array-API and nan-policy wrappers, far
more than the arithmetic; a leaderboard of a few hundred runs then takes many minutes per report.
Each function here is the twin of its rliable reference with the same signature
(`scores: (num_runs, num_tasks)`), and tests/harness/test_score_metrics.py checks them equal bit for
bit (ties included):

    iqm(scores)  = rliable.metrics.aggregate_iqm(scores)
                 = scipy.stats.trim_mean(scores, 0.25, axis=None): the same partition, slice and mean
    probability_of_improvement(x, y) = rliable.metrics.probability_of_improvement(x, y)
                 = mean over tasks of U / (n_x n_y), with U the Mann-Whitney statistic of x,
                   U = #{x_i > y_j} + #{x_i = y_j} / 2, counted pairwise; U is a multiple of 1/2
                   well inside float64's exact integers, so it equals scipy's rank-sum U exactly
"""
import numpy as np


def iqm(scores):
    """Interquartile mean of all scores: the mean of the middle half after dropping the lowest and
    highest int(0.25 n) of the n values."""
    values = np.ravel(np.asarray(scores))
    low = int(0.25 * values.shape[0])
    high = values.shape[0] - low
    return np.mean(np.partition(values, (low, high - 1))[low:high])


def probability_of_improvement(scores_x, scores_y):
    """P(X > Y) on a random task: per task P(x > y) + P(x = y) / 2 over all run pairs, averaged."""
    num_x, num_y = scores_x.shape[0], scores_y.shape[0]
    per_task = []
    for task in range(scores_x.shape[1]):
        x, y = scores_x[:, task, None], scores_y[None, :, task]
        per_task.append((np.count_nonzero(x > y) + 0.5 * np.count_nonzero(x == y)) / (num_x * num_y))
    return np.mean(per_task)
