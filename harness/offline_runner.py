"""The offline track's training loop: a return-conditioned policy learns from a fixed dataset.

Chosen by gin (`Experiment.runner = @OfflineRunner`, see gin/offline/), called by `harness.run`
exactly as the online `Runner` (attributes env, device, schedule, last_eval_return, dataset_kind;
`run(state)`), and writes the same run directory (results/README.md) through harness.rundir, one level deeper by
default: `.../<task>/<dataset directory name>/ctx<K>/seed<k>`.

No environment step is taken for training, so the x axis is gradient steps: metrics lines carry
them in `env_step` (the contract's x axis; also written as `gradient_step`), and run.json's
`env_steps` / `total_env_steps` count gradient steps. Eval lines add `target_return` (the return
the policy was conditioned on), and `act_ms_per_step`: the median wall clock of one acting call,
which acts for all `act_batch` evaluation episodes at once (`evaluate_episodes`; batch-1 latencies
are `python -m harness.bench acting`'s).

Building refuses, with one-line errors (exit 2 from harness.run), a missing or malformed dataset,
one of another suite, task or noise than the experiment's environment, and a dataset whose
observation or action shape differs from the task's.

The world model factory of the experiment builds the policy
(`experiment.world_model(obs_shape, action_dim, context_length=K)`, e.g. `@DecisionMamba`) and its
agent factory the learner (`experiment.agent(policy=, action_dim=)`, `@ReturnConditionedAgent`).
"""
import collections
import math
import pathlib
import random
import re
import statistics
import sys
import time

import gin
import numpy as np
import torch
import tqdm

from harness import datasets, rng_state, train_metrics
from harness.experiment import check_int
from harness.tensorboard import TensorBoardWriter


@gin.configurable
class Offline:
    """The dataset and the budgets of one offline run, counted in gradient steps.

    Args:
      dataset: path of a dataset directory written by `python -m harness.collect`; `{task}` in it
        stands for Experiment.task, so one binding serves every task of a sweep
        ('datasets/{task}-expert-v0', gin/sweeps/offline_expert.gin).
      gradient_steps: training budget (DT / Decision Mamba: 10 iterations x 10k steps).
      batch_size: windows per gradient step.
      eval_every: gradient steps between evaluations (also at step 0 and at the end).
      eval_episodes: environment episodes per evaluation.
      target_return: return-to-go the policy is conditioned on at the start of an evaluation
        episode; None takes the highest episode return in the dataset.
      log_every, checkpoint_every: gradient steps between train lines / checkpoints.
    """

    def __init__(self, dataset=None, gradient_steps=100_000, batch_size=64, eval_every=10_000,
                 eval_episodes=10, target_return=None, log_every=1_000, checkpoint_every=10_000):
        if not isinstance(dataset, str) or not dataset:
            raise ValueError("Offline.dataset is not set: --bind \"Offline.dataset = 'datasets/<name>'\"")
        self.dataset = dataset
        self.gradient_steps = check_int("Offline.gradient_steps", gradient_steps, 1)
        self.batch_size = check_int("Offline.batch_size", batch_size, 1)
        self.eval_every = check_int("Offline.eval_every", eval_every, 1)
        self.eval_episodes = check_int("Offline.eval_episodes", eval_episodes, 1)
        self.log_every = check_int("Offline.log_every", log_every, 1)
        self.checkpoint_every = check_int("Offline.checkpoint_every", checkpoint_every, 1)
        if target_return is not None and not (isinstance(target_return, (int, float))
                                              and math.isfinite(target_return)):
            raise ValueError(f"Offline.target_return must be a number or None, got {target_return!r}")
        self.target_return = target_return

    def dataset_for(self, task: str) -> str:
        """The dataset path of the run on `task` (`{task}` replaced)."""
        return self.dataset.replace("{task}", task)

    @property
    def total_env_steps(self):
        """The run's budget on the contract's x axis: gradient steps (module docstring)."""
        return self.gradient_steps


