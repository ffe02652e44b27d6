"""harness.aggregate against direct rliable calls on the same score matrices and seed."""
import csv
import json
import shutil
import zlib

import numpy as np
import pytest
from rliable import library, metrics

from harness import aggregate
from harness.config import REPO_ROOT
from tests.harness.test_records import write_run

REPS = 300
SEED = 7
pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")  # arch, via rliable
TASKS = ("cartpole_swingup", "cheetah_run", "walker_walk")


def write_grid(root, methods=("kalmamba", "sac"), tasks=TASKS, seeds=range(5), context_length=32,
               num_points=4, suite="noisy_state"):
    """Random returns in [0, 1000]; returns {method: (seeds, tasks, points) ndarray} of what was written."""
    # crc32, not hash(): str hashes change with every interpreter (PYTHONHASHSEED), so would the data
    rng = np.random.default_rng(zlib.crc32(repr((methods, tasks, context_length)).encode()))
    written = {}
    for method in methods:
        returns = rng.uniform(0, 1000, size=(len(seeds), len(tasks), num_points))
        written[method] = returns
        for i, seed in enumerate(seeds):
            for j, task in enumerate(tasks):
                write_run(root, method=method, task=task, seed=seed, context_length=context_length,
                          suite=suite, returns=tuple(returns[i, j]), wall_clock_s=30.0 * (j + 1))
    return written


def test_numbers_equal_direct_rliable_calls(tmp_path):
    written = write_grid(tmp_path)
    result = aggregate.aggregate(tmp_path, reps=REPS, seed=SEED)
    (group,) = result["groups"]
    final = {m: written[m][:, :, -1] / 1000 for m in written}
    curves = {m: written[m] / 1000 for m in written}
    for m in written:
        np.testing.assert_array_equal(np.array(group["scores"][m]), final[m])

    np.random.seed(SEED)
    points, cis = library.get_interval_estimates(
        final, lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_median(s),
                                   metrics.aggregate_mean(s), metrics.aggregate_optimality_gap(s)]),
        reps=REPS, random_state=np.random.RandomState(SEED))
    for m in written:
        for i, name in enumerate(aggregate.METRIC_NAMES):
            got = group["aggregates"][m][name]
            assert got["point"] == points[m][i]
            assert (got["low"], got["high"]) == (cis[m][0, i], cis[m][1, i])

    np.random.seed(SEED)
    profiles, profile_cis = library.create_performance_profile(final, aggregate.DEFAULT_TAUS, reps=REPS)
    for m in written:
        np.testing.assert_array_equal(group["performance_profile"][m]["fraction"], profiles[m])
        np.testing.assert_array_equal(group["performance_profile"][m]["low"], profile_cis[m][0])
        np.testing.assert_array_equal(group["performance_profile"][m]["high"], profile_cis[m][1])

    np.random.seed(SEED)
    poi, poi_cis = library.get_interval_estimates(
        {"k,s": [final["kalmamba"], final["sac"]]}, metrics.probability_of_improvement,
        reps=REPS, random_state=np.random.RandomState(SEED))
    (pair,) = group["probability_of_improvement"]
    assert (pair["x"], pair["y"]) == ("kalmamba", "sac")
    assert (pair["point"], pair["low"], pair["high"]) == (poi["k,s"], *poi_cis["k,s"].ravel())

    np.random.seed(SEED)
    curve, curve_cis = library.get_interval_estimates(
        curves, lambda s: np.array([metrics.aggregate_iqm(s[..., p]) for p in range(s.shape[-1])]),
        reps=REPS, random_state=np.random.RandomState(SEED))
    assert group["sample_efficiency"]["env_steps"] == [0, 1000, 2000, 3000]
    for m in written:
        np.testing.assert_array_equal(group["sample_efficiency"][m]["iqm"], curve[m])
        np.testing.assert_array_equal(group["sample_efficiency"][m]["low"], curve_cis[m][0])
        np.testing.assert_array_equal(group["sample_efficiency"][m]["high"], curve_cis[m][1])


