"""What one run is (`Experiment`) and how long it trains (`Schedule`), both bound by gin.

The harness builds everything through the factories held here, never by name:

    env = experiment.env_fn(suite, task, seed)
    world_model = experiment.world_model(obs_shape=env.obs_shape, action_dim=env.action_dim)
    agent = experiment.agent(world_model=world_model, action_dim=env.action_dim)
"""
import pathlib
import re

import gin


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=,+-]*")


def check_label(field, value, allow_empty=False):
    """Names that become one level of a run directory: no separators, no '..', nothing empty."""
    if allow_empty and value == "":
        return value
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise ValueError(f"{field} must be a non-empty name of letters, digits and _ . = , + - "
                         f"(starting with a letter or digit), got {value!r}")
    return value


def check_int(field, value, minimum):
    """Integers only: 1.7, True or '3' are refused rather than silently coerced."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return value


def check_steps(field, value):
    """A strictly increasing sequence of env steps >= 1, as a tuple."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{field} must be a list of env steps, got {value!r}")
    steps = tuple(check_int(f"{field}[{i}]", step, 1) for i, step in enumerate(value))
    if any(a >= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{field} must be increasing, got {list(steps)}")
    return steps


def method_name(world_model) -> str:
    """The leaderboard label of a world-model factory: its class's `name` (models.world_model)."""
    name = getattr(world_model, "name", None)
    if name is None:
        raise ValueError(f"Experiment.world_model {world_model!r} declares no `name` "
                         "(see models/world_model.py)")
    return check_label(f"{getattr(world_model, '__name__', world_model)}.name", name)


def qualified_name(factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


@gin.configurable
class Experiment:
    """One (method, suite, task, seed, context length) cell of a benchmark.

    The method is not a separate label: it is the `name` of the world model bound to
    `world_model`, so `--bind "Experiment.world_model = @VRKN"` is recorded and reported as VRKN.

    Args:
      name: experiment name, the first level of the run directory.
      suite: one of envs.SUITES: 'image', 'noisy_state', 'missing_state' or 'occluded_image'.
      task: DeepMind Control task, for example 'cartpole_swingup'.
      seed: seeds the environment, networks and replay sampling.
      context_length: training sequence length T sampled from replay.
      world_model: factory `(obs_shape, action_dim) -> WorldModel`, e.g. `@KalMamba`.
      agent: factory `(world_model, action_dim) -> agent`, e.g. `@LatentSAC`.
      env_fn: factory `(suite, task, seed) -> env`, normally `@make_env`.
      variant: optional label added to the method for ablations and sweep grid cells, e.g.
        'no_regulariser' or 'obs_noise_std=0.1'; the row is reported as `<method>+<variant>`.
      runner: factory `(experiment, run_dir, device=, tensorboard=, progress=) -> runner`; None is
        the online `harness.runner.Runner`, the offline track binds `@OfflineRunner`.
    """

    def __init__(self, name="default", suite=gin.REQUIRED, task=gin.REQUIRED, seed=0,
                 context_length=32, world_model=gin.REQUIRED, agent=gin.REQUIRED,
                 env_fn=gin.REQUIRED, variant="", runner=None):
        self.name = check_label("Experiment.name", name)
        self.suite = suite
        self.task = task
        self.seed = check_int("Experiment.seed", seed, 0)
        self.context_length = check_int("Experiment.context_length", context_length, 2)  # SAC needs a transition
        self.world_model = world_model
        self.method = method_name(world_model)
        self.variant = check_label("Experiment.variant", variant, allow_empty=True)
        self.agent = agent
        self.env_fn = env_fn
        self._runner = runner

    @property
    def runner(self):
        """The runner factory (imported only when asked for: it pulls in torch and dm_control)."""
        if self._runner is None:
            from harness.runner import Runner
            return Runner
        return self._runner

    @property
    def label(self) -> str:
        """The method's directory and leaderboard row: 'kalmamba' or 'kalmamba+no_regulariser'."""
        return f"{self.method}+{self.variant}" if self.variant else self.method

    def spec(self) -> dict:
        """The identity fields known before anything is built (run.json adds the env's conditions)."""
        return {"experiment": self.name, "method": self.method, "variant": self.variant,
                "world_model": qualified_name(self.world_model), "suite": self.suite,
                "task": self.task, "seed": self.seed, "context_length": self.context_length}

    def run_dir(self, root="results") -> pathlib.Path:
        """`<root>/<experiment>/<method>[+<variant>]/<suite>/<task>[/<data>]/ctx<T>/seed<k>`, where a
        runner with a `run_dir_level(task)` (the offline runner: the dataset's name) adds <data>."""
        path = pathlib.Path(root) / self.name / self.label / self.suite / self.task
        level = getattr(self._runner, "run_dir_level", None)
        if level is not None:
            path = path / level(self.task)
        return path / f"ctx{self.context_length}" / f"seed{self.seed}"


@gin.configurable
class Schedule:
    """Budgets, counted in environment steps (action repeat included) unless named otherwise.

    Args:
      total_env_steps: training budget.
      prefill_env_steps: uniformly random actions before the first update.
      agent_steps_per_update: agent steps (one policy decision, `action_repeat` env steps) collected
        between two gradient updates once prefill is over; the authors' code does one update per 2
        agent steps whatever the action repeat (CoRAL experiment configs).
      batch_size: sequences per update.
      eval_every: environment steps between evaluations (also evaluated at step 0 and at the end).
      eval_episodes: episodes per evaluation, deterministic policy.
      checkpoint_every: environment steps between checkpoints (also after each evaluation).
      log_every: environment steps between train-metric lines.
      replay_capacity: agent steps kept in replay.
      video_every: environment steps between eval videos (an mp4 of the first eval episode of the
        first evaluation at or after each mark, in <run>/videos/); 0: none (`--video`: every evaluation).
      keep_checkpoints_at: environment steps at which the agent's weights are also kept (the
        checkpoint at or after each mark, as checkpoint/agent_step<N>.pt), for
        `python -m harness.evaluate RUN --checkpoint N` and `python -m harness.collect RUN --kind medium`;
        the resumable checkpoint keeps only the latest.
    """

    def __init__(self, total_env_steps=1_000_000, prefill_env_steps=5_000, agent_steps_per_update=2,
                 batch_size=32, eval_every=10_000, eval_episodes=10, checkpoint_every=10_000,
                 log_every=1_000, replay_capacity=1_000_000, video_every=0, keep_checkpoints_at=()):
        self.total_env_steps = check_int("Schedule.total_env_steps", total_env_steps, 1)
        self.prefill_env_steps = check_int("Schedule.prefill_env_steps", prefill_env_steps, 0)
        self.agent_steps_per_update = check_int("Schedule.agent_steps_per_update", agent_steps_per_update, 1)
        self.batch_size = check_int("Schedule.batch_size", batch_size, 1)
        self.eval_every = check_int("Schedule.eval_every", eval_every, 1)
        self.eval_episodes = check_int("Schedule.eval_episodes", eval_episodes, 1)
        self.checkpoint_every = check_int("Schedule.checkpoint_every", checkpoint_every, 1)
        self.log_every = check_int("Schedule.log_every", log_every, 1)
        self.replay_capacity = check_int("Schedule.replay_capacity", replay_capacity, 1)
        self.video_every = check_int("Schedule.video_every", video_every, 0)
        self.keep_checkpoints_at = check_steps("Schedule.keep_checkpoints_at", keep_checkpoints_at)
