"""How a sweep runs its plan: the manifest `sweep.json`, scheduling on an executor, retries.

Runs whose run.json says 'done' are skipped; a run directory that exists is continued with
--resume, unless its run.json records a checkpoint that is not there (records copied from another
machine without their checkpoint/): that run starts again with --overwrite. A failed run (exit 1 or
killed) is retried up to `Sweep.retries` times from its last checkpoint, then reported; a user error
(exit 2) is not retried. An attempt lost with its worker (the executor reports its own failure: a
Ray worker or node died) is no fault of the run: it is retried, from the checkpoint the lost attempt
left, until the run has had `max_attempts` attempts in this invocation.

`<results_dir>/<name>/sweep.json` (rewritten atomically) records the grid and every run's status
(pending, running, done, failed, interrupted), attempts (over all invocations), exit code, error,
last_failure and log file under `logs/`, and `gpu_seconds_held`: the GPU time all invocations held
(Manifest.record_gpu_time); it is rewritten at least every `manifest_every_s` while runs go on, so
a sweep killed without notice (its machine taken back) has recorded the GPU time it held until a
minute before. A run's error is why its last attempt ended: the signal that killed it ('killed by
SIGKILL'), else the executor's own failure, else the last line of its log; last_failure keeps the
latest such reason after a retry succeeded.
"""
import collections
import json
import os
import pathlib
import signal
import sys
import time

from harness import config
from harness import executors as executors_lib
from harness import rundir
from harness.cli import USER_ERROR
from harness.sweep_plan import Sweep

MANIFEST = "sweep.json"
PENDING = "pending"  # the other statuses of a manifest entry are run.json's (harness.rundir)
MAX_ATTEMPTS = 3  # attempts of one run per invocation when its workers keep dying
MANIFEST_EVERY_S = 60.0  # seconds between rewrites of sweep.json while nothing else changes it


