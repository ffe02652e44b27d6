"""`python -m harness.bench e2e --concurrent N ...`: N runs sharing one device, aggregate throughput.

For each configuration of the e2e table and each N, N copies of its measurement start together as
separate processes (`python -m harness.bench e2e --json --no-eval` for that one configuration, seeds
seed, seed + 1, ..., the device the parent was given), each with its own CUDA context as N runs
placed on one GPU by `harness.sweep --runs-per-gpu N` would have. Each copy builds, prefills and
warms up alone, then waits at a barrier (a file per ready copy in a shared directory, and a `go`
file the parent writes once all are ready), so their measured phases begin together. The copies'
env steps/s are summed; `common window` is the share of the longest measured phase during which
all N were measuring (near 100%: the sum is the rate of N runs in parallel; the faster copies
finishing early leave the last ones a less loaded device). Copies are stopped (SIGTERM, then
SIGKILL) when the parent is interrupted or one fails, and die with the parent if it is killed.
"""
import json
import os
import pathlib
import signal
import sys
import time

from harness import executors

POLL_S = 0.005


class CopyFailed(RuntimeError):
    """A copy exited without a result; the message is one line naming it and its last output."""


def wait_at_barrier(directory, seed):
    """In a copy: say ready, then wait for the parent's `go`."""
    directory = pathlib.Path(directory)
    (directory / f"ready.{seed}").touch()
    while not (directory / "go").exists():
        time.sleep(POLL_S)


def report(args, argv_for_copy, configs, results, workdir):
    """Run every configuration's copies for each N in args.concurrent and print the table."""
    print(f"\nN concurrent copies of each configuration on one device (N = {' '.join(map(str, args.concurrent))}), "
          f"separate processes, seeds {configs[0].seed} to {configs[0].seed + max(args.concurrent) - 1}; each "
          f"copy's {args.env_steps} measured env steps start together, after every copy's prefill and warm-up\n")
    header = ["experiment", "task", "compile", "T", "N", "aggregate env steps/s", "per-run env steps/s",
              "min", "max", "common window", "speedup vs N=1"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|" + "---:|" * (len(header) - 3), flush=True)
    best = []
    for i, (cfg, single) in enumerate(zip(configs, results)):
        aggregates = {}
        for n in args.concurrent:
            copies = run_copies(args, argv_for_copy, cfg, n, workdir / f"concurrent{i}_{n}")
            rates = [copy["env_steps_per_s"] for copy in copies]
            aggregates[n] = sum(rates)
            base = aggregates.get(1, single["env_steps_per_s"])
            cells = [cfg.label, cfg.task, cfg.mode, str(cfg.length), str(n), f"{aggregates[n]:.1f}",
                     f"{aggregates[n] / n:.1f}", f"{min(rates):.1f}", f"{max(rates):.1f}",
                     f"{100 * common_window(copies):.0f}%", f"{aggregates[n] / base:.2f}x"]
            print("| " + " | ".join(cells) + " |", flush=True)
        n_best = max(aggregates, key=aggregates.get)
        best.append(f"{cfg.label} {cfg.task} {cfg.mode} T={cfg.length}: N={n_best} "
                    f"({aggregates[n_best]:.1f} env steps/s)")
    if 1 not in args.concurrent:
        print("\nspeedup relative to the single run of the first table (N=1 was not run as a copy)")
    print("\nbest N: " + "; ".join(best), flush=True)


def common_window(copies):
    """Share of the longest measured phase during which every copy was measuring."""
    start = max(copy["started_at"] for copy in copies)
    end = min(copy["ended_at"] for copy in copies)
    longest = max(copy["ended_at"] - copy["started_at"] for copy in copies)
    return max(0.0, end - start) / longest if longest > 0 else 1.0


def run_copies(args, argv_for_copy, cfg, n, workdir):
    """Start n copies of `cfg`'s measurement, release them together, return their results."""
    workdir.mkdir(parents=True)
    barrier = workdir / "barrier"
    barrier.mkdir()
    repo = str(pathlib.Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p),
           "TMPDIR": str(workdir)}  # each copy's throwaway run directory stays inside ours
    jobs = [executors.Job(key=str(k), log_path=str(workdir / f"copy{k}.log"), env=env, cwd=os.getcwd(),
                          command=(sys.executable, "-m", "harness.bench", "e2e",
                                   *argv_for_copy(args, cfg, cfg.seed + k, barrier)))
            for k in range(n)]
    processes = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        processes = [executors.start_process(job) for job in jobs]
        while len(list(barrier.glob("ready.*"))) < n:
            _check_running(processes, jobs)
            time.sleep(POLL_S)
        (barrier / "go").touch()
        for process in processes:
            process.wait()
        return [_result(process, job) for process, job in zip(processes, jobs)]
    finally:
        executors.stop_processes([p for p in processes if p.poll() is None], grace_s=5.0)
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _check_running(processes, jobs):
    for process, job in zip(processes, jobs):
        if process.poll() is not None:
            raise CopyFailed(f"concurrent copy {job.key} exited with status {process.returncode} before "
                             f"its measured phase: {_last_line(job.log_path)}")


def _result(process, job):
    for line in reversed(pathlib.Path(job.log_path).read_text(errors="replace").splitlines()):
        if process.returncode == 0 and line.startswith("{"):
            return json.loads(line)
    raise CopyFailed(f"concurrent copy {job.key} exited with status {process.returncode} "
                     f"and no result: {_last_line(job.log_path)}")


def _last_line(path):
    lines = [line for line in pathlib.Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"
