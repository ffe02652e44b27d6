"""The belief-quality sweep (issue 12) plans exactly its cells: 4 methods x 2 tasks x 3 seeds on the
missing_state suite, belief metrics on, the world models reading the validity flag; nothing is run.
The committed records are that plan's runs, every one finished."""
import collections
import json

import gin

from harness import config, sweep_plan
from harness.config import REPO_ROOT


def bound(run, *names):
    config.parse(run["gin_files"], run["bindings"])
    try:
        return [gin.query_parameter(name) for name in names]
    finally:
        gin.clear_config()


def test_belief_sweep_is_four_methods_two_tasks_three_seeds_with_belief_metrics():
    sweep = sweep_plan.load_sweep([REPO_ROOT / "gin" / "sweeps" / "belief_missing_state.gin"])
    plan = sweep_plan.plan(sweep)
    assert sweep.directory.as_posix() == "results/belief_quality/missing_state100k"
    assert len(plan) == 24 and len({run["run_dir"] for run in plan}) == 24
    cells = collections.defaultdict(set)
    for run in plan:
        name = f"{run['method']}+{run['variant']}" if run["variant"] else run["method"]
        cells[name].add((run["task"], run["seed"], run["context_length"]))
    assert set(cells) == {"sac", "kalmamba", "rssm", "vrkn"}
    expected = {(task, seed, 32) for task in ("cartpole_swingup", "walker_walk") for seed in (0, 1, 2)}
    assert all(value == expected for value in cells.values())
    for run in plan:
        suite, enabled, steps, gaps = bound(run, "Experiment.suite", "BeliefMetrics.enabled",
                                            "Schedule.total_env_steps", "make_env.missing_gaps")
        assert (suite, enabled, steps, tuple(gaps)) == ("missing_state", True, 100_000, (4, 8))
        if run["method"] == "kalmamba":
            weight, = bound(run, "KalMamba.regulariser_weight")
            assert weight == 1.0


def test_the_committed_records_are_the_sweeps_runs_all_finished_at_100k():
    sweep = sweep_plan.load_sweep([REPO_ROOT / "gin" / "sweeps" / "belief_missing_state.gin"])
    planned = {run["run_dir"] for run in sweep_plan.plan(sweep)}
    root = REPO_ROOT / sweep.directory
    committed = {path.parent.relative_to(root).as_posix() for path in root.rglob("run.json")}
    assert committed == planned
    for run_dir in planned:
        info = json.loads((root / run_dir / "run.json").read_text())
        assert (info["status"], info["env_steps"]) == ("done", 100_000)
