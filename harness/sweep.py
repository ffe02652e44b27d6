"""Run a grid of experiments: `python -m harness.sweep --gin gin/sweeps/<name>.gin [options]`.

    --executor local|ray   local: a pool of --workers processes; ray: one Ray task per run
    --workers N            local pool size (default: CPUs / Sweep.num_cpus); for ray, the most runs
                           in flight at once (default: all) and, without --address, the local instance
                           gets N * Sweep.num_cpus CPUs
    --address ADDR         Ray cluster to join ('auto' or host:port); none starts a local instance
    --bind 'Sweep.x=...'   override the sweep file;  --dry-run  print the plan only

The grid is methods x tasks x seeds x context lengths. Every cell is an ordinary
`python -m harness.run --gin <method> --gin <overlays...> --bind ... --out <run dir>` whose directory
comes from `harness.config.describe_run`. Runs whose run.json says 'done' are skipped; a run
directory that exists is continued with --resume; a failed run (exit 1 or killed) is retried up to
`Sweep.retries` times from its last checkpoint, then reported; a user error (exit 2) is not retried.

`<results_dir>/<name>/sweep.json` (rewritten atomically) records the grid and every run's status
(pending, running, done, failed, interrupted), attempts, exit code, error and log file under
`logs/`. Ctrl-C (or SIGTERM) stops every run (SIGTERM, then SIGKILL after a grace period), marks
them interrupted and exits 130; running the same command again resumes them.
Exit status: 0 all done, 1 some runs failed, 2 user error, 130 interrupted.
"""
import collections
import itertools
import json
import os
import pathlib
import signal
import sys
import time

import gin

from harness import config
from harness import executors as executors_lib
from harness.config import CliParser
from harness.rundir import atomic_write_text, now_iso

MANIFEST = "sweep.json"
USER_ERROR = 2  # harness.run's exit status for a bad configuration: retrying cannot help


def _registered_once(cls):
    """`python -m harness.sweep` executes this file as __main__ and then imports harness.sweep;
    only the imported module registers with gin, so `Sweep.*` bindings stay unambiguous."""
    return cls if __name__ == "__main__" else gin.configurable(cls)


@_registered_once
class Sweep:
    """A grid of runs.

    Args:
      name: sweep name; also bound as `Experiment.name`, so runs land in `<results_dir>/<name>/...`.
      methods: gin files, one per method, each setting Experiment.method/suite/world_model.
      tasks: DeepMind Control tasks, e.g. ['cartpole_swingup'].
      seeds: integers.
      context_lengths: training sequence lengths T.
      overlays: gin files applied after each method's file (e.g. 'gin/quick.gin').
      bindings: extra gin bindings for every run, applied after the grid's own.
      results_dir: root of the run directories.
      retries: extra attempts for a run that fails (exit status 1 or killed).
      num_cpus, num_gpus: resources of one run (Ray reserves them; num_cpus also sets
        OMP_NUM_THREADS for the run).
    """

    def __init__(self, name=gin.REQUIRED, methods=gin.REQUIRED, tasks=gin.REQUIRED, seeds=(0,),
                 context_lengths=(32,), overlays=(), bindings=(), results_dir="results", retries=1,
                 num_cpus=1, num_gpus=0):
        self.name, self.results_dir = str(name), pathlib.Path(results_dir)
        self.methods, self.tasks = list(methods), list(tasks)
        self.seeds, self.context_lengths = [int(s) for s in seeds], [int(t) for t in context_lengths]
        self.overlays, self.bindings = list(overlays), list(bindings)
        self.retries, self.num_cpus, self.num_gpus = int(retries), float(num_cpus), float(num_gpus)
        for field in ("methods", "tasks", "seeds", "context_lengths"):
            if not getattr(self, field):
                raise config.ConfigError(f"Sweep.{field} is empty")
        if self.retries < 0 or self.num_cpus <= 0 or self.num_gpus < 0:
            raise config.ConfigError("Sweep needs retries >= 0, num_cpus > 0 and num_gpus >= 0")

    @property
    def directory(self) -> pathlib.Path:
        return self.results_dir / self.name

    def grid(self) -> dict:
        return {"methods": self.methods, "tasks": self.tasks, "seeds": self.seeds,
                "context_lengths": self.context_lengths, "overlays": self.overlays,
                "bindings": self.bindings}


def load_sweep(gin_files, bindings=()) -> Sweep:
    """Parse the sweep's own gin and build the Sweep; gin is cleared again afterwards."""
    try:
        config.parse(gin_files, list(bindings))
        try:
            return Sweep()
        except config.ConfigError:
            raise
        except Exception as error:  # a missing required parameter, a wrong type
            raise config.ConfigError(f"invalid sweep configuration: {error}") from error
    finally:
        gin.clear_config()


