"""Train and evaluate one run:

    python -m harness.run --gin gin/kalmamba_noisy.gin [--gin gin/quick.gin] [--bind 'Name.param=value']
                          [--out DIR] [--resume | --overwrite] [--device auto|cpu|cuda] [--tensorboard]

Exit status: 0 done (or already done), 1 the run failed (run.json says why), 2 a user error
(bad gin, unknown suite or task, existing run directory): then nothing is written or overwritten.
"""
import os
import shutil
import sys
import traceback

os.environ.setdefault("MUJOCO_GL", "egl")

import gin  # noqa: E402
import torch  # noqa: E402

from harness import config  # noqa: E402
from envs.rendering import RenderingUnavailableError  # noqa: E402
from harness.rundir import RunDirectory, git_commit, now_iso, package_versions  # noqa: E402
from harness.tensorboard import TensorBoardWriter  # noqa: E402


def parse_args(argv):
    parser = config.CliParser(prog="python -m harness.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gin", action="append", required=True, metavar="FILE", help="gin file (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING",
                        help="gin binding such as \"Experiment.seed=3\" (repeatable)")
    parser.add_argument("--out", help="run directory (default results/<experiment>/<method>/<suite>/<task>/ctx<T>/seed<k>)")
    parser.add_argument("--root", default="results", help="results root for the default run directory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="delete an existing run directory first")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard summaries to <run>/tb")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def resolve_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise config.ConfigError("--device cuda: no CUDA device is available")
    return name


def prepare(args):
    """Everything that can fail because of the user's input, before anything is written.

    Returns (experiment, run_dir, earlier run.json or None, runner), or (..., None) when the run is
    already done; raises ConfigError with a one-line message otherwise.
    """
    device = resolve_device(args.device)
    if args.tensorboard:
        TensorBoardWriter.check_available()
    config.parse(args.gin, args.bind)
    experiment = config.make_experiment()
    run_dir = RunDirectory(args.out or experiment.run_dir(args.root))
    if run_dir.path.exists() and not run_dir.path.is_dir():
        raise config.ConfigError(f"run directory {run_dir.path} is a file")
    try:
        info = run_dir.read_info() if run_dir.exists() else None
    except (OSError, ValueError) as error:
        raise config.ConfigError(f"cannot read {run_dir.run_json}: {error}") from error
    if run_dir.exists() and not (args.resume or args.overwrite):
        raise config.ConfigError(f"run directory {run_dir.path} exists: pass --resume to continue it "
                                 "or --overwrite to start again")
    if args.resume and info and info.get("status") == "done":
        return experiment, run_dir, info, None
    from harness.runner import Runner  # builds envs and models: the remaining user errors surface here
    try:
        runner = Runner(experiment, run_dir, device=device, tensorboard=args.tensorboard,
                        progress=not args.no_progress)
    except (ValueError, TypeError, RenderingUnavailableError) as error:  # bad task, shapes, references
        raise config.ConfigError(config.one_line(error)) from error
    return experiment, run_dir, info, runner


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        experiment, run_dir, info, runner = prepare(args)
    except config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if runner is None:
        print(f"run already done: {run_dir.path}")
        return 0
    device = str(runner.device)

    if args.overwrite and run_dir.path.exists():
        shutil.rmtree(run_dir.path)
        info = None
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.config.write_text(gin.operative_config_str() or gin.config_str())
    info = dict(info or {}, **experiment.spec(), status="running", git_commit=git_commit(),
                versions=package_versions(), device=device if device == "cpu" else torch.cuda.get_device_name(),
                total_env_steps=runner.schedule.total_env_steps, started_at=(info or {}).get("started_at", now_iso()))
    info.pop("error", None)
    run_dir.write_info(info)
    print(f"run directory: {run_dir.path}", flush=True)
    try:
        counters = runner.run()
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with --resume: {run_dir.path}", file=sys.stderr)
        return 130
    except Exception as error:
        traceback.print_exc()
        run_dir.write_info(dict(run_dir.read_info() or info, status="failed", error=f"{type(error).__name__}: {error}"))
        return 1
    run_dir.write_info(dict(run_dir.read_info() or info, status="done", env_steps=counters["env_step"],
                            wall_clock_s=round(counters["wall_clock_s"], 3)))
    print(f"done: {run_dir.path}  (final eval return {runner.last_eval_return:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