class Manifest:
    """`<sweep dir>/sweep.json`: the grid and each run's state; every save is atomic."""

    def __init__(self, sweep: Sweep, runs: list[dict], executor: str):
        self.path = sweep.directory / MANIFEST
        self.sweep_dir = sweep.directory
        old_runs, held = self._load_previous()
        for run in runs:  # keep the history of earlier invocations
            run["attempts"] = old_runs.get(run["id"], {}).get("attempts", 0)
            run["last_failure"] = old_runs.get(run["id"], {}).get("last_failure")
            run["status"] = rundir.DONE if self.run_status(run) == rundir.DONE else PENDING
        self.data = {"name": sweep.name, "grid": sweep.describe(), "executor": executor,
                     "started_at": rundir.now_iso(), "runs": runs}
        self.runs = {run["id"]: run for run in runs}
        self.earlier_gpu_seconds_held = held
        self.saved_at = None  # time.monotonic() of the last save
        if held:
            self.data["gpu_seconds_held"] = held

    def _load_previous(self):
        """({run id: entry}, gpu_seconds_held) of the manifest an earlier invocation left; empty, 0.0
        where there is none or it is unreadable."""
        try:
            data = json.loads(self.path.read_text())
            runs = {r["id"]: r for r in data["runs"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}, 0.0
        return runs, rundir.recorded_seconds(data.get("gpu_seconds_held")) or 0.0

    def record_gpu_time(self, executor) -> None:
        """`gpu_seconds_held`: the GPU time of every invocation of this sweep so far, each GPU counted
        while it ran at least one of the sweep's runs (local executor with --gpus; absent otherwise).
        Runs sharing a GPU count once here, unlike the sum of their run.json `gpu_seconds`."""
        held = executor.gpu_seconds_held()
        if held is not None:
            self.data["gpu_seconds_held"] = round(self.earlier_gpu_seconds_held + held, 3)

    def run_dir(self, run) -> pathlib.Path:
        return self.sweep_dir / run["run_dir"]

    def run_status(self, run):
        """The status the run's own run.json records, None without a readable one."""
        return rundir.RunDirectory(self.run_dir(run)).status()

    def counts(self):
        return collections.Counter(run["status"] for run in self.runs.values())

    def save(self, executor=None):
        """Write sweep.json; with the executor, first bring `gpu_seconds_held` up to date."""
        if executor is not None:
            self.record_gpu_time(executor)
        self.data["updated_at"] = rundir.now_iso()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")
        self.saved_at = time.monotonic()


def run_sweep(sweep: Sweep, manifest: Manifest, executor: executors_lib.Executor, parallelism: int,
              grace_s=10.0, log=print, run_args=(), max_attempts=MAX_ATTEMPTS,
              manifest_every_s=MANIFEST_EVERY_S) -> int:
    """Run every pending cell; returns the exit status (0 all done, 1 failures, 130 interrupted).
    run_args: options given to every `harness.run` (e.g. ['--device', 'cuda']); max_attempts: the
    most attempts of one run in this invocation when they are lost with their worker;
    manifest_every_s: the longest sweep.json goes unwritten while runs go on."""
    queue = collections.deque(key for key, run in manifest.runs.items() if run["status"] == PENDING)
    tries, failures, started, durations = collections.Counter(), collections.Counter(), {}, []
    progress = Progress(sweep.name, manifest, parallelism, log)
    manifest.save(executor)
    changed = True
    try:
        while queue or executor.running():
            while queue and executor.capacity() > 0:
                key = queue.popleft()
                run = manifest.runs[key]
                tries[key] += 1
                run.update(status=rundir.RUNNING, attempts=run["attempts"] + 1, exit_code=None)
                job = _job(sweep, manifest, run, run_args)
                if "--overwrite" in job.command:
                    log(f"[{sweep.name}] starting {run['id']} again: its run.json records a checkpoint "
                        "that is not in its directory")
                executor.submit(job)
                started[key] = time.monotonic()
                manifest.save(executor)
            progress.show(force=changed)  # after refilling, so 'running' counts the new runs
            changed = False
            if time.monotonic() - manifest.saved_at >= manifest_every_s:
                manifest.save(executor)  # gpu_seconds_held up to now
            for finished in executor.wait(timeout_s=1.0):
                run = manifest.runs[finished.key]
                durations.append(time.monotonic() - started.pop(finished.key))
                verdict = _settle(manifest, run, finished)
                if verdict == "retry":
                    failures[finished.key] += 1
                if verdict == "lost" and tries[finished.key] < max_attempts or \
                        verdict == "retry" and failures[finished.key] <= sweep.retries:
                    log(f"[{sweep.name}] retrying {run['id']} ({run['error']})")
                    run["status"] = PENDING
                    queue.append(finished.key)
                elif run["status"] == rundir.FAILED:
                    log(f"[{sweep.name}] FAILED {run['id']}: {run['error']} (log: {run['log']})")
                manifest.save(executor)
                progress.durations = durations
                changed = True
    except KeyboardInterrupt:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        try:
            stopped = [key for key, run in manifest.runs.items() if run["status"] == rundir.RUNNING]
            log(f"[{sweep.name}] interrupted: stopping {len(stopped)} run(s)...")
            executor.shutdown(grace_s)
            for key in stopped:
                manifest.runs[key].update(status=rundir.INTERRUPTED, error="interrupted by the sweep")
            manifest.save(executor)
        finally:
            signal.signal(signal.SIGINT, previous)
        log(f"[{sweep.name}] interrupted; run the same command again to resume")
        return 130
    executor.shutdown(grace_s)
    manifest.save(executor)
    progress.show(force=True)
    counts = manifest.counts()
    log(f"[{sweep.name}] finished: {counts[rundir.DONE]} done, {counts[rundir.FAILED]} failed; "
        f"manifest {manifest.path}")
    return 1 if counts[rundir.FAILED] else 0


def _settle(manifest, run, finished):
    """Record a finished attempt: 'done', 'failed' (final), 'retry' (the run failed) or 'lost' (the
    executor lost it with its worker)."""
    run["exit_code"] = finished.exit_code
    status = manifest.run_status(run)
    if finished.exit_code == 0 and status == rundir.DONE:
        run.update(status=rundir.DONE, error=None)
        return "done"
    run["status"] = rundir.FAILED
    run["error"] = run["last_failure"] = failure_reason(finished, status, manifest.sweep_dir / run["log"])
    if finished.error is not None:
        return "lost"
    return "failed" if finished.exit_code == USER_ERROR else "retry"


def failure_reason(finished, run_status, log_path) -> str:
    """One line: why an attempt did not end with a done run."""
    if finished.error:
        return finished.error
    killed = executors_lib.signal_reason(finished.exit_code)
    if killed:  # the log's last line is whatever the run printed before the signal, not the cause
        return killed
    if finished.exit_code == 0:
        return f"exit status 0 but {rundir.RUN_FILE} status is {run_status!r}"
    return _last_line(log_path) or f"exit status {finished.exit_code}"


def _job(sweep, manifest, run, run_args=()):
    run_dir = manifest.run_dir(run).resolve()
    command = [sys.executable, "-m", "harness.run", "--no-progress", "--out", str(run_dir), *run_args]
    command += [arg for path in run["gin_files"] for arg in ("--gin", str(_resolve(path)))]
    command += [arg for binding in run["bindings"] for arg in ("--bind", binding)]
    if run_dir.is_dir() and any(run_dir.iterdir()):
        command.append("--overwrite" if rundir.RunDirectory(run_dir).lost_checkpoint() else "--resume")
    threads = str(max(1, int(sweep.num_cpus)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}  # MUJOCO_GL: envs sets its default
    return executors_lib.Job(run["id"], tuple(command), str((manifest.sweep_dir / run["log"]).resolve()),
                             env, str(config.REPO_ROOT), lock_path=str(run_dir / rundir.LOCK_FILE))


class Progress:
    """Lines like `[tiny] 3/8 done, 2 running, 0 failed, 3 pending | 1m05s elapsed, ETA 2m10s`."""

    def __init__(self, name, manifest, parallelism, log, every_s=30.0):
        self.name, self.manifest, self.parallelism, self.log = name, manifest, max(1, parallelism), log
        self.every_s, self.start, self.last, self.durations = every_s, time.monotonic(), 0.0, []

    def show(self, force=False):
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        c = self.manifest.counts()
        eta = "?"
        if self.durations:
            remaining = c[PENDING] + c[rundir.INTERRUPTED] + 0.5 * c[rundir.RUNNING]
            eta = _duration(sum(self.durations) / len(self.durations) * remaining / self.parallelism)
        self.log(f"[{self.name}] {c[rundir.DONE]}/{len(self.manifest.runs)} done, {c[rundir.RUNNING]} running, "
                 f"{c[rundir.FAILED]} failed, {c[PENDING]} pending | {_duration(now - self.start)} elapsed, "
                 f"ETA {eta}")


def lock_sweep_dir(directory):
    """An exclusive lock on `<directory>/.lock` (an open file; closing it releases), or None if
    another process holds it: two sweeps over one directory would run the same runs twice."""
    import fcntl
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _resolve(path):
    path = pathlib.Path(path)
    return path.resolve() if path.exists() else path  # harness.run also searches the repository root


def _last_line(path):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else None


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
