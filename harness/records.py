"""Read run directories (contract: results/README.md) into validated records.

`load_results(root)` walks `root` for `run.json` files and sorts every run into exactly one of

- a `RunRecord`: a finished run (`status == 'done'`) with at least one eval point, or
- an `Exclusion`: anything else, with a one-line reason a report can print (failed, incomplete,
  corrupt file, no eval points, ...).

With `at_env_steps=N` every run is read as if it had stopped at env step N: its eval points after N
are dropped and it counts as finished when it has an eval point at exactly N, whatever its status
afterwards (a 1M run scored at 100k; a run interrupted or failed after N). That is how DMC-100k /
DMC-500k numbers are read off longer runs; a run that failed after N is still named in a note.

Sweep manifests (`<root>/**/sweep.json`, written by `harness.sweep`) add exclusions for runs that
never wrote a `run.json` (for example killed at start-up), so no run of a sweep goes unreported.
Nothing here raises for bad run files; only an unusable `root` raises `ResultsError`.
"""
import dataclasses
import json
import math
import os
import pathlib

import numpy as np

from harness import rundir
from harness.rundir import METRICS_FILE, RUN_FILE

MANIFEST_FILE = "sweep.json"
PROVENANCE_FIELDS = ("git_commit", "source_digest", "versions", "device", "bindings", "machine", "tf32", "compile_mode")


