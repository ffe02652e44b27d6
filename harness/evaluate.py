"""Evaluate a saved run without training: `python -m harness.evaluate RUN_DIR [options]`.

Rebuilds the run from its own config.gin, loads the agent of a checkpoint (read only: the latest,
or one kept by `Schedule.keep_checkpoints_at`), runs deterministic-policy episodes and prints their
returns. The result is recorded in RUN_DIR/evaluations/<stamp>.json (with <stamp>.mp4 for
--video); the run's own run.json, metrics.jsonl, config.gin and checkpoint are never written, so a
run may be evaluated while it trains.

Episode i of an evaluation of the checkpoint at env step N starts from the reset seed that
training's evaluation at N used for its episode i (harness/episodes.py): evaluating the latest
checkpoint of a finished run with the run's Schedule.eval_episodes repeats its final evaluation.

Exit status: 0 evaluated; 2 a user error (no such run, no checkpoint at that step, a config that no
longer parses), printed as one line.
"""
import sys

import numpy as np

from harness import config, episodes, rundir
from harness.cli import CliParser, fail
from harness.device import DEVICE_HELP, device_arg, resolve_device


def checkpoint_arg(text):
    """'latest' -> None, else an env step (integer >= 0)."""
    import argparse
    if text == "latest":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 'latest' or an env step (integer), got {text!r}")
    return int(text)


def episodes_arg(text):
    import argparse
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def parse_args(argv):
    parser = CliParser(prog="python -m harness.evaluate", doc=__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding run.json, config.gin, checkpoint/)")
    parser.add_argument("--episodes", type=episodes_arg, metavar="N",
                        help="episodes to run (default: the run's Schedule.eval_episodes)")
    parser.add_argument("--checkpoint", type=checkpoint_arg, default=None, metavar="latest|STEP",
                        help="the latest checkpoint (default) or the agent kept at env step STEP")
    parser.add_argument("--video", action="store_true",
                        help="also write an mp4 of the first episode next to the result")
    parser.add_argument("--device", type=device_arg, default="auto", metavar="auto|cpu|cuda|cuda:N", help=DEVICE_HELP)
    return parser.parse_args(argv)


class Evaluation:
    """The rebuilt run: its experiment, schedule, evaluation env and agent (weights not loaded)."""

    def __init__(self, run_dir, device):
        from harness.experiment import Schedule
        if not run_dir.path.is_dir():
            raise rundir.RunDirectoryError(f"run directory not found: {run_dir.path}")
        info = run_dir.read_info()
        if info is None:
            raise rundir.RunDirectoryError(f"{run_dir.path} is not a run directory (no {rundir.RUN_FILE})")
        if not run_dir.config.is_file():
            raise rundir.RunDirectoryError(f"{run_dir.path} has no {rundir.CONFIG_FILE} to rebuild the run from")
        config.parse([str(run_dir.config)])
        self.experiment = config.make_experiment()
        try:
            self.schedule = Schedule()
            e = self.experiment
            self.env = e.env_fn(suite=e.suite, task=e.task, seed=e.seed + 1_000_003)
            world_model = e.world_model(obs_shape=self.env.obs_shape, action_dim=self.env.action_dim)
            self.agent = e.agent(world_model=world_model, action_dim=self.env.action_dim).to(device)
        except (ValueError, TypeError) as error:
            raise config.ConfigError(f"cannot rebuild the run from {run_dir.config}: {config.one_line(error)}") from error
        self.info = info

    def run(self, env_step, num_episodes, frames=None):
        """Returns of `num_episodes` deterministic episodes; frames of the first go to `frames`."""
        return [episodes.run_eval_episode(
                    self.agent, self.env,
                    episodes.eval_seed(self.experiment.seed, env_step, self.schedule.eval_every, i),
                    frames if i == 0 else None)
                for i in range(num_episodes)]


def evaluate(args):
    """Evaluate and record; returns (result record, path of the JSON written)."""
    import torch
    from harness import video
    device = resolve_device(args.device)
    run_dir = rundir.RunDirectory(args.run_dir)
    if args.video:
        try:
            video.check_available()
        except video.VideoUnavailableError as error:
            raise config.ConfigError(str(error)) from error
    evaluation = Evaluation(run_dir, device)
    env_step, agent_state = run_dir.load_agent(args.checkpoint, map_location=device)
    evaluation.agent.load_state_dict(agent_state)
    num_episodes = args.episodes or evaluation.schedule.eval_episodes
    stamp = run_dir.new_evaluation_stamp(env_step)
    frames = [] if args.video else None
    returns = evaluation.run(env_step, num_episodes, frames)
    video_name = None
    if frames is not None:
        video_name = video.write_mp4(run_dir.evaluation_file(stamp, ".mp4"), frames,
                                     evaluation.env.metadata["render_fps"]).name
    record = {"run": rundir.identity(evaluation.info), "checkpoint_env_step": env_step,
              "checkpoint": "latest" if args.checkpoint is None else args.checkpoint,
              "episodes": num_episodes, "returns": [float(r) for r in returns],
              "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
              "video": video_name, "device": device if device == "cpu" else torch.cuda.get_device_name(device),
              "git_commit": rundir.git_commit(), "versions": rundir.package_versions(),
              "evaluated_at": rundir.now_iso()}
    return record, run_dir.write_evaluation(stamp, record)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from envs.rendering import RenderingUnavailableError
    try:
        record, path = evaluate(args)
    except (config.ConfigError, rundir.RunDirectoryError, RenderingUnavailableError) as error:
        return fail(error)
    except OSError as error:
        return fail(f"cannot write the evaluation: {error.strerror or error}")
    print(f"{args.run_dir}: checkpoint at env step {record['checkpoint_env_step']}, {record['episodes']} "
          f"episodes: return {record['return_mean']:.1f} ± {record['return_std']:.1f}")
    print(f"wrote {path}" + (f" and {path.with_suffix('.mp4')}" if record["video"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
