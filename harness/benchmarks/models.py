"""`python -m harness.bench models`: time of one world-model + SAC update per experiment and context length.

    python -m harness.bench models [--gin gin/kalmamba_noisy.gin gin/rssm_noisy.gin ...]
                                   [--overlay gin/quick.gin] [--bind 'Name.param=value'] [options]

Each column is one experiment gin file (`--gin`, as a sweep's methods; default: every experiment
file in gin/ of the `--suites`), built exactly as its run builds it: the file, then any --overlay
files and --bind bindings, `Experiment.world_model` and `Experiment.agent` on the task's
observation and action shapes; the column is named by the run's label (`kalmamba`, or
`kalmamba+<variant>`). One timed call is `LatentSAC.update` on a random replay-shaped batch (B, T)
already on the device: world-model loss, backward, Adam step, then the SAC critic, actor and
temperature updates on the detached filtered features. Every time is the median wall clock of
--repeats calls after --warmup calls, with the device synchronised before the clock stops.
--compile times each experiment in each mode of `LatentSAC.compile` ('none': eager, 'graph': the
update recorded once as a CUDA graph and replayed; default both on CUDA, eager on the CPU), one column
per experiment and mode; a graph is recorded per T during the warm-up (at least 3 calls: two eager,
one capturing), so the timed calls are replays. --model-only times the world-model half alone (loss, backward, gradient clip, Adam step): the SAC
half works on B (T - 1) transitions of the same feature size for every model, so it adds the same
O(B T) cost to each of them.

Prints one markdown table per device and suite: a row per T, the milliseconds of each experiment
side by side, then each one's time divided by the first column's, and finally the growth of each
one's time from the shortest to the longest T. A cell is `-` when the experiment's previous T
already took longer than --max-ms, `OOM` when the device ran out of memory.
"""
import argparse
import datetime
import sys

import numpy as np
import torch

from harness import config
from harness.cli import CliParser
from harness.benchmarks.timing import median_ms

GIN_ROOT = config.GIN_ROOTS[0] if config.GIN_ROOTS else config.REPO_ROOT  # a clone, or the installed package
GIN_DIR = GIN_ROOT / "gin"


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    devices = args.devices
    if "cuda" in devices and not torch.cuda.is_available():
        print("error: --devices cuda was asked for but CUDA is not available", file=sys.stderr)
        return 2
    try:  # every file is parsed before any timing starts, so a bad overlay fails at once
        columns = _columns(args)
        suites = sorted({column.suite for column in columns})
        shapes = {suite: _task_shapes(suite, args.task) for suite in suites}
    except (ValueError, config.ConfigError) as error:
        print(f"error: {config.one_line(error)}", file=sys.stderr)
        return 2
    from models.mamba import mamba_ssm_available
    print(f"command: python -m harness.bench models {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"date: {datetime.date.today().isoformat()}; torch {torch.__version__}; "
          f"mamba_ssm kernel: {'yes' if mamba_ssm_available() else 'no'}; task {args.task}; "
          f"gin overlays: {' '.join(args.overlay) or 'none'}")
    from harness.run import configure_tf32
    for device in devices:
        configure_tf32(device, not args.no_tf32)  # as a run does
        for suite in suites:
            _table(args, [c for c in columns if c.suite == suite], shapes[suite], torch.device(device))
    return 0