class ResultsError(ValueError):
    """The results directory as a whole cannot be read (missing, or holds no runs)."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished run.

    eval_steps: (P,) int64 env steps of the eval points, strictly increasing.
    eval_returns: (P,) float64 mean undiscounted episode return at each eval point.
    env_steps_per_s: median of the train lines' `env_steps_per_s`, None without train lines.
    train_loop_env_steps_per_s: median of the train lines' `interval_env_steps_per_s` (the training
      loop's speed between two train lines, evaluation excluded), None where not recorded.
    gpu_seconds: run.json's `gpu_seconds` (None where not recorded).
    belief: the final eval line's finite scalar `belief/*` entries (lists such as `*_r2_dims` and
      missing or non-finite keys left out; {} for runs without belief metrics).
    dataset_kind: offline runs: the kind of dataset trained on (harness.datasets); None online.
    provenance: run.json's git_commit, versions, device and bindings (None where not recorded).
    ended_as: read at an earlier env step (`at_env_steps`) although the run did not finish: how it
      ended (its exclusion reason otherwise); None for runs that finished.
    """
    path: str
    experiment: str
    method: str
    variant: str
    world_model: str | None
    obs_noise_std: float | None
    action_noise_std: float | None
    suite: str
    task: str
    seed: int
    context_length: int
    env_steps: int
    total_env_steps: int | None
    wall_clock_s: float | None
    eval_steps: np.ndarray
    eval_returns: np.ndarray
    env_steps_per_s: float | None
    dataset_kind: str | None = None
    provenance: dict = dataclasses.field(default_factory=dict)
    train_loop_env_steps_per_s: float | None = None
    gpu_seconds: float | None = None
    belief: dict = dataclasses.field(default_factory=dict)
    ended_as: str | None = None

    @property
    def final_return(self) -> float:
        return float(self.eval_returns[-1])

    @property
    def condition(self) -> tuple:
        """What tells two rows of one leaderboard apart besides the method."""
        return (self.variant, _sortable(self.obs_noise_std), _sortable(self.action_noise_std),
                self.dataset_kind or "")

    @property
    def key(self) -> tuple:
        """What makes a run unique: no two runs of one experiment may share it."""
        return (self.experiment, self.method, *self.condition, self.suite, self.task,
                self.context_length, self.seed)


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """A run left out of aggregation. kind: 'failed', 'incomplete', 'invalid', 'excluded' or 'not
    started' (a sweep manifest plans it; it has written nothing yet)."""
    path: str
    kind: str
    reason: str
    method: str | None = None
    task: str | None = None
    seed: int | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def load_results(root, at_env_steps=None) -> tuple[list[RunRecord], list[Exclusion]]:
    """All runs under `root`: (finished records sorted by key, exclusions sorted by path); with
    `at_env_steps` each run as it stood at that env step (module docstring)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ResultsError(f"results directory not found: {root}")
    records, exclusions, seen = [], [], set()
    run_dirs, manifests = _walk(root)
    for run_dir in run_dirs:
        seen.add(run_dir.resolve())
        outcome = read_run(run_dir, display=_relative(run_dir, root), at_env_steps=at_env_steps)
        (records if isinstance(outcome, RunRecord) else exclusions).append(outcome)
    exclusions += _manifest_exclusions(root, manifests, seen)
    if not records and not exclusions:
        raise ResultsError(f"no runs under {root}: no {RUN_FILE} or {MANIFEST_FILE} found")
    records, duplicates = _drop_duplicates(records)
    records.sort(key=lambda r: (r.key, r.path))
    return records, sorted(exclusions + duplicates, key=lambda e: e.path)


def read_run(run_dir, display=None, at_env_steps=None) -> RunRecord | Exclusion:
    """Validate one run directory; `display` is the path shown in reasons (default: run_dir);
    `at_env_steps`: read the run as it stood at that env step (module docstring)."""
    run_dir = pathlib.Path(run_dir)
    display = str(display if display is not None else run_dir)
    info, problem = _read_info(run_dir / RUN_FILE)
    if problem:
        return Exclusion(display, "invalid", problem)
    who = {"method": info["method"], "task": info["task"], "seed": info["seed"]}
    unfinished = _unfinished(info, display, who)
    if unfinished and at_env_steps is None:
        return unfinished
    # a process killed mid-write leaves a partial last line: read an unfinished run without it
    metrics, problem = _read_metrics(run_dir / METRICS_FILE, up_to=at_env_steps, partial_tail=bool(unfinished))
    if problem:
        return Exclusion(display, "invalid", problem, **who)
    if at_env_steps is not None and (not metrics.evals or metrics.evals[-1][0] != at_env_steps):
        if unfinished:
            return unfinished
        reached = metrics.evals[-1][0] if metrics.evals else "no"
        return Exclusion(display, "excluded", f"no eval point at env step {at_env_steps} "
                         f"(last at or before it: {reached})", **who)
    if not metrics.evals:
        return Exclusion(display, "excluded", f"no eval points in {METRICS_FILE}", **who)
    steps = np.array([step for step, _ in metrics.evals], dtype=np.int64)
    env_steps = int(_number(info.get("env_steps")) or steps[-1])
    wall_clock_s = _number(info.get("wall_clock_s"))
    if at_env_steps is not None and (unfinished or env_steps != at_env_steps):
        env_steps = at_env_steps
        wall_clock_s = at_env_steps / metrics.speed_at_end if metrics.speed_at_end else None
    return RunRecord(
        path=display, experiment=info["experiment"], method=info["method"], variant=info["variant"] or "",
        world_model=info["world_model"], obs_noise_std=_number(info["obs_noise_std"]),
        action_noise_std=_number(info["action_noise_std"]), suite=info["suite"],
        task=info["task"], seed=info["seed"], context_length=info["context_length"],
        env_steps=env_steps, total_env_steps=_int_or_none(info.get("total_env_steps")),
        wall_clock_s=wall_clock_s,
        eval_steps=steps, eval_returns=np.array([ret for _, ret in metrics.evals], dtype=np.float64),
        env_steps_per_s=float(np.median(metrics.speeds)) if metrics.speeds else None,
        dataset_kind=info["dataset_kind"] if isinstance(info["dataset_kind"], str) else None,
        provenance={key: info.get(key) for key in PROVENANCE_FIELDS},
        train_loop_env_steps_per_s=float(np.median(metrics.loop_speeds)) if metrics.loop_speeds else None,
        gpu_seconds=_number(info.get("gpu_seconds")), belief=metrics.belief,
        ended_as=unfinished.reason if unfinished else None)


def _unfinished(info, display, who):
    """The Exclusion of a run whose status is not 'done', else None."""
    status = info["status"]
    if status == rundir.INTERRUPTED:
        return Exclusion(display, "incomplete", f"interrupted by {info.get('interrupted_by', 'a signal')} "
                         f"at {info.get('env_steps', '?')}/{info.get('total_env_steps', '?')} env steps", **who)
    if status == rundir.FAILED:
        error = str(info.get("error") or "no error recorded").strip().splitlines()
        return Exclusion(display, "failed", f"run failed: {error[-1] if error else ''}", **who)
    if status == rundir.RUNNING:
        progress = f"{info.get('env_steps', '?')}/{info.get('total_env_steps', '?')} env steps"
        return Exclusion(display, "incomplete", f"incomplete: status 'running' at {progress}, last written "
                         f"{info.get('updated_at', '?')} (still training, or its process ended unrecorded)", **who)
    return None


def run_infos(root):
    """[(path relative to root, run.json dict)] of every run directory under `root` whose run.json
    is valid, whatever its status (what was spent on failed runs counts too), sorted by path."""
    root = pathlib.Path(root)
    if not root.is_dir():
        return []
    found = []
    for run_dir in _walk(root)[0]:
        info, problem = _read_info(run_dir / RUN_FILE)
        if not problem:
            found.append((_relative(run_dir, root), info))
    return found


def sweep_manifests(root):
    """[(path relative to root, sweep.json dict)] of every readable sweep manifest under `root`, sorted
    by path (`load_results` lists an unreadable one among its exclusions)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        return []
    found = []
    for manifest in _walk(root)[1]:
        data = _read_manifest(manifest)
        if data is not None:
            found.append((_relative(manifest, root), data))
    return found


