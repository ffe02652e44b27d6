"""Aggregate finished runs with rliable: `python -m harness.aggregate RESULTS_DIR [options]`.

Scores follow rliable's one data contract, `{method: ndarray(num_runs, num_tasks[, num_points])}`,
with DeepMind Control returns normalised as score = return / 1000. Runs are compared only inside a
group of equal (experiment, suite, dataset kind, context length): one leaderboard per group, never
runs of two experiments (two budgets, two protocols) on one. The dataset kind ('replay', 'expert',
'medium') separates the offline track's datasets; online runs have none. A group's rows ("methods" below) are the method
with its variant label, `kalmamba+no_regulariser`, plus the observation/action noise where one
method ran under several noise levels (`sac [obs 0, act 0]`). Within a group:

- tasks are restricted to those every method ran (runs on other tasks are excluded, with a warning);
  a method that shares no task with the others is left out of the group, with its reason;
- each method keeps min over tasks of its runs-per-task runs on every task, lowest seeds first
  (rliable needs a rectangular matrix; the dropped runs are excluded with their reason);
- the final score of a run is its last eval point; sample-efficiency curves use the eval steps that
  every kept run of the group has.

Interval estimates are percentile stratified-bootstrap CIs from `rliable.library`. rliable 1.2.0's
bootstraps draw from numpy's *global* RNG (its `random_state` argument does not reach the resampling),
so every rliable call here runs after `np.random.seed(seed)` and also receives
`random_state=np.random.RandomState(seed)`; the caller's global RNG state is restored afterwards.
"""
import collections
import contextlib
import csv
import itertools
import json
import pathlib
import sys
import warnings

import numpy as np

from harness import records as records_lib
from harness.cli import CliParser, open_unit_interval, positive_int

SCORE_SCALE = 1000.0  # DMC returns lie in [0, 1000]
METRIC_NAMES = ("IQM", "Median", "Mean", "Optimality gap")
DEFAULT_TAUS = np.linspace(0.0, 1.0, 51)


class AggregationError(ValueError):
    """Aggregation is impossible (no run can be aggregated); the message says why."""


def aggregate_metrics(scores):
    """(num_runs, num_tasks) -> (4,) [IQM, median, mean, optimality gap] via rliable.metrics."""
    from rliable import metrics
    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_median(scores),
                     metrics.aggregate_mean(scores), metrics.aggregate_optimality_gap(scores)])


def iqm_per_point(scores):
    """(num_runs, num_tasks, num_points) -> (num_points,) IQM at each eval point."""
    from rliable import metrics
    return np.array([metrics.aggregate_iqm(scores[..., p]) for p in range(scores.shape[-1])])


