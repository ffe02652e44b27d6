"""`python -m harness.bench e2e`: training throughput of the real training loop, end to end.

    python -m harness.bench e2e [--gin gin/kalmamba_noisy.gin ...] [--overlay FILE] [--bind 'Name.param=value']
                                [--compile none graph] [--lengths 32 256] [--task walker_walk]
                                [--env-steps 10000] [--warmup-env-steps 1000] [--device auto|cpu|cuda|cuda:N]
                                [--concurrent [N ...]] [--mps]

For each experiment file (`--gin`), task (`--task`, default the experiment's), context length T
(`--lengths`, bound as `Experiment.context_length`; default the experiment's) and compile mode
(`--compile`, bound as `LatentSAC.compile`; default `none graph` on CUDA, `none` on CPU), the run's
Runner is built as `python -m harness.run` builds it (harness.run.prepare, the run directory a
throwaway one in a temporary directory that is deleted at the end), then
  1. prefill: the schedule's `prefill_env_steps` of random actions, not timed;
  2. warm-up: --warmup-env-steps of training, not timed (CUDA graph capture, the allocator's growth,
     first calls), and the observation normaliser fitted as in a run;
  3. measured: --env-steps of training (`Runner.train_episodes_until`): acting, replay inserts and
     the updates due at `Schedule.agent_steps_per_update`, in whole episodes (so the count is
     rounded up to one), the device synchronised before the clock stops;
  4. one evaluation (`Runner.eval_returns`: `Schedule.eval_episodes` deterministic episodes), timed
     alone, after one untimed episode that warms up the deterministic policy (its own CUDA graph).
Nothing is logged, checkpointed or rendered.

Columns: env steps measured; env steps/s, agent steps/s and updates/s of phase 3; ms/update and
ms/act: time per call inside `agent.update` and `agent.act` during phase 3, from the call until the
device finished its work (CUDA events, which add no synchronisation to the loop; the wall clock on
CPU); eval s: phase 4; h per 1M: a 1M-env-step run projected from these, 1M / (env steps/s) plus
the evaluations at 0, eval_every, 2 eval_every, ... (prefill counted at the training rate,
checkpoints left out; without evaluations with --no-eval).

--concurrent [N ...] (default 1 2 4 8): for every configuration, N copies of its measurement run at
once as separate processes on the same device, seeds seed, seed + 1, ...; a second table gives their
summed env steps/s, the per-copy rates and the speedup over N = 1 (harness/benchmarks/concurrent.py).
--mps: the whole benchmark (the single runs and every copy) runs under one CUDA MPS daemon started
for it (harness/mps.py), as the runs of `harness.sweep --mps` do; the header says so.
"""
import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import shlex
import sys
import tempfile
import time

import torch

from agents.latent_sac import LatentSAC
from harness import config, mps, run
from harness.benchmarks import concurrent
from harness.benchmarks.models import Column
from harness.benchmarks.timing import CallClock
from harness.cli import CliParser, positive_int
from harness.device import DEVICE_HELP, device_arg, resolve_device
from harness.rundir import RunDirectoryError

DEFAULT_GIN = ["gin/kalmamba_noisy.gin"]
PROJECTED_ENV_STEPS = 1_000_000


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    daemon = mps.MpsDaemon()
    try:
        if args.mps:  # before anything touches CUDA: this process and its copies become MPS clients
            os.environ.update(daemon.start().env)
        return _main(argv, args)
    except mps.MpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if args.mps:
            for variable in daemon.env:
                os.environ.pop(variable, None)
        daemon.stop()


def _main(argv, args):
    try:  # every configuration is parsed before anything is built or timed
        device = resolve_device(args.device)
        configs = _configs(args, device)
    except config.ConfigError as error:
        print(f"error: {config.one_line(error)}", file=sys.stderr)
        return 2
    if not args.json:
        _print_header(argv, args, device)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        try:
            results = []
            for i, cfg in enumerate(configs):
                results.append(measure(args, cfg, device, pathlib.Path(tmp) / f"run{i}"))
                if args.json:
                    print(json.dumps(results[-1]), flush=True)
                else:
                    _print_row(results[-1], first=(i == 0))
            if args.concurrent:
                concurrent.report(args, argv_for_copy, configs, results, pathlib.Path(tmp))
        except (config.ConfigError, RunDirectoryError) as error:
            print(f"error: {config.one_line(error)}", file=sys.stderr)
            return 2
        except concurrent.CopyFailed as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    return 0


