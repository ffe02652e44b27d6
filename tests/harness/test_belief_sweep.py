"""The belief-quality sweep (issue 12) plans exactly its cells: 5 methods x 2 tasks x 3 seeds on the
missing_state suite, belief metrics on, the world models reading the validity flag; nothing is run."""
import collections

import gin

from harness import config, sweep_plan
from harness.config import REPO_ROOT


def bound(run, *names):
    config.parse(run["gin_files"], run["bindings"])
    try:
        return [gin.query_parameter(name) for name in names]
    finally:
        gin.clear_config()


def test_belief_sweep_is_five_methods_two_tasks_three_seeds_with_belief_metrics():
    sweep = sweep_plan.load_sweep([REPO_ROOT / "gin" / "sweeps" / "belief_missing_state.gin"])
    plan = sweep_plan.plan(sweep)
    assert sweep.directory.as_posix() == "results/belief_quality/missing_state100k"
    assert len(plan) == 30 and len({run["run_dir"] for run in plan}) == 30
    cells = collections.defaultdict(set)
    for run in plan:
        name = f"{run['method']}+{run['variant']}" if run["variant"] else run["method"]
        cells[name].add((run["task"], run["seed"], run["context_length"]))
    assert set(cells) == {"sac", "kalmamba", "kalmamba+no_regulariser", "rssm", "vrkn"}
    expected = {(task, seed, 32) for task in ("cartpole_swingup", "walker_walk") for seed in (0, 1, 2)}
    assert all(value == expected for value in cells.values())
    for run in plan:
        suite, enabled, steps, gaps = bound(run, "Experiment.suite", "BeliefMetrics.enabled",
                                            "Schedule.total_env_steps", "make_env.missing_gaps")
        assert (suite, enabled, steps, tuple(gaps)) == ("missing_state", True, 100_000, (4, 8))
        if run["method"] == "kalmamba":
            weight, = bound(run, "KalMamba.regulariser_weight")
            assert weight == (0.0 if run["variant"] == "no_regulariser" else 1.0)
