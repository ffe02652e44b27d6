"""Belief quality beside the returns: the IQM of each `belief/*` eval metric with its stratified-bootstrap CI.

Per (experiment, suite, dataset kind, context length) group, and per metric of BELIEF_METRICS, the
runs `harness.aggregate.select_runs` kept give `{method: ndarray(num_runs, num_tasks)}` of the
metric at each run's final evaluation (harness/records.py reads it), built exactly as the return
scores are (same tasks, same runs, same order) but not normalised. Its IQM and percentile CI come
from the same seeded rliable bootstrap as the returns'. A method with the metric missing in any of
its kept runs (open-loop MSE for `sac`, which has no observation model) gets no estimate: the report
shows a dash. A group none of whose kept runs has a belief metric gets no belief entry at all.
"""
import numpy as np

from harness import score_metrics

# (eval-line key, report column), in the report's column order
BELIEF_METRICS = (
    ("belief/ridge_r2", "Ridge R²"),
    ("belief/mlp_r2", "MLP R²"),
    ("belief/mlp_nll", "MLP NLL"),
    ("belief/mlp_coverage_1sigma", "MLP 1σ coverage"),
    ("belief/mlp_coverage_2sigma", "MLP 2σ coverage"),
    ("belief/open_loop_mse_k1", "Open-loop MSE k=1"),
    ("belief/open_loop_mse_k5", "Open-loop MSE k=5"),
    ("belief/open_loop_mse_k10", "Open-loop MSE k=10"),
    ("belief/open_loop_mse_k25", "Open-loop MSE k=25"),
)
NOTE = ("Higher R² is better; lower NLL and open-loop MSE are better; 1σ and 2σ coverage are best near "
        "0.683 and 0.954.")


def belief_matrix(runs_by_task, tasks, key):
    """(num_runs, num_tasks) of `key` at each run's final eval (as aggregate.score_matrix, unscaled),
    or None where a run lacks it."""
    values = [[run.belief.get(key) for run in runs_by_task[task]] for task in tasks]
    if any(value is None for column in values for value in column):
        return None
    return np.stack([np.asarray(column, dtype=np.float64) for column in values], axis=1)


def _iqm(scores):
    return np.array([score_metrics.iqm(scores)])


def aggregate_belief(tasks, selected, reps, seed, confidence=0.95):
    """{'metrics': [key], 'labels': [column], 'iqm': {key: {method: estimate or None}}} of one group
    (`selected` as returned by aggregate.select_runs), or None when no kept run has a belief metric."""
    from harness import aggregate as aggregate_lib
    methods = sorted(selected)
    runs = [r for m in methods for t in tasks for r in selected[m][t]]
    keys = [key for key, _ in BELIEF_METRICS]
    if not any(key in r.belief for r in runs for key in keys):
        return None
    result = {"metrics": keys, "labels": [label for _, label in BELIEF_METRICS], "iqm": {}}
    for key in keys:
        matrices = {m: belief_matrix(selected[m], tasks, key) for m in methods}
        present = {m: scores for m, scores in matrices.items() if scores is not None}
        estimates = {m: None for m in methods}
        if present:
            points, cis = aggregate_lib.interval_estimates(present, _iqm, reps, seed, confidence)
            estimates.update({m: aggregate_lib.estimate(points[m][0], cis[m]) for m in present})
        result["iqm"][key] = estimates
    return result


def belief_rows(group, order):
    """(header, rows) of a group's belief table, methods in `order`; 'IQM [lo, hi]' cells, '-' where missing."""
    from harness import report_tables
    belief = group["belief"]
    rows = [(m, *(report_tables.interval(belief["iqm"][key][m]) if belief["iqm"][key].get(m) else "-"
                  for key in belief["metrics"])) for m in order]
    return ("Method", *belief["labels"]), rows