def _parse(argv):
    parser = CliParser(prog="python -m harness.bench e2e", doc=__doc__)
    parser.add_argument("--gin", nargs="+", action="extend", default=None, metavar="FILE",
                        help=f"experiment gin files, one row each (default {' '.join(DEFAULT_GIN)})")
    parser.add_argument("--overlay", action="append", default=[], metavar="FILE",
                        help="gin file applied after each experiment file, e.g. gin/quick.gin (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING", help="gin binding (repeatable)")
    parser.add_argument("--compile", nargs="+", choices=LatentSAC.COMPILE_MODES, default=None,
                        help="LatentSAC.compile modes (default: none graph on CUDA, none on CPU)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="context lengths T (default: the experiment's)")
    parser.add_argument("--task", nargs="+", default=None, help="tasks (default: the experiment's)")
    parser.add_argument("--env-steps", type=positive_int, default=10_000,
                        help="env steps of the measured phase (default 10000; rounded up to whole episodes)")
    parser.add_argument("--warmup-env-steps", type=int, default=1_000,
                        help="env steps of training after prefill, not timed (default 1000: one episode)")
    parser.add_argument("--no-eval", action="store_true", help="do not time an evaluation")
    parser.add_argument("--device", type=device_arg, default="auto", metavar="auto|cpu|cuda|cuda:N", help=DEVICE_HELP)
    parser.add_argument("--seed", type=int, default=None, help="Experiment.seed (default: the experiment's)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--concurrent", type=positive_int, nargs="*", default=None, metavar="N",
                        help="also time N copies at once per configuration (no value: 1 2 4 8)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per configuration instead of the tables")
    parser.add_argument("--mps", action="store_true",
                        help="run everything under a CUDA MPS daemon started for the benchmark "
                             "(needs nvidia-cuda-mps-control)")
    parser.add_argument("--barrier", default=None, help=argparse.SUPPRESS)  # set by --concurrent for its copies
    args = parser.parse_args(argv)
    if args.lengths is not None and min(args.lengths) < 2:
        parser.error("--lengths must be >= 2 (SAC trains on transitions between steps)")
    if args.warmup_env_steps < 0:
        parser.error("--warmup-env-steps must be >= 0")
    if args.seed is not None and args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.json and args.concurrent is not None:
        parser.error("--json prints one configuration's measurement per line: it does not combine with --concurrent")
    if args.concurrent is not None:
        args.concurrent = sorted(set(args.concurrent or [1, 2, 4, 8]))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.gin = args.gin or DEFAULT_GIN
    return args


@dataclasses.dataclass(frozen=True)
class Config:
    """One row: an experiment file with its task, context length, compile mode and seed bound."""
    path: str
    label: str
    task: str
    length: int
    mode: str
    seed: int

    def bindings(self, args):
        """--bind's bindings, then this row's (which win)."""
        return [*args.bind, f"Experiment.task = '{self.task}'", f"Experiment.context_length = {self.length}",
                f"LatentSAC.compile = '{self.mode}'", f"Experiment.seed = {self.seed}"]


def _configs(args, device):
    from harness.runner import Runner
    modes = args.compile or (["none", "graph"] if device.startswith("cuda") else ["none"])
    if "graph" in modes and not device.startswith("cuda"):
        raise config.ConfigError(f"--compile graph records CUDA graphs: it needs a CUDA device, not {device}")
    configs = []
    for path in args.gin:
        experiment = Column(path, args.overlay, args.bind).parse()
        if experiment.runner is not Runner:
            raise config.ConfigError(f"{path} trains with {experiment.runner.__name__}: e2e times the online "
                                     "training loop (harness.runner.Runner)")
        seed = experiment.seed if args.seed is None else args.seed
        for task in args.task or [experiment.task]:
            for length in args.lengths or [experiment.context_length]:
                for mode in modes:
                    cfg = Config(path, experiment.label, task, length, mode, seed)
                    Column(path, args.overlay, cfg.bindings(args)).parse()  # a bad task or T fails here
                    configs.append(cfg)
    return configs


def argv_for_copy(args, cfg, seed, barrier):
    """The command-line options of one --concurrent copy of `cfg`'s measurement."""
    argv = ["--gin", cfg.path, "--task", cfg.task, "--lengths", str(cfg.length), "--compile", cfg.mode,
            "--seed", str(seed), "--env-steps", str(args.env_steps),
            "--warmup-env-steps", str(args.warmup_env_steps), "--device", args.device,
            "--no-eval", "--json", "--barrier", str(barrier)]
    for overlay in args.overlay:
        argv += ["--overlay", overlay]
    for binding in args.bind:
        argv += ["--bind", binding]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return argv


def measure(args, cfg, device, run_dir):
    """Build `cfg`'s Runner as a run does and time it (module docstring); returns a JSON-able dict."""
    run_argv = ["--gin", cfg.path, "--out", str(run_dir), "--device", device, "--no-progress"]
    for path in args.overlay:
        run_argv += ["--gin", path]
    for binding in cfg.bindings(args):
        run_argv += ["--bind", binding]
    plan = run.prepare(run.parse_args(run_argv))
    try:
        return _time_runner(plan.runner, args, cfg)
    finally:
        plan.run_dir.unlock()
        for env in (plan.runner.env, plan.runner.eval_env):
            env.close()
        del plan
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _time_runner(runner, args, cfg):
    counters, schedule, agent = runner.counters, runner.schedule, runner.agent
    episode = runner.env.max_episode_steps + 1  # the reset observation and one slot per agent step
    if runner.replay.windows_within_episode and cfg.length > episode:
        raise config.ConfigError(f"Experiment.context_length = {cfg.length} exceeds the {episode} agent steps of a "
                                 f"{cfg.task} episode, and replay windows lie inside one episode "
                                 "(ReplayBuffer.windows_within_episode)")
    runner.train_episodes_until(schedule.prefill_env_steps)
    runner.train_episodes_until(counters["env_step"] + args.warmup_env_steps)
    if args.barrier:
        concurrent.wait_at_barrier(args.barrier, cfg.seed)
    before = dict(counters)
    update_clock, act_clock = CallClock(runner.device), CallClock(runner.device)
    with update_clock.wrapping(agent, "update"), act_clock.wrapping(agent, "act"):
        _synchronise(runner.device)
        started_at, began = time.time(), time.perf_counter()
        runner.train_episodes_until(counters["env_step"] + args.env_steps)
        _synchronise(runner.device)
        seconds = time.perf_counter() - began
    eval_s = None
    if not args.no_eval:
        runner.eval_returns(episodes=1)  # not timed: first calls of the deterministic policy (its own graph)
        _synchronise(runner.device)
        began = time.perf_counter()
        runner.eval_returns()
        _synchronise(runner.device)
        eval_s = time.perf_counter() - began
    done = {key: counters[key] - before[key] for key in ("env_step", "agent_step", "updates")}
    rate = done["env_step"] / seconds
    evaluations = PROJECTED_ENV_STEPS // schedule.eval_every + 1
    hours = (PROJECTED_ENV_STEPS / rate + (evaluations * eval_s if eval_s is not None else 0.0)) / 3600
    return {"experiment": cfg.label, "path": cfg.path, "task": cfg.task, "context_length": cfg.length,
            "compile": cfg.mode, "compile_mode": getattr(agent, "compile_mode", cfg.mode), "seed": cfg.seed,
            "env_steps": done["env_step"], "agent_steps": done["agent_step"], "updates": done["updates"],
            "seconds": seconds, "started_at": started_at, "ended_at": started_at + seconds,
            "env_steps_per_s": rate, "agent_steps_per_s": done["agent_step"] / seconds,
            "updates_per_s": done["updates"] / seconds, "update_ms": update_clock.mean_ms(),
            "act_ms": act_clock.mean_ms(), "eval_s": eval_s, "eval_episodes": schedule.eval_episodes,
            "eval_every": schedule.eval_every, "hours_per_1m_env_steps": hours}


def _synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- printing --------------------------------------------------------------------------------------
COLUMNS = ["experiment", "task", "compile", "T", "env steps", "env steps/s", "agent steps/s", "updates/s",
           "ms/update", "ms/act", "eval s", "h per 1M env steps"]


def _print_header(argv, args, device):
    from models.mamba import mamba_ssm_available
    if device.startswith("cuda"):
        name = f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"
    print(f"command: python -m harness.bench e2e {shlex.join(argv)}".rstrip())
    print(f"date: {datetime.date.today().isoformat()}; torch {torch.__version__}; device: {name}; "
          f"mamba_ssm kernel: {'yes' if mamba_ssm_available() else 'no'}; "
          f"CUDA MPS: {'yes' if mps.in_use() else 'no'}; "
          f"gin overlays: {' '.join(args.overlay) or 'none'}; bindings: {'; '.join(args.bind) or 'none'}")
    print(f"after the schedule's prefill and {args.warmup_env_steps} env steps of warm-up: {args.env_steps} "
          "env steps of training timed (whole episodes), then one evaluation"
          + (" (skipped: --no-eval)" if args.no_eval else ""), flush=True)


def _print_row(result, first):
    if first:
        print("\n| " + " | ".join(COLUMNS) + " |")
        print("|---|---|---|" + "---:|" * (len(COLUMNS) - 3))
    mode = result["compile"]
    if result["compile_mode"] != mode:
        mode = f"{mode} ({result['compile_mode']})"
    cells = [result["experiment"], result["task"], mode, str(result["context_length"]), str(result["env_steps"]),
             f"{result['env_steps_per_s']:.1f}", f"{result['agent_steps_per_s']:.1f}",
             f"{result['updates_per_s']:.2f}", _number(result["update_ms"], 2), _number(result["act_ms"], 2),
             _number(result["eval_s"], 1), f"{result['hours_per_1m_env_steps']:.1f}"]
    print("| " + " | ".join(cells) + " |", flush=True)


def _number(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"
