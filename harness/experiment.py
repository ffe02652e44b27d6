"""What one run is (`Experiment`) and how long it trains (`Schedule`), both bound by gin.

The harness builds everything through the factories held here, never by name:

    env = experiment.env_fn(suite, task, seed)
    world_model = experiment.world_model(obs_shape=env.obs_shape, action_dim=env.action_dim)
    agent = experiment.agent(world_model=world_model, action_dim=env.action_dim)
"""
import pathlib

import gin


@gin.configurable
class Experiment:
    """One (method, suite, task, seed, context length) cell of a benchmark.

    Args:
      name: experiment name, the first level of the run directory.
      method: label of the method on the leaderboard (for example 'kalmamba').
      suite: 'image' or 'noisy_state'.
      task: DeepMind Control task, for example 'cartpole_swingup'.
      seed: seeds the environment, networks and replay sampling.
      context_length: training sequence length T sampled from replay.
      world_model: factory `(obs_shape, action_dim) -> WorldModel`, e.g. `@KalMamba`.
      agent: factory `(world_model, action_dim) -> agent`, e.g. `@LatentSAC`.
      env_fn: factory `(suite, task, seed) -> env`, normally `@make_env`.
    """

    def __init__(self, name="default", method=gin.REQUIRED, suite=gin.REQUIRED, task=gin.REQUIRED,
                 seed=0, context_length=32, world_model=gin.REQUIRED, agent=gin.REQUIRED,
                 env_fn=gin.REQUIRED):
        self.name = name
        self.method = method
        self.suite = suite
        self.task = task
        self.seed = int(seed)
        self.context_length = int(context_length)
        if self.context_length < 2:
            raise ValueError(f"Experiment.context_length must be >= 2 (SAC needs a transition), got {context_length}")
        self.world_model = world_model
        self.agent = agent
        self.env_fn = env_fn

    def spec(self) -> dict:
        """The identifying fields recorded in run.json."""
        return {"experiment": self.name, "method": self.method, "suite": self.suite,
                "task": self.task, "seed": self.seed, "context_length": self.context_length}

    def run_dir(self, root="results") -> pathlib.Path:
        """`<root>/<experiment>/<method>/<suite>/<task>/ctx<T>/seed<k>`."""
        return (pathlib.Path(root) / self.name / self.method / self.suite / self.task
                / f"ctx{self.context_length}" / f"seed{self.seed}")


@gin.configurable
class Schedule:
    """Budgets, all counted in environment steps (action repeat included) unless named otherwise.

    Args:
      total_env_steps: training budget.
      prefill_env_steps: uniformly random actions before the first update.
      env_steps_per_update: environment steps collected between two gradient updates.
      batch_size: sequences per update.
      eval_every: environment steps between evaluations (also evaluated at step 0 and at the end).
      eval_episodes: episodes per evaluation, deterministic policy.
      checkpoint_every: environment steps between checkpoints (also after each evaluation).
      log_every: environment steps between train-metric lines.
      replay_capacity: agent steps kept in replay.
    """

    def __init__(self, total_env_steps=1_000_000, prefill_env_steps=5_000, env_steps_per_update=2,
                 batch_size=32, eval_every=10_000, eval_episodes=10, checkpoint_every=10_000,
                 log_every=1_000, replay_capacity=1_000_000):
        self.total_env_steps = int(total_env_steps)
        self.prefill_env_steps = int(prefill_env_steps)
        self.env_steps_per_update = int(env_steps_per_update)
        self.batch_size = int(batch_size)
        self.eval_every = int(eval_every)
        self.eval_episodes = int(eval_episodes)
        self.checkpoint_every = int(checkpoint_every)
        self.log_every = int(log_every)
        self.replay_capacity = int(replay_capacity)
        for name in ("env_steps_per_update", "batch_size", "eval_every", "eval_episodes",
                     "checkpoint_every", "log_every", "replay_capacity", "total_env_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"Schedule.{name} must be >= 1, got {getattr(self, name)}")
        if self.prefill_env_steps < 0:
            raise ValueError(f"Schedule.prefill_env_steps must be >= 0, got {self.prefill_env_steps}")
