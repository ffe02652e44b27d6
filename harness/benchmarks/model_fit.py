"""`python -m harness.bench model-fit`: fit a world model alone on random-policy data, compare variants.

Data: --train-episodes and --heldout-episodes episodes of uniformly random actions from the task of
the experiment's suite (`make_env` as bound by the experiment file, so noisy cartpole_swingup has
observation and action noise 0.3), from different seeds. Observations are standardised with the
training episodes' statistics (`agents.obs_normaliser`, as a run does at the end of prefill).

Each variant is the experiment file (default gin/kalmamba_noisy.gin, full size) plus its bindings
and any --bind; the agent it builds (`Experiment.agent`) does --updates world-model updates
(`LatentSAC.update_world_model`: loss, backward, gradient clip, Adam) on windows of
`Experiment.context_length` sampled by `agents.replay.ReplayBuffer` (inside one episode), batch
`Schedule.batch_size`. Then, in eval mode, the ELBO per step on every non-overlapping window of
the held-out episodes.

Prints one markdown table: per variant the held-out ELBO (nats per step), its difference to the
variant 'no_regulariser' when that is measured, the fraction of updates whose gradient norm exceeded
the model's clip, the median gradient norm, the regulariser's Mahalanobis distance summed over Z and
its median / maximum over the latent dimensions (averaged over the last 20 updates), the median over
Z on the held-out windows (eval mode: no dropout), and seconds per update. `--trace-every N` adds a
second table, each variant's training metrics averaged over blocks of N updates (ELBO, the
distance and its parts (m - mu+)^2 and mu+^2, filtered variance, mean A and Q, clip, grad norm).
`--device cuda` fits on the GPU (eager updates).
"""
import argparse
import datetime
import sys
import time

import numpy as np
import torch

from harness import config

VARIANTS = {
    "default": [],
    "no_output_norm": ["KalMamba.output_norm = False"],
    "no_regulariser": ["KalMamba.regulariser_weight = 0.0"],
    "sum_reduction": ["KalMamba.regulariser_reduction = 'sum'"],
    "bare_mamba": ["KalMamba.backbone_residual = False"],
    "detached_input": ["KalMamba.detach_backbone_input = True"],
    "no_mc_dropout": ["KalMamba.dropout = 0.0"],
    "wide_scale_bounds": ["KalMamba.transition_scale_bounds = (0.1, 0.99)"],
    "paper_sum_bare_detached": ["KalMamba.regulariser_reduction = 'sum'", "KalMamba.backbone_residual = False",
                                "KalMamba.detach_backbone_input = True"],
}
LAST = 20  # updates averaged for the regulariser columns


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        config.parse([args.experiment, *args.gin], args.bind)
        experiment = config.make_experiment()
    except (ValueError, config.ConfigError) as error:
        print(f"error: {config.one_line(error)}", file=sys.stderr)
        return 2
    print(f"command: python -m harness.bench model-fit {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"date: {datetime.date.today().isoformat()}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; "
          f"{experiment.suite} {experiment.task}; {args.train_episodes} training / {args.heldout_episodes} held-out "
          f"random episodes; {args.updates} updates\n")
    train = _collect(experiment, args.train_episodes, seed=args.seed)
    heldout = _collect(experiment, args.heldout_episodes, seed=args.seed + 1_000)
    rows = {}
    header = ["variant", "held-out ELBO", "vs no_regulariser", "clip fired", "median grad norm",
              "Mahalanobis (sum over Z)", "per-dim median", "per-dim max", "held-out per-dim median",
              "s / update"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1), flush=True)
    for name in args.variants:
        rows[name] = _fit(args, name, train, heldout)
        print(_row(name, rows[name], rows.get("no_regulariser")), flush=True)
    if "no_regulariser" in rows and args.variants[0] != "no_regulariser":
        print("\n(vs no_regulariser is filled in for the rows measured after it)")
    if args.trace_every:
        _print_traces(rows, args.trace_every)
    return 0


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m harness.bench model-fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="gin/kalmamba_noisy.gin", help="experiment gin file")
    parser.add_argument("--gin", action="append", default=[], metavar="FILE", help="extra gin overlay (repeatable)")
    parser.add_argument("--bind", action="append", default=[], metavar="BINDING",
                        help="gin binding applied to every variant (repeatable)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["no_regulariser", "default", "sum_reduction"])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--train-episodes", type=int, default=10)
    parser.add_argument("--heldout-episodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    parser.add_argument("--trace-every", type=int, default=0, metavar="N",
                        help="also print each variant's training trace, averaged over blocks of N updates")
    args = parser.parse_args(argv)
    if args.updates < 1 or args.train_episodes < 1 or args.heldout_episodes < 1 or args.trace_every < 0:
        parser.error("updates and episode counts must be positive, --trace-every not negative")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