@contextlib.contextmanager
def seeded_numpy(seed):
    """Seed numpy's global RNG (which rliable's bootstrap uses) and yield a RandomState(seed)."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(saved)


def interval_estimates(score_dict, func, reps, seed, confidence=0.95):
    """rliable.library.get_interval_estimates under `seeded_numpy(seed)`; returns (points, cis)."""
    from rliable import library
    with seeded_numpy(seed) as random_state:
        return library.get_interval_estimates(score_dict, func, reps=reps,
                                              confidence_interval_size=confidence,
                                              random_state=random_state)


def performance_profiles(score_dict, taus, reps, seed, confidence=0.95):
    """rliable.library.create_performance_profile under `seeded_numpy(seed)`."""
    from rliable import library
    with seeded_numpy(seed):
        return library.create_performance_profile(score_dict, taus, reps=reps,
                                                  confidence_interval_size=confidence)


def row_labels(records) -> dict:
    """{run path: leaderboard row}: method[+variant], and the noise where it tells rows apart."""
    noises = collections.defaultdict(set)
    for r in records:
        noises[(r.method, r.variant)].add((r.obs_noise_std, r.action_noise_std))
    labels = {}
    for r in records:
        label = f"{r.method}+{r.variant}" if r.variant else r.method
        if len(noises[(r.method, r.variant)]) > 1:
            label += f" [obs {_number(r.obs_noise_std)}, act {_number(r.action_noise_std)}]"
        labels[r.path] = label
    return labels


def row_conditions(group, labels) -> dict:
    """{row: the identity fields that define it}, shown by the report next to each leaderboard."""
    return {labels[r.path]: {"method": r.method, "variant": r.variant, "world_model": r.world_model,
                             "obs_noise_std": r.obs_noise_std, "action_noise_std": r.action_noise_std}
            for r in group}


def select_runs(group, labels=None):
    """Choose the runs of one (experiment, suite, context length) group that form rectangular
    score matrices; `labels` maps run paths to rows (default: `row_labels(group)`).

    Returns (tasks, {row: {task: [RunRecord] * num_runs}}, exclusions, warnings).
    """
    labels = labels or row_labels(group)
    by_method = collections.defaultdict(lambda: collections.defaultdict(list))
    for record in sorted(group, key=lambda r: r.key):
        by_method[labels[record.path]][record.task].append(record)
    label = _label(group[0])
    exclusions, notes = [], []
    task_sets = {method: set(tasks) for method, tasks in by_method.items()}
    common = sorted(set.intersection(*task_sets.values()))
    while not common and len(task_sets) > 1:  # leave out the method with the fewest runs and retry
        stray = min(task_sets, key=lambda m: (sum(map(len, by_method[m].values())), m))
        others = sorted(set(task_sets) - {stray})
        exclusions += [_exclude(r, f"{label}: {stray} ran only {', '.join(sorted(task_sets[stray]))}, "
                                   f"no task in common with {', '.join(others)}")
                       for runs in by_method.pop(stray).values() for r in runs]
        notes.append(f"{label}: {stray} shares no task with the other methods and is left out")
        del task_sets[stray]
        common = sorted(set.intersection(*task_sets.values()))
    if set.union(*task_sets.values()) != set(common):
        listing = "; ".join(f"{m}: {', '.join(sorted(t))}" for m, t in sorted(task_sets.items()))
        notes.append(f"{label}: methods ran different tasks ({listing}); "
                     + (f"restricted to the common tasks {', '.join(common)}" if common
                        else "they share no task, so this group is not aggregated"))
    selected = {}
    for method, tasks in sorted(by_method.items()):
        for task in sorted(set(tasks) - set(common)):
            missing = sorted(m for m, t in task_sets.items() if task not in t)
            exclusions += [_exclude(r, f"{label}: task {task} not run by every method "
                                       f"(missing for {', '.join(missing)})") for r in tasks[task]]
        if not common:
            continue
        num_runs = min(len(tasks[task]) for task in common)
        for task in common:
            exclusions += [_exclude(r, f"{label}: {method} has only {num_runs} run(s) on some task; "
                                       "extra runs dropped to keep the score matrix rectangular")
                           for r in tasks[task][num_runs:]]
        selected[method] = {task: tasks[task][:num_runs] for task in common}
    finals = {int(r.eval_steps[-1]) for runs in selected.values() for rs in runs.values() for r in rs}
    if len(finals) > 1:
        notes.append(f"{label}: runs end at different env steps {sorted(finals)}; "
                     "final scores compare unequal budgets")
    return common, selected, exclusions, notes


def aggregate_group(tasks, selected, reps, seed, confidence=0.95, taus=DEFAULT_TAUS):
    """All rliable statistics of one group; `selected` as returned by `select_runs`."""
    methods = sorted(selected)
    kept = [r for m in methods for t in tasks for r in selected[m][t]]
    steps = sorted(set.intersection(*(set(r.eval_steps.tolist()) for r in kept)))
    final = {m: score_matrix(selected[m], tasks) for m in methods}
    curves = {m: score_matrix(selected[m], tasks, steps) for m in methods}
    points, cis = interval_estimates(final, aggregate_metrics, reps, seed, confidence)
    profiles, profile_cis = performance_profiles(final, taus, reps, seed, confidence)
    result = {
        "methods": methods, "tasks": tasks,
        "num_runs": {m: int(final[m].shape[0]) for m in methods},
        "scores": {m: final[m].tolist() for m in methods},
        "runs": {m: [[r.path for r in selected[m][t]] for t in tasks] for m in methods},
        "aggregates": {m: {name: _estimate(points[m][i], cis[m][:, i])
                           for i, name in enumerate(METRIC_NAMES)} for m in methods},
        "per_task": {m: {t: _task_summary(selected[m][t]) for t in tasks} for m in methods},
        "performance_profile": {"tau": [float(x) for x in taus],
                                **{m: {"fraction": profiles[m].tolist(),
                                       "low": profile_cis[m][0].tolist(),
                                       "high": profile_cis[m][1].tolist()} for m in methods}},
        "probability_of_improvement": [],
        "sample_efficiency": {"env_steps": steps},
        # every kept run's own eval points, and where it came from, for per-task curves and provenance
        "runs_detail": {m: {t: [_run_detail(r) for r in selected[m][t]] for t in tasks} for m in methods},
    }
    pairs = list(itertools.combinations(methods, 2))
    if pairs:
        from rliable import metrics
        pair_scores = {f"{x}|{y}": [final[x], final[y]] for x, y in pairs}
        pair_points, pair_cis = interval_estimates(pair_scores, metrics.probability_of_improvement,
                                                   reps, seed, confidence)
        result["probability_of_improvement"] = [
            {"x": x, "y": y, **_estimate(pair_points[f"{x}|{y}"], pair_cis[f"{x}|{y}"])}
            for x, y in pairs]
    if steps:
        curve_points, curve_cis = interval_estimates(curves, iqm_per_point, reps, seed, confidence)
        for m in methods:
            result["sample_efficiency"][m] = {"iqm": curve_points[m].tolist(),
                                              "low": curve_cis[m][0].tolist(),
                                              "high": curve_cis[m][1].tolist()}
    return result


def score_matrix(runs_by_task, tasks, steps=None):
    """Normalised scores: (num_runs, num_tasks) at each run's final eval, or
    (num_runs, num_tasks, len(steps)) at the given eval env steps."""
    columns = []
    for task in tasks:
        rows = []
        for run in runs_by_task[task]:
            if steps is None:
                rows.append(run.final_return)
            else:
                rows.append(run.eval_returns[np.searchsorted(run.eval_steps, steps)])
        columns.append(np.asarray(rows, dtype=np.float64))
    return np.stack(columns, axis=1) / SCORE_SCALE


def wall_clock(records, labels=None):
    """Per-run timing rows and their summary per (row, suite, context length); `labels` maps run
    paths to rows (default: the method).

    env_steps_per_s = env_steps / wall_clock_s over the whole run (training time summed over
    resumes); hours_per_1M_env_steps = 1e6 / env_steps_per_s / 3600.
    """
    runs = []
    for r in records:
        if not r.wall_clock_s or r.wall_clock_s <= 0 or r.env_steps <= 0:
            continue
        speed = r.env_steps / r.wall_clock_s
        runs.append({"path": r.path, "method": (labels or {}).get(r.path, r.method),
                     "experiment": r.experiment, "suite": r.suite, "task": r.task,
                     "context_length": r.context_length, "seed": r.seed, "env_steps": r.env_steps,
                     "wall_clock_s": r.wall_clock_s, "env_steps_per_s": speed,
                     "train_env_steps_per_s": r.env_steps_per_s,
                     "hours_per_1M_env_steps": 1e6 / speed / 3600})
    summary = []
    keyed = lambda row: (row["experiment"], row["method"], row["suite"], row["context_length"])
    for (experiment, method, suite, ctx), rows in itertools.groupby(sorted(runs, key=keyed), key=keyed):
        rows = list(rows)
        speeds = np.array([row["env_steps_per_s"] for row in rows])
        summary.append({"experiment": experiment, "method": method, "suite": suite, "context_length": ctx,
                        "num_runs": len(rows),
                        "mean_wall_clock_s": float(np.mean([row["wall_clock_s"] for row in rows])),
                        "median_env_steps_per_s": float(np.median(speeds)),
                        "median_hours_per_1M_env_steps": float(np.median(1e6 / speeds / 3600))})
    return {"runs": runs, "by_context_length": summary}


def aggregate(results_dir, reps=2000, seed=0, confidence=0.95, taus=DEFAULT_TAUS):
    """Read `results_dir` and aggregate every (experiment, suite, context length) group.

    Returns a JSON-serialisable dict: settings, `groups` (see `aggregate_group`, plus experiment,
    suite, context_length and `conditions`: each row's identity fields), `wall_clock`, `excluded`
    (every run left out, with its reason) and `warnings`.
    Raises records.ResultsError / AggregationError when nothing can be aggregated.
    """
    if reps < 1 or not 0 < confidence < 1:
        raise AggregationError(f"need reps >= 1 and 0 < confidence < 1 (got {reps}, {confidence})")
    records, exclusions = records_lib.load_results(results_dir)
    exclusions = list(exclusions)
    groups, notes, included, labels = [], [], [], {}
    by_group = collections.defaultdict(list)
    for record in records:
        by_group[(record.experiment, record.suite, record.dataset_kind or "", record.context_length)].append(record)
    if len({key[0] for key in by_group}) > 1:
        notes.append(f"{results_dir} holds several experiments ({', '.join(sorted({key[0] for key in by_group}))}); "
                     "each gets its own leaderboard")
    for (experiment, suite, kind, ctx), group in sorted(by_group.items()):
        group_labels = row_labels(group)
        tasks, selected, dropped, group_notes = select_runs(group, group_labels)
        exclusions += dropped
        notes += group_notes
        if not selected:
            continue
        result = aggregate_group(tasks, selected, reps, seed, confidence, taus)
        conditions = row_conditions([r for rs in selected.values() for runs in rs.values() for r in runs],
                                    group_labels)
        groups.append({"experiment": experiment, "suite": suite, "dataset_kind": kind or None, "context_length": ctx,
                       "conditions": conditions, **result})
        included += [r for m in selected.values() for rs in m.values() for r in rs]
        labels.update(group_labels)
    if not groups:
        reasons = collections.Counter(e.reason if e.kind != "failed" else "run failed"
                                      for e in exclusions)
        common = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
        why = " ".join(notes) if notes else f"no finished run with eval points ({common})"
        raise AggregationError(f"nothing to aggregate in {results_dir}: {why}")
    return {"results_dir": str(results_dir), "reps": reps, "seed": seed, "confidence": confidence,
            "score_scale": SCORE_SCALE, "metric_names": list(METRIC_NAMES),
            "num_runs_included": len(included), "groups": groups,
            "wall_clock": wall_clock(included, labels),
            "excluded": [e.as_dict() for e in sorted(exclusions, key=lambda e: e.path)],
            "warnings": notes}


def write_outputs(result, out_dir):
    """`aggregate.json` and one CSV per table into `out_dir`; returns the written paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = collections.defaultdict(list)
    for g in result["groups"]:
        where = {"experiment": g["experiment"], "suite": g["suite"], "dataset_kind": g.get("dataset_kind"),
                 "context_length": g["context_length"]}
        for m in g["methods"]:
            for name, est in g["aggregates"][m].items():
                tables["final_scores"].append({**where, "method": m, "metric": name, **est,
                                               "num_runs": g["num_runs"][m],
                                               "num_tasks": len(g["tasks"])})
            for t, row in g["per_task"][m].items():
                tables["per_task"].append({**where, "method": m, "task": t, **row})
            profile = g["performance_profile"][m]
            for i, tau in enumerate(g["performance_profile"]["tau"]):
                tables["performance_profiles"].append(
                    {**where, "method": m, "tau": tau, **{k: v[i] for k, v in profile.items()}})
            curve = g["sample_efficiency"].get(m, {})
            for i, step in enumerate(g["sample_efficiency"]["env_steps"]):
                tables["sample_efficiency"].append(
                    {**where, "method": m, "env_step": step, **{k: v[i] for k, v in curve.items()}})
        for pair in g["probability_of_improvement"]:
            tables["probability_of_improvement"].append({**where, **pair})
    tables["wall_clock_runs"] = result["wall_clock"]["runs"]
    tables["wall_clock_by_context_length"] = result["wall_clock"]["by_context_length"]
    tables["excluded"] = result["excluded"]
    paths = [out_dir / "aggregate.json"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    for name, rows in tables.items():
        paths.append(out_dir / f"{name}.csv")
        _write_csv(paths[-1], rows)
    return paths


def _write_csv(path, rows):
    fields = list(dict.fromkeys(k for row in rows for k in row)) or ["empty"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (" ".join(map(str, v)) if isinstance(v, list) else v)
                             for k, v in row.items()})


def _estimate(point, ci):
    ci = np.asarray(ci).reshape(2)  # scalar metrics come back as (2, 1)
    return {"point": float(point), "low": float(ci[0]), "high": float(ci[1])}


def _task_summary(runs):
    returns = np.array([r.final_return for r in runs])
    return {"num_runs": len(runs), "mean_return": float(returns.mean()),
            "std_return": float(returns.std(ddof=1)) if len(runs) > 1 else 0.0,
            "seeds": [r.seed for r in runs], "returns": returns.tolist()}


def _run_detail(run):
    return {"seed": run.seed, "path": run.path, "env_steps": run.eval_steps.tolist(),
            "returns": run.eval_returns.tolist(), **run.provenance}


def _exclude(record, reason):
    return records_lib.Exclusion(record.path, "excluded", reason, record.method, record.task,
                                 record.seed)


def _label(group):
    """'<experiment>: <suite>[/<dataset kind>]/ctx<T>' of a group (a dict from `aggregate` or one of its records)."""
    get = group.get if isinstance(group, dict) else lambda key: getattr(group, key, None)
    kind = f"/{get('dataset_kind')}" if get('dataset_kind') else ""
    return f"{get('experiment')}: {get('suite')}{kind}/ctx{get('context_length')}"


def _number(value):
    return "?" if value is None else f"{value:g}"


def parse_args(argv, prog="harness.aggregate", description=__doc__, default_out="RESULTS_DIR/aggregate"):
    parser = CliParser(prog=f"python -m {prog}", doc=description)
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="directory holding run directories (searched recursively)")
    parser.add_argument("--out", metavar="DIR", help=f"output directory (default: {default_out})")
    parser.add_argument("--reps", type=positive_int, default=2000, metavar="N",
                        help="bootstrap replications (default 2000; rliable recommends 50000 for final numbers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--confidence", type=open_unit_interval, default=0.95, metavar="LEVEL",
                        help="coverage of the confidence intervals, in (0, 1) (default 0.95)")
    return parser.parse_args(argv)