def plan(sweep: Sweep) -> list[dict]:
    """One manifest entry per grid cell, with the run directory harness.run will use."""
    runs = []
    for method, task, seed, ctx in itertools.product(sweep.methods, sweep.tasks, sweep.seeds,
                                                     sweep.context_lengths):
        bindings = [f"Experiment.name = '{sweep.name}'", f"Experiment.task = '{task}'",
                    f"Experiment.seed = {seed}", f"Experiment.context_length = {ctx}", *sweep.bindings]
        gin_files = [method, *sweep.overlays]
        spec, run_dir = config.describe_run(gin_files, bindings, root=sweep.results_dir)
        key = run_dir.relative_to(sweep.directory).as_posix() if run_dir.is_relative_to(sweep.directory) \
            else run_dir.as_posix()
        runs.append({"id": key, "run_dir": key, "gin_files": gin_files, "bindings": bindings,
                     "method": spec["method"], "suite": spec["suite"], "task": task, "seed": seed,
                     "context_length": ctx, "status": "pending", "attempts": 0, "exit_code": None,
                     "error": None, "log": f"logs/{key.replace('/', '__')}.log"})
    gin.clear_config()
    duplicates = [k for k, n in collections.Counter(r["id"] for r in runs).items() if n > 1]
    if duplicates:
        raise config.ConfigError(f"two grid cells share the run directory {duplicates[0]} "
                                 "(do two method files set the same Experiment.method?)")
    return runs


