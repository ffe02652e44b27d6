"""Run a grid of experiments, each one `python -m harness.run`, on this machine or a Ray cluster.

    python -m harness.sweep --gin gin/sweeps/tiny.gin --executor local --workers 2
    python -m harness.sweep --gin gin/sweeps/tiny.gin --gpus 0,1 --runs-per-gpu 2
    python -m harness.sweep --gin gin/sweeps/tiny.gin --executor ray --address auto
    python -m harness.sweep --gin gin/sweeps/tiny.gin --executor ray --address auto --gpus-per-run 0.25 \
        --storage /shared/results
    python -m harness.sweep --gin gin/sweeps/leaderboard_context.gin --gpus 0 --runs-per-gpu 8 --device cuda
    python -m harness.sweep --gin gin/sweeps/leaderboard_noisy100k.gin --gpus 0 --runs-per-gpu 8 --mps --device cuda

The grid is methods x tasks x seeds x context lengths x `Sweep.grid`'s bindings
(harness/sweep_plan.py); each cell is one `python -m harness.run` whose run directory comes from
`harness.config.describe_run`. Finished runs are skipped, failed ones retried and everything is
recorded in `<results_dir>/<name>/sweep.json` (harness/sweep_runner.py). Ctrl-C (or SIGTERM) stops
every run (SIGTERM, then SIGKILL after a grace period), marks them interrupted and exits 130;
running the same command again resumes them (on another machine, a run whose checkpoint was not
copied along starts again). A run directory whose config.gin differs from the config the sweep
would give it now (a default, overlay or binding changed since; `sweep_plan.config_drift`) stops
the sweep before anything starts, exit 2; --dry-run lists such runs as `changed`, so that old
records never count as the new config's. --device and --no-tf32 are passed to every run. --mps (local, with
--gpus) starts a CUDA MPS daemon for the sweep's lifetime so that the kernels of the runs sharing a
GPU overlap (harness/mps.py; ~2.9x the throughput of 8 runs without it, docs/benchmarks.md), and
prints the CUDA_MPS_* variables with which a second sweep, started without --mps, shares it.

With Ray (docs/cluster.md), each run is one task reserving Sweep.num_cpus CPUs and --gpus-per-run
GPUs (default Sweep.num_gpus; 0.25: four runs share a GPU); run.json records the node and GPU ids
it got. A run lost with its worker or node is retried from its last checkpoint, up to
--max-attempts attempts; --storage is the results root every node sees at the same path.
Exit status: 0 all done, 1 some runs failed, 2 user error, 130 interrupted.
"""
import os
import signal
import sys

from harness import config
from harness import executors as executors_lib
from harness import mps
from harness import rundir
from harness import sweep_runner
from harness.cli import CliParser, fail, gpu_fraction, gpu_list, non_negative_float, positive_int
from harness.device import device_arg
from harness.sweep_plan import config_drift, load_sweep, plan
from harness.sweep_runner import Manifest, lock_sweep_dir, run_sweep


def parse_args(argv):
    parser = CliParser(prog="python -m harness.sweep", doc=__doc__)
    parser.add_argument("--gin", action="append", required=True, metavar="FILE",
                        help="sweep gin file, e.g. gin/sweeps/tiny.gin (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING",
                        help="binding such as \"Sweep.seeds=[0, 1]\" (repeatable)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: processes on this machine (default); ray: one Ray task per run")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="local: runs at once (default: CPUs / Sweep.num_cpus, or GPUs x --runs-per-gpu); "
                             "ray: most runs in flight (default: all), and without --address the local Ray "
                             "instance gets N x Sweep.num_cpus CPUs")
    parser.add_argument("--gpus", type=gpu_list, metavar="0,1,...",
                        help="local: GPUs to run on (as CUDA_VISIBLE_DEVICES names them); each run sees one, "
                             "set in its CUDA_VISIBLE_DEVICES (ray: use Sweep.num_gpus instead)")
    parser.add_argument("--runs-per-gpu", type=positive_int, metavar="N",
                        help="local, with --gpus: runs sharing one GPU at a time (default 1)")
    parser.add_argument("--gpus-per-run", type=gpu_fraction, metavar="F",
                        help="ray: GPUs each run reserves, a fraction in (0, 1] or a whole number "
                             "(default: Sweep.num_gpus); 0.25 puts four runs on one GPU")
    parser.add_argument("--storage", metavar="DIR",
                        help="results root (in place of Sweep.results_dir): a path every Ray node sees, "
                             "e.g. a shared filesystem; run directories, checkpoints and sweep.json live there")
    parser.add_argument("--max-attempts", type=positive_int, default=sweep_runner.MAX_ATTEMPTS, metavar="N",
                        help="most attempts of one run when they are lost with their worker or node, each "
                             f"resuming from the last checkpoint (default {sweep_runner.MAX_ATTEMPTS})")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster to join ('auto' or host:port); "
                                                          "none starts a local Ray instance")
    parser.add_argument("--grace", type=non_negative_float, default=10.0, metavar="SECONDS",
                        help="seconds between SIGTERM and SIGKILL when stopping runs (default 10)")
    parser.add_argument("--device", type=device_arg, metavar="auto|cpu|cuda|cuda:N",
                        help="--device of every run (default: harness.run's, auto); with --gpus each run "
                             "sees its one GPU as cuda:0")
    parser.add_argument("--no-tf32", action="store_true", help="--no-tf32 for every run (full float32 on CUDA)")
    parser.add_argument("--mps", action="store_true",
                        help="local, with --gpus: run a CUDA MPS daemon while the sweep runs, so that the "
                             "kernels of runs sharing a GPU overlap (needs nvidia-cuda-mps-control)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their state, run nothing")
    return parser.parse_args(argv)


