"""Train and evaluate one run.

    python -m harness.run --gin gin/kalmamba_noisy.gin [--gin gin/quick.gin] [--bind 'Name.param=value']
                          [--out DIR] [--resume | --overwrite] [--device auto|cpu|cuda|cuda:N]
                          [--no-tf32] [--tensorboard] [--wandb] [--video]

On CUDA, float32 matmuls and convolutions use TF32 unless --no-tf32. run.json records the machine
(`machine`: host, OS, CPU, torch, CUDA device; `machines`: every one the run was trained on), where
a scheduler placed it (`placement`: node id and IP, reserved GPU ids, CUDA_VISIBLE_DEVICES, see
harness.device; `placements`: every one), the TF32 setting, the agent's resolved `compile_mode` and
`gpu_seconds`: the wall clock of every process that held a CUDA device for this run directory,
summed over resumes (and over attempts started again with --overwrite).

Exit status: 0 done (or already done); 1 the run failed (run.json says why); 2 a user error (bad
gin, unknown suite or task, an existing or locked run directory, a resume that does not match the
run): then nothing is written, overwritten or deleted; 130 / 143 interrupted by SIGINT / SIGTERM
(run.json says 'interrupted'; continue with --resume).
"""
import signal
import sys
import time
import traceback

from harness import config
from harness import rundir
from harness.cli import CliParser
from harness.device import DEVICE_HELP, device_arg, machine_info, placement_info, resolve_device
from harness.run_identity import config_mismatch, identity_mismatch, run_identity


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; raised in the main thread by `_on_signal`."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_status = 128 + signum


def _on_signal(signum, frame):
    raise Interrupted(signum)


