"""The training loop of one run, split into small steps (collect, update, evaluate, checkpoint).

Everything happens at episode granularity: evaluations and checkpoints are taken at the end of the
first training episode that reaches their env-step mark, so a checkpoint never has to store a
simulator mid-episode. Evaluation marks are 0, eval_every, 2 eval_every, ... and the final step;
with the default 1000-step episodes and eval_every a multiple of 1000 they fall exactly on the marks.
Prefill (uniform random actions) also lasts whole episodes.

Train metrics stay tensors on the device between log lines (no host synchronisation per update);
each train line averages them with one transfer and fails the run, naming the metric, if any is
not finite.

Resuming restores networks, optimizers, replay, counters, metrics not yet logged and RNG states
from checkpoint/, and first truncates metrics.jsonl back to its length at that checkpoint, so an
interrupted run ends with the eval and train points of an uninterrupted one (the same env steps;
the values differ, since the simulator restarts its episode and GPU kernels are not bitwise
deterministic).
"""
import collections
import random
import sys
import time

import numpy as np
import torch
import tqdm

from agents.replay import ReplayBuffer
from harness import episodes, loggers, rng_state, train_metrics, video, video_strip
from harness.belief_metrics import BeliefMetrics
from harness.experiment import Schedule


class Runner:
    def __init__(self, experiment, run_dir, schedule=None, device="cpu", tensorboard=False,
                 progress=True, video_every_eval=False, wandb=None):
        self.experiment = experiment
        self.run_dir = run_dir
        self.schedule = schedule or Schedule()
        self.device = torch.device(device)
        self.progress = progress
        self.logger_options = {"tensorboard": tensorboard, "wandb": wandb}  # see harness.loggers
        self.logger = None  # opened in run(), once the run directory is in place
        self._seed_everything(experiment.seed)
        self.env = experiment.env_fn(suite=experiment.suite, task=experiment.task, seed=experiment.seed)
        self.eval_env = experiment.env_fn(suite=experiment.suite, task=experiment.task,
                                          seed=experiment.seed + 1_000_003)
        world_model = experiment.world_model(obs_shape=self.env.obs_shape, action_dim=self.env.action_dim)
        self.agent = experiment.agent(world_model=world_model, action_dim=self.env.action_dim).to(self.device)
        self._check_schedule()
        self.video_every_eval = video_every_eval  # --video; else Schedule.video_every decides
        if video_every_eval or self.schedule.video_every:
            video.check_available()
            self.eval_env.render()  # fails here, before anything is written, when OpenGL is missing
            video_strip.strip_for(self.agent)  # a bad ModelStrip binding fails here; the config records it
        self.replay = ReplayBuffer(self.schedule.replay_capacity, self.env.obs_shape, self.env.obs_dtype,
                                   self.env.action_dim)
        self.rng = np.random.default_rng(experiment.seed)
        self.belief_metrics = BeliefMetrics()  # off unless bound on (the partially observed suites' gin)
        self.counters = {"env_step": 0, "agent_step": 0, "updates": 0, "episodes": 0, "prefill_agent_steps": 0,
                         "next_eval": 0, "next_checkpoint": self.schedule.checkpoint_every,
                         "next_log": 0, "wall_clock_s": 0.0, "metrics_bytes": 0,
                         "last_log_env_step": 0, "last_log_clock": 0.0, "eval_s": 0.0, "last_log_eval_s": 0.0,
                         "next_video": 0, "kept_checkpoints": 0}
        self.last_eval_return = float("nan")
        self._train_metrics = collections.defaultdict(list)
        self._episode_returns = []

    def _check_schedule(self):
        """Refuse budgets under which the run would train on nothing and still end 'done'."""
        s, ctx = self.schedule, self.experiment.context_length
        if s.total_env_steps <= s.prefill_env_steps:
            raise ValueError(f"Schedule.total_env_steps ({s.total_env_steps}) must exceed "
                             f"Schedule.prefill_env_steps ({s.prefill_env_steps}): no update would be made")
        if ctx > s.replay_capacity:
            raise ValueError(f"Experiment.context_length ({ctx}) exceeds Schedule.replay_capacity "
                             f"({s.replay_capacity} agent steps): no training window fits in replay")
        episodes = -(-s.total_env_steps // (self.env.max_episode_steps * self.env.action_repeat))
        collected = episodes * (self.env.max_episode_steps + 1)  # + the first observation of each
        if ctx > collected:
            raise ValueError(f"Experiment.context_length ({ctx}) exceeds the {collected} agent steps "
                             f"the run collects in {s.total_env_steps} env steps")

    # -- top level -------------------------------------------------------------------------------
    def run(self, state):
        """Train until `total_env_steps`, continuing from `state` (`run_dir.load_state()`), or from the
        start when it is None (which first empties metrics.jsonl: the caller decides, harness.run)."""
        self._restore(state)
        self.logger = loggers.open_loggers(self.run_dir, **self.logger_options)
        bar = self._progress_bar()
        start, start_clock = time.perf_counter(), self.counters["wall_clock_s"]
        try:
            if self.counters["next_eval"] == 0:
                self._evaluate(start_clock)
            while self.counters["env_step"] < self.schedule.total_env_steps:
                steps_before = self.counters["env_step"]
                self._run_one_episode()
                clock = start_clock + time.perf_counter() - start
                bar.update(self.counters["env_step"] - steps_before)
                self._end_of_episode(clock)
                bar.set_postfix(eval_return=f"{self.last_eval_return:.1f}",
                                sps=f"{self.counters['env_step'] / max(clock, 1e-9):.0f}")
        finally:
            bar.close()
            self.logger.close()
        self.counters["wall_clock_s"] = start_clock + time.perf_counter() - start
        if self.counters["updates"] == 0:
            raise RuntimeError("the run ended without a single gradient update")
        return self.counters

    def _end_of_episode(self, clock):
        c, s = self.counters, self.schedule
        c["wall_clock_s"] = clock
        if c["env_step"] >= c["next_log"]:
            self._log_train(clock)
        finished = c["env_step"] >= s.total_env_steps
        if c["env_step"] >= c["next_eval"] or finished:
            self._evaluate(clock)
            self._checkpoint()
        elif c["env_step"] >= c["next_checkpoint"]:
            self._checkpoint()

    # -- the loop's pieces without its schedule (timed by `python -m harness.bench e2e`) ---------
    def train_episodes_until(self, env_step):
        """Whole training episodes (prefill or policy acting, replay inserts, the updates due) until
        the env-step counter reaches `env_step`; no evaluation, checkpoint, log line or progress bar."""
        while self.counters["env_step"] < env_step:
            self._run_one_episode()

    def eval_returns(self, episodes=None):
        """Returns of the first `episodes` (default `Schedule.eval_episodes`: all) episodes an
        evaluation at the current env step runs, with nothing written, counted or rendered."""
        episodes = self.schedule.eval_episodes if episodes is None else episodes
        return [self._run_eval_episode(i) for i in range(episodes)]

    # -- collecting ------------------------------------------------------------------------------
    def _run_one_episode(self):
        c = self.counters
        random_policy = c["env_step"] < self.schedule.prefill_env_steps
        if not random_policy and not self.agent.obs_normaliser_fitted:
            # once, when prefill ends: statistics of the random episodes (a resumed run has them from its checkpoint)
            self.agent.fit_obs_normaliser(self.replay.valid_observations())
        obs, info = self.env.reset(seed=self.experiment.seed * 100_003 + c["episodes"])
        self.replay.add(obs, None, 0.0, is_first=True, obs_valid=info.get("obs_valid"))
        state = self.agent.initial_state(1)
        prev_action = np.zeros(self.env.action_dim, np.float32)
        is_first, episode_return, done = True, 0.0, False
        while not done:
            if random_policy:
                action = self.rng.uniform(-1.0, 1.0, self.env.action_dim).astype(np.float32)
            else:
                action, state = self.agent.act(state, obs[None], prev_action[None], [is_first],
                                               **episodes.act_inputs(info))
                action = action[0]
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.replay.add(obs, action, reward, is_first=False, is_terminal=terminated,
                            obs_valid=info.get("obs_valid"))
            c["env_step"] += info.get("env_steps", self.env.action_repeat)
            c["agent_step"] += 1
            c["prefill_agent_steps"] += random_policy
            episode_return += reward
            prev_action, is_first, done = action, False, terminated or truncated
            self._run_due_updates()
        c["episodes"] += 1
        self._episode_returns.append(episode_return)

    def _run_due_updates(self):
        s, c = self.schedule, self.counters
        due = (c["agent_step"] - c["prefill_agent_steps"]) // s.agent_steps_per_update
        if due <= 0 or len(self.replay) < self.experiment.context_length:
            return
        while c["updates"] < due:
            batch = self.replay.sample(s.batch_size, self.experiment.context_length, self.rng)
            for key, value in self.agent.update(batch).items():
                self._train_metrics[key].append(value.detach() if torch.is_tensor(value)
                                                else torch.tensor(float(value), device=self.device))
            c["updates"] += 1

    # -- evaluating and logging -------------------------------------------------------------------
    def _evaluate(self, clock):
        c = self.counters
        began = time.perf_counter()
        frames = [] if self._video_due() else None
        recorder = self.belief_metrics.recorder(self.agent)  # None when belief metrics are off
        returns = [self._run_eval_episode(i, frames if i == 0 else None, recorder)
                   for i in range(self.schedule.eval_episodes)]
        if frames is not None:
            video.write_mp4(self.run_dir.video_file(c["env_step"]), frames, self.eval_env.metadata["render_fps"])
        belief = self.belief_metrics.compute(recorder)
        c["eval_s"] += time.perf_counter() - began
        self.last_eval_return = float(np.mean(returns))
        record = {"kind": "eval", "env_step": c["env_step"], "return_mean": self.last_eval_return,
                  "return_std": float(np.std(returns)), "returns": [float(r) for r in returns],
                  "wall_clock_s": round(clock, 3), **belief}
        self.logger.write(record)
        while c["next_eval"] <= c["env_step"]:
            c["next_eval"] += self.schedule.eval_every

    def _run_eval_episode(self, index, frames=None, recorder=None):
        seed = episodes.eval_seed(self.experiment.seed, self.counters["env_step"], self.schedule.eval_every, index)
        return episodes.run_eval_episode(self.agent, self.eval_env, seed, frames, recorder)

    def _video_due(self):
        c, every = self.counters, self.schedule.video_every
        if not (self.video_every_eval or every) or c["env_step"] < c["next_video"]:
            return False
        while every and c["next_video"] <= c["env_step"]:
            c["next_video"] += every
        return True

    def _log_train(self, clock):
        c = self.counters
        record = {"kind": "train", "env_step": c["env_step"], "agent_step": c["agent_step"],
                  "updates": c["updates"], "episodes": c["episodes"],
                  "env_steps_per_s": c["env_step"] / max(clock, 1e-9),  # since the start, prefill included
                  # since the previous train line, evaluation time excluded: the training loop's speed
                  "interval_env_steps_per_s": (c["env_step"] - c["last_log_env_step"])
                  / max(clock - c["last_log_clock"] - (c["eval_s"] - c["last_log_eval_s"]), 1e-9),
                  "train/episode_return": float(np.mean(self._episode_returns)) if self._episode_returns else None}
        record.update(train_metrics.mean_on_host(self._train_metrics))
        self.logger.write(record)
        train_metrics.check_finite(record, f"env step {c['env_step']}")
        self._train_metrics.clear()
        self._episode_returns.clear()
        c["last_log_env_step"], c["last_log_clock"], c["last_log_eval_s"] = c["env_step"], clock, c["eval_s"]
        while c["next_log"] <= c["env_step"]:
            c["next_log"] += self.schedule.log_every

    # -- checkpointing -----------------------------------------------------------------------------
    def _checkpoint(self):
        c = self.counters
        while c["next_checkpoint"] <= c["env_step"]:
            c["next_checkpoint"] += self.schedule.checkpoint_every
        c["metrics_bytes"] = self.run_dir.metrics_size()
        marks_passed = sum(mark <= c["env_step"] for mark in self.schedule.keep_checkpoints_at)
        if marks_passed > c["kept_checkpoints"]:
            self.run_dir.save_kept_agent(c["env_step"], self.agent.state_dict())
            c["kept_checkpoints"] = marks_passed
        self.replay.save(self.run_dir.replay_dir)
        self.run_dir.save_state({
            "counters": dict(c),
            "agent": self.agent.state_dict(),
            "replay_total_added": self.replay.total_added,
            # metrics averaged into the next train line and the last eval: a resumed run writes
            # the same lines as an uninterrupted one even when marks are not aligned
            "pending": {"train_metrics": dict(self._train_metrics),
                        "episode_returns": list(self._episode_returns),
                        "last_eval_return": self.last_eval_return},
            "rng": rng_state.capture(self.rng),
        })
        self.run_dir.update_info(env_steps=c["env_step"], checkpoint_env_step=c["env_step"],
                                 wall_clock_s=round(c["wall_clock_s"], 3))

    def _restore(self, state):
        if state is None:
            self.run_dir.truncate_metrics(0)
            return
        self.counters.update(state["counters"])
        for key, values in state["pending"]["train_metrics"].items():  # floats in older checkpoints
            self._train_metrics[key] = [torch.as_tensor(v, device=self.device) for v in values]
        self._episode_returns.extend(state["pending"]["episode_returns"])
        self.last_eval_return = state["pending"]["last_eval_return"]
        self.agent.load_state_dict(state["agent"])
        self.replay.load(self.run_dir.replay_dir, state["replay_total_added"])
        rng_state.restore(self.rng, state["rng"])
        self.run_dir.truncate_metrics(self.counters["metrics_bytes"])
        self.run_dir.remove_kept_agents_after(self.counters["env_step"])

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _progress_bar(self):
        return tqdm.tqdm(total=self.schedule.total_env_steps, initial=self.counters["env_step"],
                         unit="env step", disable=not self.progress, file=sys.stderr,
                         mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
