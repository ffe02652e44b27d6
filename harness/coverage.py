"""Which planned runs exist: the runs that sweep files plan, against the records under a results root.

    planned = planned_runs(['gin/sweeps/leaderboard_noisy100k.gin'], root)
    rows = coverage(planned, records, exclusions, root)

One row per (experiment, row, suite, context length): how many runs the sweeps plan, how many are
done, failed, unfinished (interrupted, running, unreadable, no eval point) or not started, and the
tasks that lack done seeds. It states every gap of a study, run by run counted, so that a missing
cell is never silently absent from a leaderboard.
"""
import collections
import os
import pathlib

from harness import sweep_plan
from harness.rundir import RUN_FILE


def planned_runs(sweep_files, root) -> list[dict]:
    """[{path (relative to root), experiment, row, suite, task, seed, context_length}] of every run
    the sweep files plan (nothing is run). Raises config.ConfigError for a bad sweep file."""
    root = pathlib.Path(root).resolve()
    planned = []
    for sweep_file in sweep_files:
        sweep = sweep_plan.load_sweep([sweep_file])
        for run in sweep_plan.plan(sweep):
            path = os.path.relpath((sweep.directory / run["run_dir"]).resolve(), root)
            row = f"{run['method']}+{run['variant']}" if run["variant"] else run["method"]
            planned.append({"path": pathlib.PurePath(path).as_posix(), "experiment": sweep.name, "row": row,
                            "suite": run["suite"], "task": run["task"], "seed": run["seed"],
                            "context_length": run["context_length"]})
    return planned


def coverage(planned, records, exclusions, root) -> list[dict]:
    """Rows as in the module docstring, sorted by (experiment, suite, context length, row). A run
    without run.json is 'not started' unless a sweep manifest says it failed."""
    state = {e.path: e.kind for e in exclusions
             if e.kind == "failed" or (pathlib.Path(root) / e.path / RUN_FILE).is_file()}
    state.update({r.path: "done" for r in records})
    cells = collections.defaultdict(list)
    for run in planned:
        cells[(run["experiment"], run["suite"], run["context_length"], run["row"])].append(run)
    rows = []
    for (experiment, suite, ctx, row), runs in sorted(cells.items()):
        kinds = collections.Counter(_kind(state.get(run["path"])) for run in runs)
        wanted, done = collections.Counter(), collections.Counter()
        for run in runs:
            wanted[run["task"]] += 1
            done[run["task"]] += state.get(run["path"]) == "done"
        short = [f"{task} ({done[task]}/{wanted[task]})" for task in sorted(wanted) if done[task] < wanted[task]]
        rows.append({"experiment": experiment, "method": row, "suite": suite, "context_length": ctx,
                     "planned": len(runs), "done": kinds["done"], "failed": kinds["failed"],
                     "unfinished": kinds["unfinished"], "not_started": kinds["not started"],
                     "short": short})
    return rows


def _kind(state):
    if state in ("done", "failed"):
        return state
    return "not started" if state is None else "unfinished"

