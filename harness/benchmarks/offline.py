"""`python -m harness.bench offline`: updates/s of the offline track's training step, per policy, per
way of drawing its training windows and per execution mode.

    python -m harness.bench offline [--gin gin/offline/decision_transformer.gin gin/offline/decision_mamba.gin]
                                    [--overlay FILE ...] [--bind 'Name.param=value'] [--updates 300]
                                    [--episodes 100] [--episode-length 500] [--obs-dim 24] [--action-dim 6]
                                    [--device cpu|cuda]

Each policy is built from its gin file as `harness.run` builds it (context length, batch size and
optimiser from the experiment) on a random dataset of --episodes episodes, then makes --updates
training steps in a loop, as `OfflineRunner` does: with windows drawn by the numpy `WindowSampler`
on the host (each update then copies its batch to the device) and by the `DeviceWindowSampler` on
the device, eagerly, and on CUDA also with the update recorded as a CUDA graph (what runs use
there). Every row starts from the same weights. The device is synchronised only before and after
each loop, so the rate includes whatever the loop waits for. Defaults: walker_walk's shapes, 100
episodes of 500 agent steps.
"""
import copy
import sys
import time

import gin
import numpy as np
import torch

from harness import config, datasets
from harness.cli import CliParser

DEFAULT_GIN = ["gin/offline/decision_transformer.gin", "gin/offline/decision_mamba.gin"]


def main(argv=None):
    parser = CliParser(prog="python -m harness.bench offline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gin", nargs="+", default=DEFAULT_GIN)
    parser.add_argument("--overlay", nargs="*", default=[])
    parser.add_argument("--bind", action="append", default=[])
    parser.add_argument("--updates", type=int, default=300, help="timed updates per row (after 20 warm-up)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--episode-length", type=int, default=500, help="agent steps per episode")
    parser.add_argument("--obs-dim", type=int, default=24)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    rows = []
    for path in args.gin:
        try:
            config.parse([path, *args.overlay], args.bind)
            experiment = config.make_experiment()
            batch_size = gin.query_parameter("Offline.batch_size")
            policy = experiment.world_model(obs_shape=(args.obs_dim,), action_dim=args.action_dim,
                                            context_length=experiment.context_length)
        except (ValueError, config.ConfigError) as error:
            print(f"error: {config.one_line(error)}", file=sys.stderr)
            return 2
        host = datasets.WindowSampler(_random_dataset(args), experiment.context_length)
        policy.set_obs_normalisation(host.obs.mean(0), host.obs.std(0))
        on_device = datasets.DeviceWindowSampler(host, device)
        rng = np.random.default_rng(0)
        cases = [("host (numpy)", lambda: host.sample(batch_size, rng), "none"),
                 ("device", lambda: on_device.sample(batch_size), "none")]
        if device.type == "cuda":
            cases.append(("device", lambda: on_device.sample(batch_size), "graph"))
        for name, draw, mode in cases:
            agent = experiment.agent(policy=copy.deepcopy(policy), action_dim=args.action_dim, compile=mode)
            seconds = _loop_seconds(agent.to(device), draw, args.updates, device)
            rows.append([experiment.label, name, mode, str(batch_size), str(experiment.context_length),
                         f"{args.updates / seconds:.1f}", f"{1e3 * seconds / args.updates:.2f}"])
    print(f"device {args.device}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; "
          f"dataset {args.episodes} x {args.episode_length} steps, obs {args.obs_dim}, actions {args.action_dim}; "
          f"gin overlays: {' '.join(args.overlay) or 'none'}")
    header = ["policy", "windows drawn on", "compile", "batch", "K", "updates/s", "ms/update"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def _random_dataset(args):
    rng = np.random.default_rng(0)
    T = args.episode_length
    episodes = [datasets.Episode(obs=rng.normal(size=(T + 1, args.obs_dim)).astype(np.float32),
                                 actions=rng.uniform(-1, 1, (T, args.action_dim)).astype(np.float32),
                                 rewards=rng.uniform(0, 1, T), terminations=np.zeros(T, bool),
                                 truncations=np.arange(T) == T - 1)
                for _ in range(args.episodes)]
    return datasets.OfflineDataset("random", episodes, {"kind": "expert"})


def _loop_seconds(agent, draw, updates, device):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(20):
        agent.update(draw())
    sync()
    began = time.perf_counter()
    for _ in range(updates):
        agent.update(draw())
    sync()
    return time.perf_counter() - began