def _collect(experiment, episodes, seed):
    """`episodes` random-action episodes as arrays of agent steps (the replay's conventions)."""
    from agents.replay import ReplayBuffer

    env = experiment.env_fn(suite=experiment.suite, task=experiment.task, seed=seed)
    rng = np.random.default_rng(seed)
    steps = episodes * (env.max_episode_steps + 1)
    replay = ReplayBuffer(steps, env.obs_shape, env.obs_dtype, env.action_dim)
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed * 1_000 + episode)
            replay.add(obs, None, 0.0, is_first=True)
            done = False
            while not done:
                action = rng.uniform(-1.0, 1.0, env.action_dim).astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                replay.add(obs, action, reward, is_first=False, is_terminal=terminated)
                done = terminated or truncated
    finally:
        env.close()
    return replay


def _heldout_windows(replay, length):
    """Every non-overlapping window of `length` steps inside one episode, as one batch (N, T, ...)."""
    data = {key: value[:len(replay)] for key, value in replay.data.items()}
    starts = np.flatnonzero(data["is_first"])
    ends = np.append(starts[1:], len(replay))
    index = [np.arange(s, s + length) for first, end in zip(starts, ends)
             for s in range(first, end - length + 1, length)]
    return {key: value[np.stack(index)] for key, value in data.items()}


def _fit(args, name, train, heldout):
    config.parse([args.experiment, *args.gin], [*VARIANTS[name], *args.bind])
    experiment = config.make_experiment()
    from harness.experiment import Schedule
    schedule = Schedule()
    torch.manual_seed(args.seed)
    world_model = experiment.world_model(obs_shape=train.data["obs"].shape[1:], action_dim=train.data["prev_action"].shape[1])
    agent = experiment.agent(world_model=world_model, action_dim=train.data["prev_action"].shape[1]).to(args.device)
    agent.fit_obs_normaliser(train.data["obs"][:len(train)])
    rng = np.random.default_rng(args.seed)

    def to_device(batch):
        batch = {key: torch.as_tensor(value, device=args.device) for key, value in batch.items()}
        batch["obs"] = agent.obs_normaliser(batch["obs"])
        return batch

    history, start = [], time.perf_counter()
    for _ in range(args.updates):
        batch = to_device(train.sample(schedule.batch_size, experiment.context_length, rng))
        metrics, _ = agent.update_world_model(batch)
        history.append({key: value.detach() for key, value in metrics.items()})
    seconds = (time.perf_counter() - start) / args.updates

    world_model.eval()
    with torch.no_grad():
        _, metrics, _ = world_model.loss(to_device(_heldout_windows(heldout, experiment.context_length)))
    last = history[-LAST:]

    return {"elbo": float(metrics["model/elbo"]), "clipped": _mean_of("model/grad_clipped", history),
            "grad_norm": float(torch.stack([m["model/grad_norm"] for m in history]).median()),
            "mahalanobis": _mean_of("model/mahalanobis", last),
            "dim_median": _mean_of("model/mahalanobis_dim_median", last),
            "dim_max": _mean_of("model/mahalanobis_dim_max", last),
            "heldout_dim_median": float(metrics.get("model/mahalanobis_dim_median", float("nan"))), "seconds": seconds,
            "history": history}


def _mean_of(key, updates):
    """The mean of metric `key` over a list of update metrics, NaN where the model does not log it."""
    return float(torch.stack([m[key] for m in updates]).mean()) if key in updates[0] else float("nan")


TRACED = {"ELBO": "model/elbo", "per-dim median": "model/mahalanobis_dim_median",
          "per-dim max": "model/mahalanobis_dim_max", "(m - mu+)^2": "model/backbone_sq_error",
          "mu+^2": "model/filtered_mean_sq", "filtered var": "model/filtered_var",
          "A": "model/transition_scale", "Q": "model/transition_var", "clip fired": "model/grad_clipped",
          "grad norm": "model/grad_norm"}


def _print_traces(rows, every):
    """Per variant, the training metrics of TRACED averaged over blocks of `every` updates."""
    print("\n| variant | updates | " + " | ".join(TRACED) + " |")
    print("|---|---:|" + "---:|" * len(TRACED))
    for name, result in rows.items():
        history = result["history"]
        for end in range(every, len(history) + 1, every):
            block = history[end - every:end]
            values = [_mean_of(key, block) for key in TRACED.values()]
            print(f"| {name} | {end} | " + " | ".join(f"{v:.4g}" for v in values) + " |")


def _row(name, result, reference):
    delta = f"{result['elbo'] - reference['elbo']:+.2f}" if reference is not None else "-"
    return (f"| {name} | {result['elbo']:.2f} | {delta} | {100 * result['clipped']:.0f}% | {result['grad_norm']:.1f} | "
            f"{result['mahalanobis']:.0f} | {result['dim_median']:.2f} | {result['dim_max']:.1f} | "
            f"{result['heldout_dim_median']:.2f} | {result['seconds']:.2f} |")