def test_point_estimates_match_brute_force(tmp_path):
    written = write_grid(tmp_path, methods=("sac",))
    (group,) = aggregate.aggregate(tmp_path, reps=10, seed=0)["groups"]
    scores = np.sort(written["sac"][:, :, -1].ravel() / 1000)  # 15 scores: IQM drops 3 on each side
    task_means = written["sac"][:, :, -1].mean(axis=0) / 1000
    got = group["aggregates"]["sac"]
    np.testing.assert_allclose(got["IQM"]["point"], scores[3:12].mean(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(got["Mean"]["point"], task_means.mean(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(got["Median"]["point"], np.median(task_means), rtol=0, atol=1e-14)
    np.testing.assert_allclose(got["Optimality gap"]["point"], 1 - np.minimum(scores, 1).mean(),
                               rtol=0, atol=1e-14)
    assert got["IQM"]["low"] <= got["IQM"]["point"] <= got["IQM"]["high"]
    assert group["probability_of_improvement"] == []  # a single method has no pair


def test_bootstrap_is_reproducible_and_leaves_global_rng_alone(tmp_path):
    write_grid(tmp_path)
    np.random.seed(123)
    expected_next = np.random.RandomState(123).rand()
    first = aggregate.aggregate(tmp_path, reps=50, seed=3)
    assert np.random.rand() == expected_next
    second = aggregate.aggregate(tmp_path, reps=50, seed=3)
    other = aggregate.aggregate(tmp_path, reps=50, seed=4)
    iqm = lambda r: r["groups"][0]["aggregates"]["sac"]["IQM"]
    assert iqm(first) == iqm(second) and iqm(first) != iqm(other)


def test_groups_by_suite_and_context_length(tmp_path):
    write_grid(tmp_path, context_length=32, seeds=range(3))
    write_grid(tmp_path, context_length=64, seeds=range(2), methods=("kalmamba",))
    write_grid(tmp_path, suite="image", seeds=range(2), tasks=TASKS[:1])
    groups = aggregate.aggregate(tmp_path, reps=10)["groups"]
    assert [(g["suite"], g["context_length"], g["methods"], g["num_runs"]) for g in groups] == [
        ("image", 32, ["kalmamba", "sac"], {"kalmamba": 2, "sac": 2}),
        ("noisy_state", 32, ["kalmamba", "sac"], {"kalmamba": 3, "sac": 3}),
        ("noisy_state", 64, ["kalmamba"], {"kalmamba": 2})]
    assert groups[0]["tasks"] == ["cartpole_swingup"]


def test_different_task_sets_restrict_to_common_tasks_with_warning(tmp_path):
    write_grid(tmp_path, methods=("kalmamba",), seeds=range(2))
    write_grid(tmp_path, methods=("sac",), tasks=TASKS[1:], seeds=range(2))
    result = aggregate.aggregate(tmp_path, reps=10)
    (group,) = result["groups"]
    assert group["tasks"] == list(TASKS[1:])
    (warning,) = result["warnings"]
    assert "methods ran different tasks" in warning and "restricted to the common tasks" in warning
    dropped = [e for e in result["excluded"] if e["task"] == "cartpole_swingup"]
    assert len(dropped) == 2 and all("missing for sac" in e["reason"] for e in dropped)
    assert result["num_runs_included"] == 8


def test_unequal_runs_per_task_are_trimmed_to_a_rectangle(tmp_path):
    write_grid(tmp_path, methods=("sac",), seeds=range(3))
    write_run(tmp_path, method="sac", task=TASKS[0], seed=3)
    result = aggregate.aggregate(tmp_path, reps=10)
    assert result["groups"][0]["num_runs"] == {"sac": 3}
    (excluded,) = result["excluded"]
    assert excluded["seed"] == 3 and "rectangular" in excluded["reason"]


def test_a_stray_run_on_a_task_no_other_method_ran_is_excluded_not_fatal(tmp_path):
    write_grid(tmp_path, methods=("kalmamba", "sac"), tasks=TASKS[:2], seeds=range(2))
    write_run(tmp_path, method="rssm", task=TASKS[2], seed=0)
    result = aggregate.aggregate(tmp_path, reps=10)
    (group,) = result["groups"]
    assert group["methods"] == ["kalmamba", "sac"] and group["tasks"] == sorted(TASKS[:2])
    (stray,) = result["excluded"]
    assert stray["method"] == "rssm" and "no task in common with kalmamba, sac" in stray["reason"]


def test_experiments_are_never_pooled_on_one_leaderboard(tmp_path):
    write_grid(tmp_path / "a", methods=("sac",), tasks=TASKS[:1], seeds=range(2))
    write_grid(tmp_path / "b", methods=("kalmamba",), tasks=TASKS[:1], seeds=range(2))
    for path in (tmp_path / "b").rglob("run.json"):  # same experiment name, other budget: rename it
        path.write_text(path.read_text().replace('"experiment": "exp"', '"experiment": "exp6000"'))
    result = aggregate.aggregate(tmp_path, reps=10)
    assert [(g["experiment"], g["methods"]) for g in result["groups"]] == [("exp", ["sac"]), ("exp6000", ["kalmamba"])]
    assert any("several experiments" in note for note in result["warnings"])


def test_one_row_per_noise_level_and_variant(tmp_path):
    for noise in (0.0, 0.3):
        for seed in range(2):
            write_run(tmp_path, seed=seed, conditions={"obs_noise_std": noise, "action_noise_std": noise,
                                                       "variant": "", "world_model": "models.identity.Identity"})
    write_run(tmp_path, method="kalmamba", conditions={"variant": "no_mamba", "obs_noise_std": 0.3,
                                                       "action_noise_std": 0.3})
    (group,) = aggregate.aggregate(tmp_path, reps=10)["groups"]
    assert group["methods"] == ["kalmamba+no_mamba", "sac [obs 0, act 0]", "sac [obs 0.3, act 0.3]"]
    assert group["conditions"]["sac [obs 0, act 0]"]["world_model"] == "models.identity.Identity"
    assert group["num_runs"]["sac [obs 0.3, act 0.3]"] == 2


def test_only_failed_or_partial_runs_fail_clearly(tmp_path):
    write_run(tmp_path, seed=0, status="failed")
    write_run(tmp_path, seed=1, returns=())
    with pytest.raises(aggregate.AggregationError, match="no eval points in metrics.jsonl"):
        aggregate.aggregate(tmp_path, reps=10)


def test_sample_efficiency_uses_eval_steps_every_run_has(tmp_path):
    write_run(tmp_path, seed=0, returns=(0.0, 100.0, 200.0, 300.0), eval_every=1000)
    write_run(tmp_path, seed=1, returns=(0.0, 500.0, 900.0), eval_every=1500)
    result = aggregate.aggregate(tmp_path, reps=10)
    curve = result["groups"][0]["sample_efficiency"]
    assert curve["env_steps"] == [0, 3000]
    np.testing.assert_allclose(curve["sac"]["iqm"], [0.0, 0.6], atol=1e-14)  # IQM of 2 = their mean


def test_wall_clock_per_run_and_per_context_length(tmp_path):
    write_run(tmp_path, seed=0, context_length=32, wall_clock_s=20.0)   # 2000 env steps
    write_run(tmp_path, seed=1, context_length=32, wall_clock_s=80.0)
    write_run(tmp_path, seed=0, context_length=128, wall_clock_s=400.0)
    clock = aggregate.aggregate(tmp_path, reps=10)["wall_clock"]
    assert [r["env_steps_per_s"] for r in clock["runs"]] == [100.0, 25.0, 5.0]
    assert clock["runs"][0]["train_env_steps_per_s"] == 60.0
    (ctx32, ctx128) = sorted(clock["by_context_length"], key=lambda r: r["context_length"])
    assert ctx32["num_runs"] == 2 and ctx32["mean_wall_clock_s"] == 50.0
    assert ctx32["median_env_steps_per_s"] == 62.5
    np.testing.assert_allclose(ctx128["median_hours_per_1M_env_steps"], 1e6 / 5.0 / 3600)


def test_wall_clock_never_pools_runs_of_different_devices(tmp_path):
    write_run(tmp_path, seed=0, wall_clock_s=20.0, extra_info={"device": "NVIDIA H100 80GB HBM3"})
    write_run(tmp_path, seed=1, wall_clock_s=80.0, extra_info={"device": "NVIDIA H200"})
    write_run(tmp_path, seed=2, wall_clock_s=40.0, extra_info={"device": "NVIDIA H200"})
    rows = aggregate.aggregate(tmp_path, reps=10)["wall_clock"]["by_context_length"]
    assert [(r["device"], r["num_runs"], r["median_env_steps_per_s"]) for r in rows] == [
        ("NVIDIA H100 80GB HBM3", 1, 100.0), ("NVIDIA H200", 2, 37.5)]  # medians of 25 and 50


def test_cli_writes_json_and_csv_tables(tmp_path, capsys):
    write_grid(tmp_path, seeds=range(2))
    write_run(tmp_path, method="sac", task="reacher_easy", seed=9, status="failed")
    assert aggregate.main([str(tmp_path), "--reps", "20", "--seed", "1"]) == 0
    out = tmp_path / "aggregate"
    saved = json.loads((out / "aggregate.json").read_text())
    assert saved["reps"] == 20 and saved["groups"][0]["methods"] == ["kalmamba", "sac"]
    with open(out / "final_scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["metric"] for r in rows} == set(aggregate.METRIC_NAMES)
    iqm_sac = next(r for r in rows if r["method"] == "sac" and r["metric"] == "IQM")
    assert float(iqm_sac["point"]) == saved["groups"][0]["aggregates"]["sac"]["IQM"]["point"]
    with open(out / "excluded.csv") as f:
        (failed,) = list(csv.DictReader(f))
    assert failed["kind"] == "failed" and "loss is nan" in failed["reason"]
    for name in ("per_task", "performance_profiles", "probability_of_improvement",
                 "sample_efficiency", "wall_clock_runs", "wall_clock_by_context_length"):
        assert (out / f"{name}.csv").stat().st_size > 0
    captured = capsys.readouterr()
    assert "IQM" in captured.out and "1 run(s) excluded" in captured.err


@pytest.mark.parametrize("setup, words", [
    (lambda root: None, "no runs under"),
    (lambda root: write_run(root, status="running"), "nothing to aggregate"),
])
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, capsys, setup, words):
    setup(tmp_path)
    assert aggregate.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and words in err[-1]
    assert "Traceback" not in "".join(err)


def test_cli_missing_directory_exits_2(tmp_path, capsys):
    assert aggregate.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: results directory not found: {tmp_path / 'nope'}"


def test_records_written_before_the_identity_fields_still_aggregate():
    result = aggregate.aggregate(REPO_ROOT / "results" / "learning_v2", reps=10)
    (group,) = result["groups"]
    assert group["experiment"] == "learning_v2"
    assert group["methods"] == ["kalmamba", "rssm", "sac", "sac_noise_free", "vrkn"]
    assert group["conditions"]["kalmamba"]["obs_noise_std"] is None  # not recorded then


def test_a_variant_on_fewer_tasks_is_left_out_instead_of_shrinking_the_group(tmp_path):
    write_grid(tmp_path, methods=("kalmamba", "rssm", "sac"), tasks=TASKS[:2], seeds=range(2))
    write_run(tmp_path, method="kalmamba", task=TASKS[0], seed=0, conditions={"variant": "reg0.1"})
    result = aggregate.aggregate(tmp_path, reps=10)
    (group,) = result["groups"]
    assert group["tasks"] == sorted(TASKS[:2]) and group["methods"] == ["kalmamba", "rssm", "sac"]
    (left_out,) = result["excluded"]
    assert left_out["reason"].endswith(f"kalmamba+reg0.1 ran only {TASKS[0]}, not {TASKS[1]}, "
                                       "which kalmamba, rssm, sac ran")


def test_at_env_steps_scores_every_run_at_that_step_and_names_later_failures(tmp_path):
    write_run(tmp_path, method="sac", returns=(0.0, 100.0, 200.0), seed=0)
    write_run(tmp_path, method="sac", returns=(0.0, 300.0), seed=1, status="failed")
    result = aggregate.aggregate(tmp_path, reps=10, at_env_steps=1000)
    (group,) = result["groups"]
    assert group["scores"]["sac"] == [[0.1], [0.3]] and result["at_env_steps"] == 1000
    assert any("seed1: scored at env step 1000, then run failed" in note for note in result["warnings"])


def test_tasks_keeps_the_methods_a_wider_task_set_would_leave_out(tmp_path):
    """A partial study: sac ran three tasks, kalmamba one. By default the wider set wins and kalmamba
    is left out; --tasks walker_walk compares both there, with the same numbers as a root that holds
    only the walker runs, and lists the other runs as excluded."""
    write_grid(tmp_path / "all", methods=("sac",), tasks=TASKS, seeds=range(3))
    write_grid(tmp_path / "all", methods=("kalmamba",), tasks=TASKS[2:], seeds=range(3))
    unfiltered = aggregate.aggregate(tmp_path / "all", reps=10)
    (default,) = unfiltered["groups"]
    assert default["methods"] == ["sac"] and default["tasks"] == sorted(TASKS)
    assert unfiltered["only_tasks"] is None

    result = aggregate.aggregate(tmp_path / "all", reps=REPS, seed=SEED, only_tasks=["walker_walk"])
    (group,) = result["groups"]
    assert group["methods"] == ["kalmamba", "sac"] and group["tasks"] == ["walker_walk"]
    assert result["only_tasks"] == ["walker_walk"]
    excluded = sorted((e["method"], e["task"], e["reason"]) for e in result["excluded"])
    assert excluded == sorted(("sac", task, "task %s not in --tasks walker_walk" % task)
                              for task in TASKS[:2] for _ in range(3))
    write_grid(tmp_path / "walker", methods=("sac",), tasks=TASKS, seeds=range(3))  # same returns
    write_grid(tmp_path / "walker", methods=("kalmamba",), tasks=TASKS[2:], seeds=range(3))
    for path in list((tmp_path / "walker").rglob("run.json")):
        if "walker_walk" not in str(path):
            shutil.rmtree(path.parent)
    (alone,) = aggregate.aggregate(tmp_path / "walker", reps=REPS, seed=SEED)["groups"]
    assert alone["scores"] == group["scores"] and alone["aggregates"] == group["aggregates"]


def test_tasks_naming_a_task_without_runs_is_one_error_line(tmp_path, capsys):
    write_grid(tmp_path, methods=("sac",), tasks=TASKS[:1], seeds=range(1))
    assert aggregate.main([str(tmp_path), "--tasks", "walker_run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --tasks: no run of walker_run here (tasks with runs: {TASKS[0]})"]
    assert not (tmp_path / "aggregate").exists()
    with pytest.raises(SystemExit) as stop:
        aggregate.main([str(tmp_path), "--tasks", "a,,b"])
    assert stop.value.code == 2