def run_cli(argv, build, prog="harness.aggregate", description=__doc__, default_out="RESULTS_DIR/aggregate"):
    """Shared by aggregate and report: parse, aggregate, then `build(result, args)`; exit codes 0/2."""
    args = parse_args(argv, prog, description, default_out)
    try:
        result = aggregate(args.results_dir, reps=args.reps, seed=args.seed,
                           confidence=args.confidence)
    except (records_lib.ResultsError, AggregationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"error: missing dependency ({error}); install the project: pip install -e .", file=sys.stderr)
        return 2
    for note in result["warnings"]:
        print(f"warning: {note}", file=sys.stderr)
    if result["excluded"]:
        print(f"{len(result['excluded'])} run(s) excluded:", file=sys.stderr)
        for e in result["excluded"]:
            print(f"  {e['path']}: {e['reason']}", file=sys.stderr)
    try:
        return build(result, args)
    except OSError as error:  # an unwritable --out, a full disk
        print(f"error: cannot write the output: {error}", file=sys.stderr)
        return 2


def _write_aggregate(result, args):
    out = pathlib.Path(args.out or pathlib.Path(args.results_dir) / "aggregate")
    write_outputs(result, out)
    for g in result["groups"]:
        print(f"{_label(g)}: tasks {', '.join(g['tasks'])}")
        for m in g["methods"]:
            iqm = g["aggregates"][m]["IQM"]
            print(f"  {m:<24} IQM {iqm['point']:.3f} [{iqm['low']:.3f}, {iqm['high']:.3f}]"
                  f"  ({g['num_runs'][m]} runs/task)")
    print(f"wrote {out}/aggregate.json and CSV tables")
    return 0


def main(argv=None):
    return run_cli(sys.argv[1:] if argv is None else argv, _write_aggregate)


if __name__ == "__main__":
    sys.exit(main())
