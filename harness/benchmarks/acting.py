"""`python -m harness.bench acting`: per-step acting latency of the offline track's policies.

    python -m harness.bench acting [--gin gin/offline/decision_transformer.gin gin/offline/decision_mamba.gin]
                                   [--overlay FILE ...] [--bind 'Name.param=value'] [--steps 1000]
                                   [--obs-dim 5] [--action-dim 1] [--device cpu|cuda]

Each policy is built from its gin file as `harness.run` builds it (context length from the
experiment) on random weights, then acts for --steps agent steps of one episode on random
observations, one `ReturnConditionedAgent.act` call per step (batch 1, the device synchronised
after each). The table gives the median milliseconds per call over three stretches of the episode:
the Decision Transformer's window stops growing after K steps, Decision Mamba's recurrent step
costs the same at every step.
"""
import statistics
import sys
import time

import numpy as np
import torch

from harness import config
from harness.cli import CliParser

DEFAULT_GIN = ["gin/offline/decision_transformer.gin", "gin/offline/decision_mamba.gin"]


def main(argv=None):
    parser = CliParser(prog="python -m harness.bench acting", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gin", nargs="+", default=DEFAULT_GIN)
    parser.add_argument("--overlay", nargs="*", default=[])
    parser.add_argument("--bind", action="append", default=[])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--obs-dim", type=int, default=5)
    parser.add_argument("--action-dim", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    stretches = [(0, min(20, args.steps)), (args.steps // 10, args.steps // 5), (args.steps - args.steps // 10, args.steps)]
    rows = []
    for path in args.gin:
        try:
            config.parse([path, *args.overlay], args.bind)
            experiment = config.make_experiment()
            policy = experiment.world_model(obs_shape=(args.obs_dim,), action_dim=args.action_dim,
                                            context_length=experiment.context_length)
        except (ValueError, config.ConfigError) as error:
            print(f"error: {config.one_line(error)}", file=sys.stderr)
            return 2
        agent = experiment.agent(policy=policy, action_dim=args.action_dim).to(device)
        times = _episode_times(agent, args, device)
        rows.append([experiment.label, str(experiment.context_length)]
                    + [f"{statistics.median(times[a:b]):.2f}" for a, b in stretches])
    print(f"device {args.device}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; "
          f"obs {args.obs_dim}, actions {args.action_dim}; gin overlays: {' '.join(args.overlay) or 'none'}")
    header = ["policy", "K"] + [f"ms/step, steps {a}-{b - 1}" for a, b in stretches]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def _episode_times(agent, args, device):
    rng = np.random.default_rng(0)
    state, times = agent.initial_state(1), []
    for t in range(args.steps):
        obs = rng.normal(size=(1, args.obs_dim))
        began = time.perf_counter()
        _, state = agent.act(state, [500.0 - t * 0.5], obs, [t])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1e3 * (time.perf_counter() - began))
    return times
