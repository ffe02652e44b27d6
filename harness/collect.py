"""Write an offline dataset (Minari format, harness.datasets) from one finished run.

    python -m harness.collect RUN_DIR --kind replay|expert|medium --episodes N --out datasets/<name>
                              [--checkpoint-step STEP] [--seed S] [--deterministic] [--device cpu|cuda|auto]

Kinds:
  replay  the last N complete episodes of the run's replay buffer (checkpoint/replay), as collected
          during training (random prefill included); no clean state is kept there.
  expert  N episodes of the run's final policy (checkpoint/state.pt).
  medium  N episodes of the policy kept at an earlier env step (`Schedule.keep_checkpoints_at`):
          --checkpoint-step names the mark, optional when the run kept exactly one.

Rollouts run in the run's own environment (its gin config: suite, task, noise) with fresh seeds
(--seed), sampling from the policy unless --deterministic. Observations are stored as the agent saw
them (noisy in the noisy-state suite) and the clean simulator state as infos/true_obs.

Exit status 0, or 2 for a user error (the run directory is not a finished run, has no checkpoint of
the kind asked, --out exists, ...): one line on stderr, nothing written.
"""
import pathlib
import sys

import numpy as np

from harness import config, datasets, rundir
from harness.cli import CliParser, fail


def parse_args(argv):
    parser = CliParser(prog="python -m harness.collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished run directory of python -m harness.run")
    parser.add_argument("--kind", required=True, choices=datasets.DATASET_KINDS)
    parser.add_argument("--episodes", type=int, required=True, help="episodes to write")
    parser.add_argument("--out", required=True, help="new dataset directory, e.g. datasets/cartpole_expert-v0")
    parser.add_argument("--checkpoint-step", type=int, help="medium: the Schedule.keep_checkpoints_at mark")
    parser.add_argument("--seed", type=int, default=0, help="seeds the rollouts' environment")
    parser.add_argument("--deterministic", action="store_true", help="the policy's mean action, not a sample")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return parser.parse_args(argv)


def load_run(run_dir):
    """(RunDirectory, run.json) of a finished run; ConfigError otherwise."""
    directory = rundir.RunDirectory(run_dir)
    info = directory.read_info()
    if info is None:
        raise config.ConfigError(f"{run_dir} is not a run directory (no {rundir.RUN_FILE})")
    if info.get("status") != rundir.DONE:
        raise config.ConfigError(f"run {run_dir} is {info.get('status')!r}, not 'done': collect from finished runs")
    if not directory.config.is_file():
        raise config.ConfigError(f"run {run_dir} has no {rundir.CONFIG_FILE}")
    return directory, info


def build(directory, seed, device):
    """The run's experiment, environment (seeded with `seed`), agent and schedule, from its config.gin."""
    from harness.experiment import Schedule
    config.parse([str(directory.config)])
    experiment = config.make_experiment()
    env = experiment.env_fn(suite=experiment.suite, task=experiment.task, seed=seed)
    world_model = experiment.world_model(obs_shape=env.obs_shape, action_dim=env.action_dim)
    agent = experiment.agent(world_model=world_model, action_dim=env.action_dim).to(device)
    return experiment, env, agent, Schedule()


def replay_episodes(directory, env, schedule, count):
    """The last `count` complete episodes of the run's replay buffer, oldest first."""
    from agents.replay import ReplayBuffer
    state = directory.load_state(map_location="cpu")
    if state is None:
        raise config.ConfigError(f"run {directory.path} has no checkpoint to read its replay from")
    replay = ReplayBuffer(schedule.replay_capacity, env.obs_shape, env.obs_dtype, env.action_dim)
    replay.load(directory.replay_dir, state["replay_total_added"])
    size = len(replay)
    order = (replay.total_added - size + np.arange(size)) % replay.capacity
    data = {key: value[order] for key, value in replay.data.items()}
    starts = np.flatnonzero(data["is_first"])
    episodes = []
    for begin, end in zip(starts, list(starts[1:]) + [size]):
        terminated = bool(data["is_terminal"][end - 1])
        if end - begin < env.max_episode_steps + 1 and not terminated:
            continue  # cut short by the end of the buffer
        steps = slice(begin + 1, end)
        episodes.append(datasets.Episode(
            obs=data["obs"][begin:end], actions=data["prev_action"][steps], rewards=data["reward"][steps],
            terminations=data["is_terminal"][steps],
            truncations=np.arange(end - begin - 1) == (end - begin - 2) if not terminated
            else np.zeros(end - begin - 1, bool)))
    if len(episodes) < count:
        raise config.ConfigError(f"the replay of {directory.path} holds {len(episodes)} complete episodes, "
                                 f"fewer than --episodes {count}")
    return episodes[-count:], None