def parse_args(argv):
    parser = CliParser(prog="python -m harness.run", doc=__doc__)
    parser.add_argument("--gin", action="append", required=True, metavar="FILE", help="gin file (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING",
                        help="gin binding such as \"Experiment.seed=3\" (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default ROOT/<experiment>/<method>[+<variant>]/"
                                                     "<suite>/<task>/ctx<T>/seed<k>)")
    parser.add_argument("--root", default="results", metavar="ROOT",
                        help="results root of the default run directory (default: results)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue from the run directory's checkpoint (the configuration must match)")
    mode.add_argument("--overwrite", action="store_true",
                      help="delete the files of an existing run first (only a directory holding run.json)")
    parser.add_argument("--device", type=device_arg, default="auto", metavar="auto|cpu|cuda|cuda:N", help=DEVICE_HELP)
    parser.add_argument("--no-tf32", action="store_true",
                        help="on CUDA, keep float32 matmuls and convolutions in full float32 (default: TF32)")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard summaries to <run>/tb")
    parser.add_argument("--video", action="store_true",
                        help="write an mp4 of the first eval episode of every evaluation to <run>/videos "
                             "(Schedule.video_every sets a sparser cadence)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log to Weights & Biases (run identity and gin bindings as its config; "
                             "files in <run>/wandb; WANDB_MODE=offline logs without an account)")
    parser.add_argument("--wandb-project", default="ssm-bench", metavar="NAME", help="W&B project (default ssm-bench)")
    parser.add_argument("--wandb-entity", metavar="NAME", help="W&B entity (default: your default entity)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def wandb_options(args):
    from harness.loggers import WandbOptions
    return WandbOptions(args.wandb_project, args.wandb_entity) if args.wandb else None


class Plan:
    """What `prepare` decided: the run to train (runner None when it is already done). `began`: the
    time.monotonic() at which this process chose its device, where its GPU time starts; `tf32`: the
    TF32 setting of CUDA matmuls (None off CUDA)."""

    def __init__(self, experiment, run_dir, info, runner=None, state=None, identity=None):
        self.experiment, self.run_dir, self.info = experiment, run_dir, info
        self.runner, self.state, self.identity = runner, state, identity
        self.began, self.tf32 = time.monotonic(), None


def configure_tf32(device, enabled):
    """TF32 for CUDA float32 matmuls and cuDNN convolutions (nothing changes off CUDA); returns the
    matmul setting to record, None off CUDA."""
    import torch
    if not str(device).startswith("cuda"):
        return None
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return torch.backends.cuda.matmul.allow_tf32


def prepare(args) -> Plan:
    """Everything that can fail because of the user's input, before anything is written or deleted.

    Raises ConfigError or RunDirectoryError with a one-line message. Holds the run directory's lock
    on return (when there is something to train).
    """
    from harness import loggers

    began = time.monotonic()
    device = resolve_device(args.device)
    tf32 = configure_tf32(device, not args.no_tf32)  # before anything is built or captured
    loggers.check_available(args.tensorboard, wandb_options(args))
    config.parse(args.gin, args.bind)
    try:
        experiment = config.make_experiment()
    except ValueError as error:
        raise config.ConfigError(config.one_line(error)) from error
    run_dir = rundir.RunDirectory(args.out or experiment.run_dir(args.root))
    try:
        plan = _check_and_build(args, experiment, run_dir, device)
        plan.began, plan.tf32 = began, tf32
        return plan
    except BaseException:
        run_dir.unlock()
        raise


def _check_and_build(args, experiment, run_dir, device) -> Plan:
    import gin
    from envs.rendering import RenderingUnavailableError
    from harness.video import VideoUnavailableError
    if run_dir.path.exists() and not run_dir.path.is_dir():
        raise config.ConfigError(f"run directory {run_dir.path} is a file")
    existed = run_dir.exists()
    info = None
    if existed:
        if not (args.resume or args.overwrite):
            raise config.ConfigError(f"run directory {run_dir.path} exists: pass --resume to continue it "
                                     "or --overwrite to start again")
        if args.overwrite and not run_dir.is_run():
            raise rundir.RunDirectoryError(
                f"--overwrite refused: {run_dir.path} is not a run directory (it has no "
                f"{rundir.RUN_FILE}); remove it yourself or choose another --out")
        run_dir.lock()
        info = run_dir.read_info()
        if args.resume:
            if info is None:
                raise rundir.RunDirectoryError(f"cannot resume {run_dir.path}: it holds no {rundir.RUN_FILE}")
            mismatch = identity_mismatch({**rundir.identity(info), "obs_noise_std": None,
                                          "action_noise_std": None, "dataset_kind": None}, experiment.spec())
            if mismatch is None and run_dir.config.is_file():
                mismatch = config_mismatch(run_dir.config.read_text(), gin.config_str(), shared_only=True)
            if mismatch:
                raise rundir.RunDirectoryError(f"cannot resume {run_dir.path}: {mismatch}")
            if info.get("status") == rundir.DONE:
                return Plan(experiment, run_dir, info)

    extras = {}  # options only the online runner takes: asked for explicitly, refused by others
    if args.video:
        extras["video_every_eval"] = True
    if wandb_options(args):
        extras["wandb"] = wandb_options(args)
    try:  # builds envs and models (or reads an offline dataset): the remaining user errors surface here
        runner = experiment.runner(experiment, run_dir, device=device, tensorboard=args.tensorboard,
                                   progress=not args.no_progress, **extras)
    except (ValueError, TypeError, RenderingUnavailableError, VideoUnavailableError) as error:  # bad task, shapes, references
        raise config.ConfigError(config.one_line(error)) from error
    identity = run_identity(experiment, runner.env, getattr(runner, "dataset_kind", None))
    state = None
    if args.resume and info is not None:
        mismatch = identity_mismatch(info, identity)
        if mismatch is None and run_dir.config.is_file():
            mismatch = config_mismatch(run_dir.config.read_text(), gin.operative_config_str())
        if mismatch:
            raise rundir.RunDirectoryError(f"cannot resume {run_dir.path}: {mismatch}")
        state = run_dir.load_state(map_location=runner.device)
        if state is None and info.get("checkpoint_env_step") is not None:
            raise rundir.RunDirectoryError(
                f"cannot resume {run_dir.path}: run.json records a checkpoint at env step "
                f"{info['checkpoint_env_step']} but {run_dir.state_file} is missing; --overwrite starts again")
        if state is not None:
            run_dir.check_metrics_reach(state["counters"]["metrics_bytes"])
    if not existed:
        run_dir.lock()
        if run_dir.is_run():  # another process created it since we looked
            raise rundir.RunDirectoryError(f"run directory {run_dir.path} was created by another process")
    return Plan(experiment, run_dir, info, runner, state, identity)


def start(plan, args):
    """Write the run's files (deleting an overwritten run's first); raises OSError when it cannot."""
    import gin
    import torch
    run_dir, runner = plan.run_dir, plan.runner
    # kept over --overwrite
    spent = {key: (plan.info or {}).get(key) for key in ("gpu_seconds", "machines", "placements")}
    if args.overwrite and run_dir.is_run():
        run_dir.remove_run_files()
        plan.info = None
    run_dir.remove_stale_temporaries()
    run_dir.path.mkdir(parents=True, exist_ok=True)
    device = str(runner.device)
    machine = machine_info(device)
    machines = [m for m in spent["machines"] or [] if isinstance(m, dict)]
    placement = placement_info()
    placements = [p for p in spent["placements"] or [] if isinstance(p, dict)]
    info = dict(plan.info or {}, **plan.identity, status=rundir.RUNNING, bindings=list(args.bind),
                git_commit=rundir.git_commit(), source_digest=rundir.source_digest(),
                versions=rundir.package_versions(),
                device=device if device == "cpu" else torch.cuda.get_device_name(runner.device),
                machine=machine, machines=machines + [machine] * (machine not in machines),
                placement=placement, placements=placements + [placement] * (placement not in placements),
                tf32=plan.tf32,
                compile_mode=getattr(getattr(runner, "agent", None), "compile_mode", None),
                total_env_steps=runner.schedule.total_env_steps,
                started_at=(plan.info or {}).get("started_at", rundir.now_iso()))
    for stale in ("error", "interrupted_by"):
        info.pop(stale, None)
    run_dir.count_gpu_time(spent["gpu_seconds"], plan.began, device.startswith("cuda"))
    run_dir.write_info(info)
    rundir.atomic_write_text(run_dir.config, gin.operative_config_str() or gin.config_str())


def record_end(run_dir, **fields):
    """Rewrite run.json's status; returns None or the reason it could not be written."""
    try:
        run_dir.update_info(**fields)
        return None
    except (OSError, rundir.RunDirectoryError) as error:
        return getattr(error, "strerror", None) or str(error)


def train(plan, args):
    run_dir, runner = plan.run_dir, plan.runner
    try:
        start(plan, args)
    except OSError as error:
        print(f"error: cannot write the run directory {run_dir.path}: {error.strerror or error}",
              file=sys.stderr)
        return 2
    print(f"run directory: {run_dir.path}", flush=True)
    try:
        counters = runner.run(plan.state)
    except Interrupted as stop:
        unrecorded = record_end(run_dir, status=rundir.INTERRUPTED, interrupted_by=stop.signal_name)
        print(f"interrupted by {stop.signal_name}; continue with --resume: {run_dir.path}"
              + (f" (run.json not updated: {unrecorded})" if unrecorded else ""), file=sys.stderr)
        return stop.exit_status
    except OSError as error:  # a full disk, a vanished mount: one line, no chained tracebacks
        unrecorded = record_end(run_dir, status=rundir.FAILED, error=f"OSError: {error}")
        print(f"error: run failed: {error}" + (f" (run.json not updated either: {unrecorded})"
                                                 if unrecorded else ""), file=sys.stderr)
        return 1
    except Exception as error:
        traceback.print_exc()
        unrecorded = record_end(run_dir, status=rundir.FAILED, error=f"{type(error).__name__}: {error}")
        print(f"error: run failed: {type(error).__name__}: {config.one_line(error)}"
              + (f" (run.json not updated: {unrecorded})" if unrecorded else ""), file=sys.stderr)
        return 1
    unrecorded = record_end(run_dir, status=rundir.DONE, env_steps=counters["env_step"],
                            wall_clock_s=round(counters["wall_clock_s"], 3))
    if unrecorded:
        print(f"error: training finished but run.json could not be updated: {unrecorded}", file=sys.stderr)
        return 1
    print(f"done: {run_dir.path}  (final eval return {runner.last_eval_return:.1f})")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    handlers = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            plan = prepare(args)
        except (config.ConfigError, rundir.RunDirectoryError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Interrupted as stop:
            print(f"interrupted by {stop.signal_name} during start-up; nothing was written", file=sys.stderr)
            return stop.exit_status
        try:
            if plan.runner is None:
                print(f"run already done: {plan.run_dir.path}")
                return 0
            return train(plan, args)
        finally:
            plan.run_dir.unlock()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