class Manifest:
    """`<sweep dir>/sweep.json`: the grid and each run's state; every save is atomic."""

    def __init__(self, sweep: Sweep, runs: list[dict], executor: str):
        self.path = sweep.directory / MANIFEST
        self.sweep_dir = sweep.directory
        old = self._load_previous()
        for run in runs:  # keep the history of earlier invocations
            run["attempts"] = old.get(run["id"], {}).get("attempts", 0)
            run["status"] = "done" if self.run_status(run) == "done" else "pending"
        self.data = {"name": sweep.name, "grid": sweep.grid(), "executor": executor,
                     "started_at": now_iso(), "runs": runs}
        self.runs = {run["id"]: run for run in runs}

    def _load_previous(self):
        try:
            return {r["id"]: r for r in json.loads(self.path.read_text())["runs"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def run_dir(self, run) -> pathlib.Path:
        return self.sweep_dir / run["run_dir"]

    def run_status(self, run):
        try:
            return json.loads((self.run_dir(run) / "run.json").read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            return None

    def counts(self):
        return collections.Counter(run["status"] for run in self.runs.values())

    def save(self):
        self.data["updated_at"] = now_iso()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")


def run_sweep(sweep: Sweep, manifest: Manifest, executor: executors_lib.Executor, parallelism: int,
              grace_s=10.0, log=print) -> int:
    """Run every pending cell; returns the exit status (0 all done, 1 failures, 130 interrupted)."""
    queue = collections.deque(key for key, run in manifest.runs.items() if run["status"] == "pending")
    tries, started, durations = collections.Counter(), {}, []
    progress = Progress(sweep.name, manifest, parallelism, log)
    manifest.save()
    changed = True
    try:
        while queue or executor.running():
            while queue and executor.capacity() > 0:
                key = queue.popleft()
                run = manifest.runs[key]
                tries[key] += 1
                run.update(status="running", attempts=run["attempts"] + 1, exit_code=None)
                executor.submit(_job(sweep, manifest, run))
                started[key] = time.monotonic()
                manifest.save()
            progress.show(force=changed)  # after refilling, so 'running' counts the new runs
            changed = False
            for finished in executor.wait(timeout_s=1.0):
                run = manifest.runs[finished.key]
                durations.append(time.monotonic() - started.pop(finished.key))
                if _settle(manifest, run, finished) == "retry" and tries[finished.key] <= sweep.retries:
                    log(f"[{sweep.name}] retrying {run['id']} ({run['error']})")
                    run["status"] = "pending"
                    queue.append(finished.key)
                elif run["status"] == "failed":
                    log(f"[{sweep.name}] FAILED {run['id']}: {run['error']} (log: {run['log']})")
                manifest.save()
                progress.durations = durations
                changed = True
    except KeyboardInterrupt:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        try:
            stopped = [key for key, run in manifest.runs.items() if run["status"] == "running"]
            log(f"[{sweep.name}] interrupted: stopping {len(stopped)} run(s)...")
            executor.shutdown(grace_s)
            for key in stopped:
                manifest.runs[key].update(status="interrupted", error="interrupted by the sweep")
            manifest.save()
        finally:
            signal.signal(signal.SIGINT, previous)
        log(f"[{sweep.name}] interrupted; run the same command again to resume")
        return 130
    executor.shutdown(grace_s)
    progress.show(force=True)
    counts = manifest.counts()
    log(f"[{sweep.name}] finished: {counts['done']} done, {counts['failed']} failed; manifest {manifest.path}")
    return 1 if counts["failed"] else 0


def _settle(manifest, run, finished):
    """Record a finished attempt: 'done', 'failed' (final) or 'retry'."""
    run["exit_code"] = finished.exit_code
    status = manifest.run_status(run)
    if finished.exit_code == 0 and status == "done":
        run.update(status="done", error=None)
        return "done"
    run["status"] = "failed"
    if finished.error:
        run["error"] = finished.error
    elif finished.exit_code == 0:
        run["error"] = f"exit status 0 but run.json status is {status!r}"
    else:
        run["error"] = _last_line(manifest.sweep_dir / run["log"]) or f"exit status {finished.exit_code}"
    return "failed" if finished.exit_code == USER_ERROR else "retry"


def _job(sweep, manifest, run):
    run_dir = manifest.run_dir(run).resolve()
    command = [sys.executable, "-m", "harness.run", "--no-progress", "--out", str(run_dir)]
    command += [arg for path in run["gin_files"] for arg in ("--gin", str(_resolve(path)))]
    command += [arg for binding in run["bindings"] for arg in ("--bind", binding)]
    if run_dir.is_dir() and any(run_dir.iterdir()):
        command.append("--resume")
    threads = str(max(1, int(sweep.num_cpus)))
    env = {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}
    return executors_lib.Job(run["id"], tuple(command), str((manifest.sweep_dir / run["log"]).resolve()),
                             env, str(config.REPO_ROOT))


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
            remaining = c["pending"] + c["interrupted"] + 0.5 * c["running"]
            eta = _duration(sum(self.durations) / len(self.durations) * remaining / self.parallelism)
        self.log(f"[{self.name}] {c['done']}/{len(self.manifest.runs)} done, {c['running']} running, "
                 f"{c['failed']} failed, {c['pending']} pending | {_duration(now - self.start)} elapsed, "
                 f"ETA {eta}")


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


def parse_args(argv):
    parser = CliParser(prog="python -m harness.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--gin", action="append", required=True, metavar="FILE", help="sweep gin file")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING",
                        help="binding such as \"Sweep.seeds=[0, 1]\" (repeatable)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, help="parallel runs (see the module docstring)")
    parser.add_argument("--address", help="Ray cluster address ('auto' or host:port)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their state, run nothing")
    return parser.parse_args(argv)


def check_executor_args(args):
    if args.workers is not None and args.workers < 1:
        raise executors_lib.ExecutorError(f"--workers must be at least 1, got {args.workers}")
    if args.executor == "local" and args.address:
        raise executors_lib.ExecutorError("--address needs --executor ray")


def make_executor(args, sweep):
    """(executor, parallelism) for the command-line options."""
    check_executor_args(args)
    if args.executor == "local":
        workers = args.workers or max(1, int((os.cpu_count() or 1) // sweep.num_cpus))
        return executors_lib.LocalExecutor(workers), workers
    local_cpus = args.workers * sweep.num_cpus if args.workers else None
    executor = executors_lib.RayExecutor(args.address, sweep.num_cpus, sweep.num_gpus, local_cpus,
                                         max_in_flight=args.workers, grace_s=args.grace)
    cpus = executor.cluster_cpus()
    return executor, max(1, args.workers or int(cpus // sweep.num_cpus))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_executor_args(args)
        sweep = load_sweep(args.gin, args.bind)
        manifest = Manifest(sweep, plan(sweep), args.executor)
    except (config.ConfigError, executors_lib.ExecutorError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.dry_run:
        for run in manifest.runs.values():
            state = run["status"] if run["status"] == "done" else \
                "resume" if manifest.run_dir(run).is_dir() else "new"
            print(f"{state:<7} {manifest.run_dir(run)}")
        return 0
    lock = lock_sweep_dir(sweep.directory)
    if lock is None:
        print(f"error: another sweep is running in {sweep.directory}", file=sys.stderr)
        return 2
    on_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        executor, parallelism = make_executor(args, sweep)
        return run_sweep(sweep, manifest, executor, parallelism, grace_s=args.grace,
                         log=lambda line: print(line, file=sys.stderr, flush=True))
    except executors_lib.ExecutorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, on_term)
        lock.close()


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


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    from harness import sweep as importable  # see _registered_once
    sys.exit(importable.main())