def policy_state(directory, kind, mark, device):
    """(agent state_dict, env step it was taken at) of the final or a kept policy."""
    if kind == "expert":
        state = directory.load_state(map_location=device)
        if state is None:
            raise config.ConfigError(f"run {directory.path} has no checkpoint ({directory.state_file})")
        return state["agent"], state["counters"]["env_step"]
    steps = directory.kept_agent_steps()
    if not steps:
        raise config.ConfigError(f"run {directory.path} kept no earlier policy: train it with "
                                 "Schedule.keep_checkpoints_at = [<env step>, ...] for --kind medium")
    if mark is None and len(steps) > 1:
        raise config.ConfigError(f"run {directory.path} kept policies at env steps {steps}: choose one "
                                 "with --checkpoint-step")
    step = steps[0] if mark is None else mark
    if step not in steps:
        raise config.ConfigError(f"run {directory.path} kept no policy at env step {step} (kept: {steps})")
    env_step, agent = directory.load_agent(step, map_location=device)
    return agent, env_step


def rollout_episodes(env, agent, count, seed, deterministic):
    from harness.episodes import act_inputs  # obs_valid for the missing_state suite
    episodes = []
    for index in range(count):
        episode_seed = (seed * 1_000_003 + 500_009 * (index + 1)) % 2**32
        obs, info = env.reset(seed=episode_seed)
        observations, true_obs, actions, rewards, terminations, truncations = [obs], [info.get("true_obs")], [], [], [], []
        state = agent.initial_state(1)
        prev_action = np.zeros(env.action_dim, np.float32)
        is_first, done = True, False
        while not done:
            action, state = agent.act(state, obs[None], prev_action[None], [is_first], deterministic=deterministic,
                                      **act_inputs(info))
            obs, reward, terminated, truncated, info = env.step(action[0])
            observations.append(obs)
            true_obs.append(info.get("true_obs"))
            actions.append(action[0])
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            prev_action, is_first, done = action[0], False, terminated or truncated
        has_true = all(t is not None for t in true_obs)
        episodes.append(datasets.Episode(
            obs=np.stack(observations), actions=np.stack(actions).astype(np.float32),
            rewards=np.asarray(rewards, np.float64), terminations=np.asarray(terminations, bool),
            truncations=np.asarray(truncations, bool), true_obs=np.stack(true_obs) if has_true else None,
            seed=episode_seed))
    return episodes


def collect(args):
    """Everything after argument parsing; returns the dataset path. Raises ConfigError / DatasetError."""
    import torch
    if args.episodes < 1:
        raise config.ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    out = pathlib.Path(args.out)
    if out.exists():
        raise config.ConfigError(f"{out} exists; choose another --out or remove it")
    if args.kind != "medium" and args.checkpoint_step is not None:
        raise config.ConfigError("--checkpoint-step is for --kind medium only")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise config.ConfigError("--device cuda: no CUDA device is available")
    directory, info = load_run(args.run_dir)
    experiment, env, agent, schedule = build(directory, args.seed, device)
    if args.kind == "replay":
        episodes, policy_step = replay_episodes(directory, env, schedule, args.episodes)
    else:
        weights, policy_step = policy_state(directory, args.kind, args.checkpoint_step, device)
        agent.load_state_dict(weights)
        episodes = rollout_episodes(env, agent, args.episodes, args.seed, args.deterministic)
    metadata = {"kind": args.kind, "run": str(directory.path), "suite": experiment.suite,
                "task": experiment.task, "seed": args.seed, "run_seed": info.get("seed"),
                "method": info.get("method"), "variant": info.get("variant", ""),
                **env.conditions, "action_repeat": env.action_repeat, "policy_env_step": policy_step,
                "deterministic": bool(args.deterministic) if args.kind != "replay" else None}
    return datasets.write_dataset(out, episodes, metadata), episodes


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path, episodes = collect(args)
    except (config.ConfigError, rundir.RunDirectoryError, datasets.DatasetError) as error:
        return fail(error)
    except ValueError as error:  # a run whose config no longer builds (bad task, shapes)
        return fail(config.one_line(error))
    returns = [float(e.rewards.sum()) for e in episodes]
    print(f"wrote {path}: {len(episodes)} {args.kind} episodes, {sum(e.length for e in episodes)} steps, "
          f"return {np.mean(returns):.1f} +- {np.std(returns):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