def _parse(argv):
    parser = CliParser(prog="python -m harness.bench models", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024],
                        help="context lengths T")
    parser.add_argument("--batch", type=int, default=32, help="sequences per update (default 32, as in training)")
    parser.add_argument("--gin", nargs="+", action="extend", default=[], metavar="FILE",
                        help="experiment gin files, one column each (repeatable); default: every "
                             "experiment file in gin/ of the --suites")
    parser.add_argument("--suites", nargs="+", default=["noisy_state"],
                        help="suites of the default experiment files (default noisy_state)")
    parser.add_argument("--task", default="cartpole_swingup", help="task whose observation/action shapes are used")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--overlay", action="append", default=[], metavar="FILE",
                        help="gin file applied after each experiment file, e.g. gin/quick.gin (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING", help="gin binding (repeatable)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-ms", type=float, default=None,
                        help="skip a model's longer T once one update took longer than this")
    parser.add_argument("--model-only", action="store_true",
                        help="time only the world-model update (loss, backward, clip, Adam step)")
    parser.add_argument("--compile", nargs="+", choices=["none", "graph"], default=None,
                        help="LatentSAC.compile modes, a column each (default: none graph on CUDA, none on CPU)")
    parser.add_argument("--no-tf32", action="store_true",
                        help="full float32 matmuls on CUDA (runs use TF32 unless `harness.run --no-tf32`)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.lengths) < 2 or args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("lengths must be >= 2, batch and repeats positive, warmup non-negative")
    if args.model_only and args.compile and args.compile != ["none"]:
        parser.error("--model-only times the eager world-model update; leave out --compile or use --compile none")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.lengths = sorted(set(args.lengths))
    args.devices = args.devices or ["cuda" if torch.cuda.is_available() else "cpu"]
    return args


def _task_shapes(suite, task):
    """(obs_shape, obs is uint8, action_dim) of the task in the suite, read from one environment."""
    import envs

    env = envs.make_env(suite, task, seed=0)
    try:
        return tuple(env.obs_shape), np.dtype(env.obs_dtype) == np.uint8, int(env.action_dim)
    finally:
        env.close()


class Column:
    """One experiment file of the table: its label (the run's method and variant) and suite; with a
    `compile` mode, the label gets `/<mode>` and the agent is built in that mode."""

    def __init__(self, path, overlays, bindings, compile=None):
        self.path, self.overlays, self.bindings = path, list(overlays), list(bindings)
        if compile is not None:
            self.bindings.append(f"LatentSAC.compile = '{compile}'")
        experiment = self.parse()
        self.label, self.suite = experiment.label, experiment.suite
        self.compile = compile
        if compile is not None:
            self.label = f"{self.label}/{compile}"

    def parse(self):
        config.parse([self.path, *self.overlays], self.bindings)
        try:
            return config.make_experiment()
        except config.ConfigError as error:
            raise config.ConfigError(f"{self.path} does not build an experiment ({error}); "
                                     "gin files applied on top of each experiment go in --overlay") from error

    def build_agent(self, shapes, device):
        experiment = self.parse()
        obs_shape, _, action_dim = shapes
        world_model = experiment.world_model(obs_shape=obs_shape, action_dim=action_dim)
        return experiment.agent(world_model=world_model, action_dim=action_dim).to(device)


def default_experiments(suites):
    """Every experiment file directly in gin/ (a file that builds an Experiment) of the suites."""
    found = []
    for path in sorted(GIN_DIR.glob("*.gin")):
        try:
            config.parse([path])
            experiment = config.make_experiment()
        except config.ConfigError:
            continue  # an overlay or a fragment
        if experiment.suite in suites:
            found.append(path.relative_to(GIN_ROOT).as_posix())
    return found


def _columns(args):
    paths = args.gin or default_experiments(args.suites)
    if not paths:
        raise config.ConfigError(f"no experiment file in gin/ has a suite among {args.suites}")
    modes = args.compile or (["none", "graph"] if "cuda" in args.devices else [None])
    columns = [Column(path, args.overlay, args.bind, mode) for path in paths for mode in modes]
    labels = [column.label for column in columns]
    for label in labels:
        if labels.count(label) > 1:
            raise config.ConfigError(f"two experiment files are labelled {label!r}: "
                                     "set Experiment.variant in one of them")
    return columns


def random_batch(batch_size, length, shapes, device, generator):
    """Replay-shaped batch (B, T, ...) on `device`: random observations and actions, no episode starts
    after step 0 (every model restarts its belief at step 0 of a sampled sequence anyway)."""
    obs_shape, is_image, action_dim = shapes
    shape = (batch_size, length)
    if is_image:
        obs = torch.randint(0, 256, shape + obs_shape, dtype=torch.uint8, generator=generator)
    else:
        obs = torch.randn(shape + obs_shape, generator=generator)
    batch = {"obs": obs, "prev_action": 2 * torch.rand(shape + (action_dim,), generator=generator) - 1,
             "reward": torch.rand(shape, generator=generator), "is_first": torch.zeros(shape, dtype=torch.bool),
             "is_terminal": torch.zeros(shape, dtype=torch.bool)}
    return {key: value.to(device) for key, value in batch.items()}


def _time_update_ms(agent, batch, device, args):
    update = (lambda: agent.update_world_model(batch)) if args.model_only else (lambda: agent.update(batch))
    graphs = getattr(agent, "compile_mode", "none") == "graph"
    try:
        return median_ms(update, device, max(args.warmup, 3) if graphs else args.warmup, args.repeats)
    finally:
        if graphs:
            agent.release_graphs()  # one graph per T: free its memory before the next


def _measure(args, columns, shapes, device):
    """{label: {T: ms or None (skipped) or 'OOM'}}."""
    results = {}
    for column in columns:
        torch.manual_seed(args.seed)
        agent = column.build_agent(shapes, device)
        generator = torch.Generator().manual_seed(args.seed)
        times, too_slow = {}, False
        results[column.label] = times
        for length in args.lengths:
            if too_slow:
                times[length] = None
                continue
            try:
                batch = random_batch(args.batch, length, shapes, device, generator)
                times[length] = _time_update_ms(agent, batch, device, args)
                too_slow = args.max_ms is not None and times[length] > args.max_ms
            except torch.OutOfMemoryError:
                times[length], too_slow = "OOM", True
                batch = None
                torch.cuda.empty_cache()
        del agent
    return results


def _table(args, columns, shapes, device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    obs_shape, _, action_dim = shapes
    what = "world-model update only" if args.model_only else "world-model + SAC update"
    if device.type == "cuda":
        threads = f", TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}"
    print(f"\n### {name} ({device.type}{threads}); suite {columns[0].suite}, obs {obs_shape}, A={action_dim}; "
          f"batch {args.batch}; ms per {what} (median of {args.repeats} after {args.warmup} warm-up)\n")
    results = _measure(args, columns, shapes, device)
    labels = [column.label for column in columns]
    reference, others = labels[0], labels[1:]
    header = ["T"] + [f"{label} ms" for label in labels] + [f"{label} / {reference}" for label in others]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for length in args.lengths:
        row = [str(length)] + [_cell(results[label][length]) for label in labels]
        base = results[reference][length]
        for label in others:
            value = results[label][length]
            both = isinstance(value, float) and isinstance(base, float)
            row.append(f"{value / base:.1f}x" if both else "-")
        print("| " + " | ".join(row) + " |", flush=True)
    first, last = args.lengths[0], args.lengths[-1]
    growth = []
    for label in labels:
        a, b = results[label][first], results[label][last]
        growth.append(f"{label} {b / a:.1f}x" if isinstance(a, float) and isinstance(b, float) else f"{label} -")
    print(f"\ngrowth from T={first} to T={last}: " + ", ".join(growth))


def _cell(value):
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.1f}"