def _read_manifest(path):
    """A sweep manifest's dict, or None when it is unreadable or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_info(path):
    """(run.json dict, None) or (None, reason)."""
    try:
        info = json.loads(path.read_text())
    except OSError as error:
        return None, f"{RUN_FILE} unreadable: {error.strerror or error}"
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"{RUN_FILE} is not valid JSON ({_short(error)})"
    return rundir.validate_info(info)


@dataclasses.dataclass
class _Metrics:
    evals: list = dataclasses.field(default_factory=list)        # [(env_step, return_mean)]
    speeds: list = dataclasses.field(default_factory=list)       # train lines' env_steps_per_s
    loop_speeds: list = dataclasses.field(default_factory=list)  # train lines' interval_env_steps_per_s
    belief: dict = dataclasses.field(default_factory=dict)       # the last eval line's scalar belief/*

    @property
    def speed_at_end(self) -> float | None:
        """The last train line's env_steps_per_s."""
        return self.speeds[-1] if self.speeds else None


def _read_metrics(path, up_to=None, partial_tail=False):
    """(_Metrics, None) or (None, reason); lines past env step `up_to` are ignored, and with
    `partial_tail` so is a last line that lacks its newline."""
    try:
        text = path.read_text()
        lines = text.splitlines()
        if partial_tail and text and not text.endswith("\n"):
            lines = lines[:-1]
    except FileNotFoundError:
        return None, f"{METRICS_FILE} missing"
    except (OSError, UnicodeDecodeError) as error:
        return None, f"{METRICS_FILE} unreadable: {_short(error)}"
    found = _Metrics()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{METRICS_FILE} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            return None, f"{where}: corrupt JSON ({_short(error)})"
        if not isinstance(entry, dict):
            return None, f"{where}: not a JSON object"
        step = entry.get("env_step")
        if up_to is not None and isinstance(step, (int, float)) and step > up_to:
            continue
        if entry.get("kind") == "eval":
            ret = _number(entry.get("return_mean"))
            if not isinstance(step, int) or isinstance(step, bool) or ret is None:
                return None, f"{where}: eval line needs an integer env_step and a finite return_mean"
            if found.evals and step <= found.evals[-1][0]:
                return None, f"{where}: eval env_step {step} does not increase (previous {found.evals[-1][0]})"
            found.evals.append((step, ret))
            found.belief = {key: _number(value) for key, value in entry.items()
                            if key.startswith("belief/") and _number(value) is not None}
        elif entry.get("kind") == "train":
            for key, kept in (("env_steps_per_s", found.speeds), ("interval_env_steps_per_s", found.loop_speeds)):
                speed = _number(entry.get(key))
                if speed is not None and speed > 0:
                    kept.append(speed)
    return found, None


def _walk(root):
    """(run directories, sweep manifests) under root, sorted. Run directories are not entered:
    their checkpoint/ may hold thousands of replay files."""
    run_dirs, manifests = [], []
    for directory, subdirs, files in os.walk(root):
        if RUN_FILE in files:
            run_dirs.append(pathlib.Path(directory))
            subdirs.clear()
        elif MANIFEST_FILE in files:
            manifests.append(pathlib.Path(directory) / MANIFEST_FILE)
        subdirs.sort()
    return sorted(run_dirs), sorted(manifests)


def _manifest_exclusions(root, manifests, seen_dirs):
    """Runs a sweep manifest lists whose directory holds no run.json."""
    exclusions = []
    for manifest in manifests:
        data = _read_manifest(manifest)
        if data is None:
            exclusions.append(Exclusion(_relative(manifest, root), "invalid",
                                        f"sweep manifest {MANIFEST_FILE} is unreadable"))
            continue
        runs = data.get("runs", [])
        for run in runs if isinstance(runs, list) else []:
            if not isinstance(run, dict) or not run.get("run_dir"):
                continue
            run_dir = pathlib.Path(run["run_dir"])
            run_dir = run_dir if run_dir.is_absolute() else manifest.parent / run_dir
            if run_dir.resolve() in seen_dirs:
                continue
            seen_dirs.add(run_dir.resolve())
            status = run.get("status", "pending")
            detail = f" (exit code {run['exit_code']})" if run.get("exit_code") is not None else ""
            kind = "failed" if status == "failed" else "not started" if status == "pending" else "incomplete"
            exclusions.append(Exclusion(
                _relative(run_dir, root), kind,
                f"sweep status '{status}'{detail}, no {RUN_FILE} written"
                + (f": {run['error']}" if run.get("error") else ""),
                method=run.get("method"), task=run.get("task"), seed=run.get("seed")))
    return exclusions


def _drop_duplicates(records):
    """Keep the first run per key (path order); the same cell twice would double-count a seed."""
    kept, duplicates, first = [], [], {}
    for record in sorted(records, key=lambda r: r.path):
        if record.key in first:
            duplicates.append(Exclusion(
                record.path, "excluded", f"duplicate of {first[record.key]} (same method, suite, "
                "task, context length and seed)", record.method, record.task, record.seed))
        else:
            first[record.key] = record.path
            kept.append(record)
    return kept, duplicates


def _sortable(value):
    return -1.0 if value is None else value


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _int_or_none(value):
    number = _number(value)
    return None if number is None else int(number)


def _relative(path, root):
    try:
        return str(pathlib.Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _short(error):
    return str(error).splitlines()[0][:200]