def storage_binding(args) -> list[str]:
    """--storage DIR as the binding of Sweep.results_dir (absolute: every node resolves it alike)."""
    return [f"Sweep.results_dir = {os.path.abspath(args.storage)!r}"] if args.storage else []


def run_args(args) -> list[str]:
    """The options of this command line that every `harness.run` receives."""
    return (["--device", args.device] if args.device else []) + (["--no-tf32"] if args.no_tf32 else [])


def check_executor_args(args):
    if args.workers is not None and args.workers < 1:
        raise executors_lib.ExecutorError(f"--workers must be at least 1, got {args.workers}")
    if args.executor == "local" and args.address:
        raise executors_lib.ExecutorError("--address needs --executor ray")
    if args.executor == "ray" and args.gpus:
        raise executors_lib.ExecutorError("--gpus is for --executor local; Ray places runs on GPUs by Sweep.num_gpus")
    if args.runs_per_gpu is not None and not args.gpus:
        raise executors_lib.ExecutorError("--runs-per-gpu needs --gpus")
    if args.gpus_per_run is not None and args.executor != "ray":
        raise executors_lib.ExecutorError("--gpus-per-run needs --executor ray (locally: --gpus and --runs-per-gpu)")
    if args.mps and not args.gpus:
        raise executors_lib.ExecutorError("--mps needs --executor local and --gpus (on Ray, run one MPS daemon "
                                          "per node yourself: docs/cluster.md)")
    if args.storage is not None and os.path.exists(args.storage) and not os.path.isdir(args.storage):
        raise executors_lib.ExecutorError(f"--storage {args.storage} is not a directory")


def make_executor(args, sweep, env=None):
    """(executor, parallelism) for the command-line options; env: variables for every local run."""
    check_executor_args(args)
    if args.executor == "local":
        if args.gpus:
            executor = executors_lib.LocalExecutor(args.workers, args.gpus, args.runs_per_gpu or 1, env=env)
            return executor, executor.workers
        workers = args.workers or max(1, int((os.cpu_count() or 1) // sweep.num_cpus))
        return executors_lib.LocalExecutor(workers), workers
    local_cpus = args.workers * sweep.num_cpus if args.workers else None
    num_gpus = sweep.num_gpus if args.gpus_per_run is None else args.gpus_per_run
    executor = executors_lib.RayExecutor(args.address, sweep.num_cpus, num_gpus, local_cpus,
                                         max_in_flight=args.workers, grace_s=args.grace)
    cpus = executor.cluster_cpus()
    return executor, max(1, args.workers or int(cpus // sweep.num_cpus))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_executor_args(args)
        sweep = load_sweep(args.gin, args.bind + storage_binding(args))
        manifest = Manifest(sweep, plan(sweep), args.executor)
    except (config.ConfigError, executors_lib.ExecutorError) as error:
        return fail(error)
    try:
        drift = {key: why for key, run in manifest.runs.items()
                 if (why := config_drift(run, manifest.run_dir(run)))}
    except config.ConfigError as error:
        return fail(error)
    if args.dry_run:
        for key, run in manifest.runs.items():
            directory = rundir.RunDirectory(manifest.run_dir(run))
            state = "changed" if key in drift else run["status"] if run["status"] == rundir.DONE \
                else "restart" if directory.lost_checkpoint() else "resume" if directory.path.is_dir() else "new"
            print(f"{state:<7} {manifest.run_dir(run)}" + (f"  ({drift[key]})" if key in drift else ""))
        return 0
    if drift:
        key = next(iter(drift))
        return fail(f"{len(drift)} run(s) in {sweep.directory} were recorded with another config than this "
                    f"sweep gives them now, e.g. {key}: {drift[key]}; move those run directories out (or "
                    "name the change as a variant) and run again (--dry-run lists them as 'changed')")
    lock = lock_sweep_dir(sweep.directory)
    if lock is None:
        return fail(f"another sweep is running in {sweep.directory}")
    on_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    daemon = mps.MpsDaemon()
    try:
        if args.mps:
            daemon.start()
            print(f"[{sweep.name}] MPS daemon: {mps.share_hint(daemon.env)}", file=sys.stderr, flush=True)
        executor, parallelism = make_executor(args, sweep, env=daemon.env)
        manifest.data["run_args"] = run_args(args)
        manifest.data["resources"] = {"cpus_per_run": sweep.num_cpus, "max_attempts": args.max_attempts,
                                      "gpus_per_run": sweep.num_gpus if args.gpus_per_run is None
                                      else args.gpus_per_run, "mps": args.mps}
        return run_sweep(sweep, manifest, executor, parallelism, grace_s=args.grace,
                         log=lambda line: print(line, file=sys.stderr, flush=True), run_args=run_args(args),
                         max_attempts=args.max_attempts)
    except (executors_lib.ExecutorError, mps.MpsError) as error:
        return fail(error)
    finally:
        daemon.stop()
        signal.signal(signal.SIGTERM, on_term)
        lock.close()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
