"""`python -m harness.bench models`: time of one world-model + SAC update per model and context length.

Each model is built exactly as its experiment builds it: `gin/<model>_<suite>.gin` (plus any --gin
overlays and --bind bindings), `Experiment.world_model` and `Experiment.agent` on the task's
observation and action shapes. One timed call is `LatentSAC.update` on a random replay-shaped
batch (B, T) already on the device: world-model loss, backward, Adam step, then the SAC critic,
actor and temperature updates on the detached filtered features. Every time is the median wall
clock of --repeats calls after --warmup calls, with the device synchronised before the clock stops.
--model-only times the world-model half alone (loss, backward, gradient clip, Adam step): the SAC
half works on B (T - 1) transitions of the same feature size for every model, so it adds the same
O(B T) cost to each of them.

Prints one markdown table per device and suite: a row per T, the milliseconds of each model side
by side, then each model's time divided by KalMamba's (when KalMamba is measured), and finally the
growth of each model's time from the shortest to the longest T. A cell is `-` when the model's
previous T already took longer than --max-ms, `OOM` when the device ran out of memory.
"""
import argparse
import datetime
import sys

import numpy as np
import torch

from harness import config
from harness.benchmarks.timing import median_ms

MODELS = ("kalmamba", "rssm", "vrkn")
SUITE_FILES = {"noisy_state": "noisy", "image": "image"}
REFERENCE = "kalmamba"


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    devices = args.devices or ["cuda" if torch.cuda.is_available() else "cpu"]
    if "cuda" in devices and not torch.cuda.is_available():
        print("error: --devices cuda was asked for but CUDA is not available", file=sys.stderr)
        return 2
    try:
        shapes = {suite: _task_shapes(suite, args.task) for suite in args.suites}
        for suite in args.suites:  # fail on a bad overlay before any timing starts
            for model in args.models:
                _build_agent(args, suite, shapes[suite], torch.device("cpu"), model, build=False)
    except (ValueError, config.ConfigError) as error:
        print(f"error: {config.one_line(error)}", file=sys.stderr)
        return 2
    from models.mamba import mamba_ssm_available
    print(f"command: python -m harness.bench models {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"date: {datetime.date.today().isoformat()}; torch {torch.__version__}; "
          f"mamba_ssm kernel: {'yes' if mamba_ssm_available() else 'no'}; task {args.task}; "
          f"gin overlays: {' '.join(args.gin) or 'none'}")
    for device in devices:
        for suite in args.suites:
            _table(args, suite, shapes[suite], torch.device(device))
    return 0


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m harness.bench models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024],
                        help="context lengths T")
    parser.add_argument("--batch", type=int, default=32, help="sequences per update (default 32, as in training)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--suites", nargs="+", choices=list(SUITE_FILES), default=["noisy_state"])
    parser.add_argument("--task", default="cartpole_swingup", help="task whose observation/action shapes are used")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--gin", action="append", default=[], metavar="FILE",
                        help="extra gin file applied after the experiment file, e.g. gin/quick.gin (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING", help="gin binding (repeatable)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-ms", type=float, default=None,
                        help="skip a model's longer T once one update took longer than this")
    parser.add_argument("--model-only", action="store_true",
                        help="time only the world-model update (loss, backward, clip, Adam step)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.lengths) < 2 or args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("lengths must be >= 2, batch and repeats positive, warmup non-negative")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.lengths = sorted(set(args.lengths))
    return args


def _task_shapes(suite, task):
    """(obs_shape, obs is uint8, action_dim) of the task in the suite, read from one environment."""
    import envs

    env = envs.make_env(suite, task, seed=0)
    try:
        return tuple(env.obs_shape), np.dtype(env.obs_dtype) == np.uint8, int(env.action_dim)
    finally:
        env.close()


def _build_agent(args, suite, shapes, device, model=REFERENCE, build=True):
    config.parse([f"gin/{model}_{SUITE_FILES[suite]}.gin", *args.gin], args.bind)
    experiment = config.make_experiment()
    if not build:
        return None
    obs_shape, _, action_dim = shapes
    world_model = experiment.world_model(obs_shape=obs_shape, action_dim=action_dim)
    return experiment.agent(world_model=world_model, action_dim=action_dim).to(device)


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

    return median_ms(update, device, args.warmup, args.repeats)


def _measure(args, suite, shapes, device):
    """{model: {T: ms or None (skipped) or 'OOM'}}."""
    results = {}
    for model in args.models:
        torch.manual_seed(args.seed)
        agent = _build_agent(args, suite, shapes, device, model)
        generator = torch.Generator().manual_seed(args.seed)
        results[model], too_slow = {}, False
        for length in args.lengths:
            if too_slow:
                results[model][length] = None
                continue
            try:
                batch = random_batch(args.batch, length, shapes, device, generator)
                results[model][length] = _time_update_ms(agent, batch, device, args)
                too_slow = args.max_ms is not None and results[model][length] > args.max_ms
            except torch.OutOfMemoryError:
                results[model][length], too_slow = "OOM", True
                batch = None
                torch.cuda.empty_cache()
        del agent
    return results


def _table(args, suite, shapes, device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    obs_shape, _, action_dim = shapes
    what = "world-model update only" if args.model_only else "world-model + SAC update"
    print(f"\n### {name} ({device.type}{threads}); suite {suite}, obs {obs_shape}, A={action_dim}; "
          f"batch {args.batch}; ms per {what} (median of {args.repeats} after {args.warmup} warm-up)\n")
    results = _measure(args, suite, shapes, device)
    others = [m for m in args.models if m != REFERENCE] if REFERENCE in args.models else []
    header = ["T"] + [f"{m} ms" for m in args.models] + [f"{m} / {REFERENCE}" for m in others]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for length in args.lengths:
        row = [str(length)] + [_cell(results[m][length]) for m in args.models]
        reference = results.get(REFERENCE, {}).get(length)
        for model in others:
            value = results[model][length]
            both = isinstance(value, float) and isinstance(reference, float)
            row.append(f"{value / reference:.1f}x" if both else "-")
        print("| " + " | ".join(row) + " |", flush=True)
    first, last = args.lengths[0], args.lengths[-1]
    growth = []
    for model in args.models:
        a, b = results[model][first], results[model][last]
        growth.append(f"{model} {b / a:.1f}x" if isinstance(a, float) and isinstance(b, float) else f"{model} -")
    print(f"\ngrowth from T={first} to T={last}: " + ", ".join(growth))


def _cell(value):
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.1f}"