@gin.configurable
class OfflineRunner:
    @staticmethod
    def run_dir_level(task):
        """The default run directory's level for the dataset of the run on `task`: its directory
        name (runs on two datasets of one task must not share a directory). Never raises: a missing
        binding is reported when the runner is built."""
        try:
            name = pathlib.Path(Offline().dataset_for(task)).resolve().name
        except ValueError:
            name = "no_dataset"
        return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", name).lstrip(".") or "dataset"

    def __init__(self, experiment, run_dir, schedule=None, device="cpu", tensorboard=False, progress=True):
        self.experiment, self.run_dir = experiment, run_dir
        self.schedule = schedule or Offline()
        self.device = torch.device(device)
        self.progress, self.use_tensorboard, self.tensorboard = progress, tensorboard, None
        random.seed(experiment.seed)
        np.random.seed(experiment.seed % 2**32)
        torch.manual_seed(experiment.seed)
        self.dataset = datasets.read_dataset(self.schedule.dataset_for(experiment.task))
        self.dataset_kind = self.dataset.kind
        self.env = experiment.env_fn(suite=experiment.suite, task=experiment.task,
                                     seed=experiment.seed + 1_000_003)
        self._check_dataset()
        self._envs = [self.env]
        policy = experiment.world_model(obs_shape=self.env.obs_shape, action_dim=self.env.action_dim,
                                        context_length=experiment.context_length)
        windows = datasets.WindowSampler(self.dataset, experiment.context_length)
        policy.set_obs_normalisation(windows.obs.mean(0), windows.obs.std(0))
        self.sampler = datasets.DeviceWindowSampler(windows, self.device)
        self.agent = experiment.agent(policy=policy, action_dim=self.env.action_dim).to(self.device)
        returns = self.dataset.returns()
        self.target_return = float(returns.max() if self.schedule.target_return is None
                                   else self.schedule.target_return)
        self.counters = {"env_step": 0, "next_eval": 0, "next_log": self.schedule.log_every,
                         "next_checkpoint": self.schedule.checkpoint_every, "wall_clock_s": 0.0,
                         "metrics_bytes": 0, "eval_s": 0.0, "last_log_step": 0, "last_log_clock": 0.0,
                         "last_log_eval_s": 0.0}
        self.last_eval_return = float("nan")
        self._train_metrics = collections.defaultdict(list)

    def _check_dataset(self):
        d, e, env = self.dataset, self.experiment, self.env
        where = f"dataset {d.path}"
        for field, mine in (("suite", e.suite), ("task", e.task)):
            if d.metadata[field] != mine:
                raise datasets.DatasetError(f"{where} is of {field} {d.metadata[field]!r} but the experiment's "
                                            f"is {mine!r}")
        if d.obs_shape != tuple(env.obs_shape) or d.action_dim != env.action_dim:
            raise datasets.DatasetError(f"{where} has observations {d.obs_shape} and actions ({d.action_dim},) "
                                        f"but {e.task} ({e.suite}) has {tuple(env.obs_shape)} and "
                                        f"({env.action_dim},)")
        for field, value in env.conditions.items():
            if d.conditions.get(field) is not None and not math.isclose(d.conditions[field], value):
                raise datasets.DatasetError(f"{where} was collected with {field} {d.conditions[field]} but the "
                                            f"environment has {value}")

    # -- top level -------------------------------------------------------------------------------
    def run(self, state):
        """Train for `gradient_steps`, continuing from `state` (a loaded checkpoint) if given."""
        self._restore(state)
        if self.use_tensorboard:
            self.tensorboard = TensorBoardWriter(self.run_dir.path / "tb")
        c, s = self.counters, self.schedule
        bar = tqdm.tqdm(total=s.gradient_steps, initial=c["env_step"], unit="update", disable=not self.progress,
                        file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
        start, start_clock = time.perf_counter(), c["wall_clock_s"]
        clock = lambda: start_clock + time.perf_counter() - start
        try:
            if c["next_eval"] == 0:
                self._evaluate(clock())
            while c["env_step"] < s.gradient_steps:
                for key, value in self.agent.update(self.sampler.sample(s.batch_size)).items():
                    self._train_metrics[key].append(value.detach())
                c["env_step"] += 1
                bar.update(1)
                c["wall_clock_s"] = clock()
                if c["env_step"] >= c["next_log"]:
                    self._log_train(c["wall_clock_s"])
                if c["env_step"] >= c["next_eval"] or c["env_step"] == s.gradient_steps:
                    self._evaluate(c["wall_clock_s"])
                    self._checkpoint()
                elif c["env_step"] >= c["next_checkpoint"]:
                    self._checkpoint()
        finally:
            bar.close()
            if self.tensorboard:
                self.tensorboard.close()
        c["wall_clock_s"] = clock()
        return c

    # -- evaluating and logging -------------------------------------------------------------------
    def _evaluate(self, clock):
        c = self.counters
        began = time.perf_counter()
        evaluation = c["env_step"] // self.schedule.eval_every
        seeds = [self.experiment.seed * 7919 + evaluation * 1000 + i for i in range(self.schedule.eval_episodes)]
        returns, times = evaluate_episodes(self.agent, self._eval_envs(), seeds, self.target_return)
        c["eval_s"] += time.perf_counter() - began
        self.last_eval_return = float(np.mean(returns))
        self.run_dir.append_metrics({
            "kind": "eval", "env_step": c["env_step"], "gradient_step": c["env_step"],
            "return_mean": self.last_eval_return, "return_std": float(np.std(returns)),
            "returns": [float(r) for r in returns], "target_return": self.target_return,
            "act_ms_per_step": statistics.median(times), "act_batch": len(seeds),
            "wall_clock_s": round(clock, 3)})
        if self.tensorboard:
            self.tensorboard.write(c["env_step"], {"eval/return": self.last_eval_return})
        while c["next_eval"] <= c["env_step"]:
            c["next_eval"] += self.schedule.eval_every

    def _eval_envs(self):
        """One environment per evaluation episode (the first is `env`); each reset reseeds all of
        an environment's random streams, so which one plays an episode changes nothing."""
        while len(self._envs) < self.schedule.eval_episodes:
            e = self.experiment
            self._envs.append(e.env_fn(suite=e.suite, task=e.task, seed=e.seed + 1_000_003 + len(self._envs)))
        return self._envs[:self.schedule.eval_episodes]

    def _log_train(self, clock):
        c = self.counters
        interval = clock - c["last_log_clock"] - (c["eval_s"] - c["last_log_eval_s"])
        record = {"kind": "train", "env_step": c["env_step"], "gradient_step": c["env_step"],
                  "updates_per_s": (c["env_step"] - c["last_log_step"]) / max(interval, 1e-9),
                  **train_metrics.mean_on_host(self._train_metrics)}
        self.run_dir.append_metrics(record)
        train_metrics.check_finite(record, f"gradient step {c['env_step']}")
        if self.tensorboard:
            self.tensorboard.write(c["env_step"], {k: v for k, v in record.items() if k.startswith("train/")})
        self._train_metrics.clear()
        c["last_log_step"], c["last_log_clock"], c["last_log_eval_s"] = c["env_step"], clock, c["eval_s"]
        while c["next_log"] <= c["env_step"]:
            c["next_log"] += self.schedule.log_every

    # -- checkpointing -----------------------------------------------------------------------------
    def _checkpoint(self):
        c = self.counters
        while c["next_checkpoint"] <= c["env_step"]:
            c["next_checkpoint"] += self.schedule.checkpoint_every
        c["metrics_bytes"] = self.run_dir.metrics_size()
        self.run_dir.save_state({
            "counters": dict(c), "agent": self.agent.state_dict(),
            "pending": {"train_metrics": dict(self._train_metrics), "last_eval_return": self.last_eval_return},
            "rng": rng_state.capture()})  # the sampler and dropout draw from torch's generators
        self.run_dir.update_info(env_steps=c["env_step"], checkpoint_env_step=c["env_step"],
                                 wall_clock_s=round(c["wall_clock_s"], 3))

    def _restore(self, state):
        if state is None:
            self.run_dir.truncate_metrics(0)
            return
        self.counters.update(state["counters"])
        for key, values in state["pending"]["train_metrics"].items():
            self._train_metrics[key] = [torch.as_tensor(v, device=self.device) for v in values]
        self.last_eval_return = state["pending"]["last_eval_return"]
        self.agent.load_state_dict(state["agent"])
        rng_state.restore(None, state["rng"])
        self.run_dir.truncate_metrics(self.counters["metrics_bytes"])


def evaluate_episodes(agent, envs, seeds, target_return):
    """Episodes conditioned on `target_return`, one per env, reset with `seeds` and played in
    lockstep: one acting call per agent step for all of them (a finished episode's row keeps acting
    on its last observation; its actions are dropped). Returns (undiscounted returns (N,),
    [ms per acting call, the device synchronised]). Each row is the episode one env alone would
    play (tests/harness/test_offline.py checks it against one call per episode)."""
    n = len(envs)
    obs = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)])
    state = agent.initial_state(n)
    to_go, totals, live = np.full(n, float(target_return)), np.zeros(n), np.ones(n, bool)
    timestep, times = 0, []
    while live.any():
        began = time.perf_counter()
        actions, state = agent.act(state, to_go, obs, np.full(n, timestep))
        if agent.device.type == "cuda":
            torch.cuda.synchronize(agent.device)
        times.append(1e3 * (time.perf_counter() - began))
        for i in np.flatnonzero(live):
            obs[i], reward, terminated, truncated, _ = envs[i].step(actions[i])
            totals[i] += reward
            to_go[i] -= reward
            live[i] = not (terminated or truncated)
        timestep += 1
    return totals, times
