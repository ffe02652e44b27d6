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
  every kept run of the group has. `--at-env-steps N` reads every run as it stood at env step N
  (harness/records.py): a DMC-100k table from 1M-step runs, or a common budget for runs that stopped
  at different points. `--tasks T1,T2` keeps only those tasks' runs (the others are excluded, with
  their reason): the tasks every method has run, while a study is partial.

Beside the groups: wall clock, GPU hours and machines (harness/costs.py, GPU hours over every
run.json whatever its status), with --sweep the planned runs by state (harness/coverage.py), with
--claims a paper's claims judged against the groups (harness/claims.py). Files: harness/aggregate_tables.py.

Interval estimates are percentile stratified-bootstrap CIs from `rliable.library`; the IQM and the
probability of improvement inside them are harness/score_metrics.py's bit-identical fast twins of
rliable's. rliable 1.2.0's
bootstraps draw from numpy's *global* RNG (its `random_state` argument does not reach the resampling),
so every rliable call here runs after `np.random.seed(seed)` and also receives
`random_state=np.random.RandomState(seed)`; the caller's global RNG state is restored afterwards.
"""
import collections
import contextlib
import itertools
import pathlib
import sys
import warnings

import numpy as np

from harness import aggregate_tables, belief_aggregate, costs, score_metrics
from harness import records as records_lib
from harness.cli import CliParser, name_list, open_unit_interval, positive_int

SCORE_SCALE = 1000.0  # DMC returns lie in [0, 1000]
METRIC_NAMES = ("IQM", "Median", "Mean", "Optimality gap")
DEFAULT_TAUS = np.linspace(0.0, 1.0, 51)


class AggregationError(ValueError):
    """Aggregation is impossible (no run can be aggregated); the message says why."""


def aggregate_metrics(scores):
    """(num_runs, num_tasks) -> (4,) [IQM, median, mean, optimality gap] (rliable.metrics; the IQM by its
    twin score_metrics.iqm)."""
    from rliable import metrics
    return np.array([score_metrics.iqm(scores), metrics.aggregate_median(scores),
                     metrics.aggregate_mean(scores), metrics.aggregate_optimality_gap(scores)])


def iqm_per_point(scores):
    """(num_runs, num_tasks, num_points) -> (num_points,) IQM at each eval point."""
    return np.array([score_metrics.iqm(scores[..., p]) for p in range(scores.shape[-1])])


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
    common = _widest_task_set(task_sets)
    for stray in sorted(m for m, tasks in task_sets.items() if not set(common) <= tasks):
        lacking = sorted(set(common) - task_sets[stray])
        others = sorted(m for m in task_sets if set(common) <= task_sets[m])
        why = (f"no task in common with {', '.join(others)}" if not task_sets[stray] & set(common)
               else f"not {', '.join(lacking)}, which {', '.join(others)} ran")
        exclusions += [_exclude(r, f"{label}: {stray} ran only {', '.join(sorted(task_sets[stray]))}, {why}")
                       for runs in by_method.pop(stray).values() for r in runs]
        notes.append(f"{label}: {stray} lacks task(s) {', '.join(lacking)} and is left out")
        del task_sets[stray]
    if set.union(*task_sets.values()) != set(common):
        listing = "; ".join(f"{m}: {', '.join(sorted(t))}" for m, t in sorted(task_sets.items()))
        notes.append(f"{label}: methods ran different tasks ({listing}); "
                     f"restricted to the common tasks {', '.join(common)}")
    selected = {}
    for method, tasks in sorted(by_method.items()):
        for task in sorted(set(tasks) - set(common)):
            missing = sorted(m for m, t in task_sets.items() if task not in t)
            exclusions += [_exclude(r, f"{label}: task {task} not run by every method "
                                       f"(missing for {', '.join(missing)})") for r in tasks[task]]
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


def _widest_task_set(task_sets):
    """The task set that keeps the most (method, task) cells when every method must cover all of it:
    one method's own task set, or the tasks every method ran; ties go to more tasks. A method that
    ran a subset of the others' tasks is left out rather than shrinking every method's task set."""
    candidates = {frozenset(tasks) for tasks in task_sets.values()} | {frozenset(set.intersection(*task_sets.values()))}

    def cells(tasks):
        return sum(tasks <= ran for ran in task_sets.values()) * len(tasks), len(tasks), sorted(tasks)
    return sorted(max(candidates, key=cells))


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
        "aggregates": {m: {name: estimate(points[m][i], cis[m][:, i])
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
        pair_scores = {f"{x}|{y}": [final[x], final[y]] for x, y in pairs}
        pair_points, pair_cis = interval_estimates(pair_scores, score_metrics.probability_of_improvement,
                                                   reps, seed, confidence)
        result["probability_of_improvement"] = [
            {"x": x, "y": y, **estimate(pair_points[f"{x}|{y}"], pair_cis[f"{x}|{y}"])}
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


def aggregate(results_dir, reps=2000, seed=0, confidence=0.95, taus=DEFAULT_TAUS, allow_empty=False,
              planned=None, claims=None, at_env_steps=None, only_tasks=None):
    """Read `results_dir` and aggregate every (experiment, suite, context length) group.

    Returns a JSON-serialisable dict: settings, `groups` (see `aggregate_group`, plus experiment,
    suite, context_length, `conditions`: each row's identity fields, and `belief` where runs recorded
    belief metrics, harness.belief_aggregate), `wall_clock`, `resources`
    (GPU hours, machines and the records' latest update, harness.costs), `excluded` (every run left
    out, with its reason) and `warnings`; with `planned` (harness.coverage.planned_runs) `coverage`,
    with `claims` (harness.claims.load_claims) each claim's measurement and verdict.
    `at_env_steps`: score every run at that env step (records.load_results). `only_tasks`: aggregate only
    the runs of these tasks, the others listed as excluded (e.g. the tasks every method has run while
    a study is partial); a task no run has raises AggregationError.
    Raises records.ResultsError / AggregationError when nothing can be aggregated, unless
    `allow_empty`: then a missing or empty directory gives a result without groups.
    """
    if reps < 1 or not 0 < confidence < 1:
        raise AggregationError(f"need reps >= 1 and 0 < confidence < 1 (got {reps}, {confidence})")
    try:
        records, exclusions = records_lib.load_results(results_dir, at_env_steps)
    except records_lib.ResultsError:
        if not allow_empty:
            raise
        records, exclusions = [], []
    exclusions = list(exclusions)
    if only_tasks:
        records, left_out = _only_tasks(records, exclusions, only_tasks)
        exclusions += left_out
    groups, included, labels = [], [], {}
    notes = [f"{r.path}: scored at env step {at_env_steps}, then {r.ended_as}"
             for r in records if r.ended_as]
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
        belief = belief_aggregate.aggregate_belief(tasks, selected, reps, seed, confidence)
        groups.append({"experiment": experiment, "suite": suite, "dataset_kind": kind or None, "context_length": ctx,
                       "conditions": conditions, **result, **({"belief": belief} if belief else {})})
        included += [r for m in selected.values() for rs in m.values() for r in rs]
        labels.update(group_labels)
    if not groups and not allow_empty:
        reasons = collections.Counter(e.reason if e.kind != "failed" else "run failed"
                                      for e in exclusions)
        common = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3))
        why = " ".join(notes) if notes else f"no finished run with eval points ({common})"
        raise AggregationError(f"nothing to aggregate in {results_dir}: {why}")
    infos = records_lib.run_infos(results_dir)
    gpu = costs.gpu_usage(infos)
    held = costs.sweep_gpu_time(records_lib.sweep_manifests(results_dir))
    if held:  # only where a sweep recorded it, so older records aggregate as before
        gpu["sweeps"] = held
    result = {"results_dir": str(results_dir), "reps": reps, "seed": seed, "confidence": confidence,
              "score_scale": SCORE_SCALE, "metric_names": list(METRIC_NAMES),
              "at_env_steps": at_env_steps, "only_tasks": list(only_tasks) if only_tasks else None,
              "num_runs_included": len(included), "groups": groups,
              "wall_clock": costs.wall_clock(included, labels),
              "resources": {"gpu": gpu, "machines": costs.machines(infos),
                            "records_updated_at": costs.records_updated_at(infos)},
              "excluded": [e.as_dict() for e in sorted(exclusions, key=lambda e: e.path)],
              "warnings": notes}
    if planned is not None:
        from harness import coverage
        result["coverage"] = coverage.coverage(planned, records, exclusions, results_dir)
    if claims is not None:
        from harness import claims as claims_lib
        result["claims"] = claims_lib.evaluate(result, claims, reps, seed, confidence)
    return result


def estimate(point, ci):
    """{'point', 'low', 'high'} of a point estimate and its CI as rliable returns them."""
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


def _only_tasks(records, exclusions, tasks):
    """(records of `tasks`, exclusions for the others); AggregationError names a task no run has."""
    known = {r.task for r in records} | {e.task for e in exclusions}
    unknown = sorted(set(tasks) - known)
    if unknown:
        raise AggregationError(f"--tasks: no run of {', '.join(unknown)} here "
                               f"(tasks with runs: {', '.join(sorted(t for t in known if t)) or 'none'})")
    listed = ", ".join(tasks)
    return ([r for r in records if r.task in tasks],
            [_exclude(r, f"task {r.task} not in --tasks {listed}") for r in records if r.task not in tasks])


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


def parse_args(argv, prog="harness.aggregate", description=__doc__, default_out="RESULTS_DIR/aggregate",
               extra=None):
    parser = CliParser(prog=f"python -m {prog}", doc=description)
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="directory holding run directories (searched recursively)")
    parser.add_argument("--out", metavar="DIR", help=f"output directory (default: {default_out})")
    parser.add_argument("--reps", type=positive_int, default=2000, metavar="N",
                        help="bootstrap replications (default 2000; rliable recommends 50000 for final numbers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--confidence", type=open_unit_interval, default=0.95, metavar="LEVEL",
                        help="coverage of the confidence intervals, in (0, 1) (default 0.95)")
    parser.add_argument("--sweep", action="append", default=[], metavar="FILE",
                        help="sweep gin file whose planned runs are counted: done, failed, unfinished, "
                             "not started (repeatable; nothing is run)")
    parser.add_argument("--claims", metavar="FILE",
                        help="claims file (JSON, e.g. docs/paper_claims.json) to set against the measurements")
    parser.add_argument("--at-env-steps", type=positive_int, metavar="N",
                        help="score every run at its eval point at env step N, whatever it did after "
                             "(DMC-100k from longer runs; runs without an eval point at N are excluded)")
    parser.add_argument("--tasks", type=name_list, metavar="T1,T2",
                        help="aggregate only the runs of these tasks (comma-separated), the others listed "
                             "as excluded: e.g. the tasks every method has run while a study is partial")
    parser.add_argument("--allow-empty", action="store_true",
                        help="a missing or empty RESULTS_DIR, or one with nothing finished, still gives the "
                             "tables (saying so) instead of exit status 2")
    if extra:
        extra(parser)
    return parser.parse_args(argv)


def run_cli(argv, build, prog="harness.aggregate", description=__doc__, default_out="RESULTS_DIR/aggregate",
            extra=None):
    """Shared by aggregate and report: parse, aggregate, then `build(result, args)`; exit codes 0/2.
    `extra(parser)` adds a tool's own options."""
    from harness import claims as claims_lib
    from harness import config
    from harness import coverage
    args = parse_args(argv, prog, description, default_out, extra)
    try:
        planned = coverage.planned_runs(args.sweep, args.results_dir) if args.sweep else None
        claims = claims_lib.load_claims(args.claims) if args.claims else None
        result = aggregate(args.results_dir, reps=args.reps, seed=args.seed, confidence=args.confidence,
                           allow_empty=args.allow_empty, planned=planned, claims=claims,
                           at_env_steps=args.at_env_steps, only_tasks=args.tasks)
    except (records_lib.ResultsError, AggregationError, claims_lib.ClaimsError, config.ConfigError) as error:
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
    aggregate_tables.write_outputs(result, out)
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
