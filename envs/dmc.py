"""A dm_control task as a `gymnasium.Env`, with action repeat and action noise."""
import gymnasium
import numpy as np

from envs import rendering, suites
from envs.observations import flat_state

RENDER_MODES = ("rgb_array",)


class DMCEnv(gymnasium.Env):
    """One agent step = the same action applied for `action_repeat` env steps.

    Actions a live in [-1, 1]^A (inputs outside are clipped). With action noise (std sigma, drawn
    once per agent step and held over its repeat, as in VRKN's transition-noise wrapper)

        a' = clip(a + eps, -1, 1),   eps ~ N(0, sigma^2 I),

    and the simulator receives u = c + h * a' with c = (max + min) / 2, h = (max - min) / 2 of
    dm_control's action spec: the identity where the spec is [-1, 1] (all tasks but quadruped,
    whose bounds are [-1, 1.1] and [-0.8, 0.8] on some joints), so u stays inside the spec.

    step(a) -> (obs, reward, terminated, truncated, info):
        reward      sum of the env rewards over the repeat (fewer steps if the episode ends inside)
        terminated  the task ended the episode (discount 0); never in DeepMind Control
        truncated   the time limit ended it: after EPISODE_ENV_STEPS (1000) env steps
        info        env_steps (env steps taken by this call), applied_action (a', float64 (A,)),
                    true_state (the clean dm_control observation flattened in the task's key
                    order, float32 (D,), in every suite: what the belief metrics probe for), plus
                    the observation function's entries (true_obs, the clean observation, where the
                    suite corrupts it; obs_valid in the missing_state suite)
    reset(seed=None, options=None) -> (obs, info): a new seed restarts every random stream
        (initial states, observation and action noise) exactly as a new env with that seed; None
        continues them. `options` is accepted for the Gymnasium API and ignored.
    render() -> (render_size, render_size, 3) uint8 RGB frame of the current state from the
        task's camera (`camera_id`), drawn on demand: the noisy_state suite renders only when a
        video asks for it, and the image suite's observations do not depend on it.

    Gymnasium: observation_space (Box of obs_shape / obs_dtype: [0, 255] for images, unbounded
    for states), action_space (Box [-1, 1]^A, float32), metadata (render_modes, render_fps: agent
    steps per second of simulated time), render_mode 'rgb_array'; so gymnasium's wrappers
    (RecordVideo, vector envs) apply.

    Attributes: obs_shape, obs_dtype (from `observation`), action_dim, action_repeat,
    max_episode_steps (agent steps per episode), physics (the dm_control physics), conditions
    (the noise actually applied: {"obs_noise_std", "action_noise_std"}, recorded in run.json).
    """

    def __init__(self, dmc_env, observation, action_repeat: int, seed: int, action_noise_std: float = 0.0,
                 camera_id: int = 0, render_size: int = 128, render_mode: str | None = "rgb_array"):
        spec = dmc_env.action_spec()
        low, high = np.asarray(spec.minimum, np.float64), np.asarray(spec.maximum, np.float64)
        bounded = np.all(np.isfinite(low)) and np.all(np.isfinite(high))
        if spec.shape is None or len(spec.shape) != 1 or not bounded:
            raise ValueError(f"expected a bounded vector action spec, got {spec}")
        self._env = dmc_env
        self._observation = observation
        self._state_keys = tuple(dmc_env.observation_spec())
        self._center = np.broadcast_to((high + low) / 2, spec.shape).copy()
        self._half_range = np.broadcast_to((high - low) / 2, spec.shape).copy()
        self.action_noise_std = float(action_noise_std)
        self.action_dim = int(spec.shape[0])
        self.action_repeat = int(action_repeat)
        self.max_episode_steps = -(-suites.EPISODE_ENV_STEPS // self.action_repeat)  # ceil
        self.obs_shape = tuple(observation.shape)
        self.obs_dtype = observation.dtype
        if np.dtype(self.obs_dtype) == np.uint8:
            self.observation_space = gymnasium.spaces.Box(0, 255, self.obs_shape, np.uint8)
        else:
            self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, self.obs_shape, self.obs_dtype)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {', '.join(RENDER_MODES)} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {"render_modes": list(RENDER_MODES),
                         "render_fps": 1.0 / (dmc_env.control_timestep() * self.action_repeat)}
        self.camera_id = int(camera_id)
        self.render_size = int(render_size)
        self._render_camera = None  # created by the first render(), which needs OpenGL
        self._closed = False
        self._episode_over = True
        self._reseed(check_seed(seed))

    @property
    def conditions(self) -> dict:
        return {"obs_noise_std": float(getattr(self._observation, "noise_std", 0.0)),
                "action_noise_std": self.action_noise_std}

    @property
    def physics(self):
        return self._env.physics

    def _reseed(self, seed: int) -> None:
        self._env.task.random.seed(seed)  # initial states of dm_control's task
        observation_seed, action_seed = np.random.SeedSequence(seed).spawn(2)
        self._observation.reseed(np.random.default_rng(observation_seed))
        self._action_rng = np.random.default_rng(action_seed)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        del options
        if seed is not None:
            seed = check_seed(seed)
            super().reset(seed=seed)  # gymnasium's np_random, unused by the simulation
            self._reseed(seed)
        time_step = self._env.reset()
        self._episode_over = False
        self._observation.start_episode()
        obs, extra = self._observation(time_step.observation)
        return obs, {"env_steps": 0, "true_state": self._true_state(time_step), **extra}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._episode_over:
            raise RuntimeError("the episode is over (or never started): call reset() before step()")
        applied = self._applied_action(action)
        command = self._center + self._half_range * applied
        reward, env_steps = 0.0, 0
        for _ in range(self.action_repeat):
            time_step = self._env.step(command)
            reward += float(time_step.reward)
            env_steps += 1
            if time_step.last():
                break
        self._episode_over = time_step.last()
        terminated = self._episode_over and time_step.discount == 0.0
        truncated = self._episode_over and not terminated
        obs, extra = self._observation(time_step.observation)
        info = {"env_steps": env_steps, "applied_action": applied, "true_state": self._true_state(time_step), **extra}
        return obs, reward, bool(terminated), bool(truncated), info

    def _true_state(self, time_step) -> np.ndarray:
        return flat_state(time_step.observation, self._state_keys).astype(np.float32)

    def _applied_action(self, action) -> np.ndarray:
        """a' = clip(clip(a, -1, 1) + eps, -1, 1); shape (A,), float64."""
        try:
            action = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action must be a numeric array of shape ({self.action_dim},)") from None
        if action.shape != (self.action_dim,):
            raise ValueError(f"action must have shape ({self.action_dim},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        action = np.clip(action, -1.0, 1.0)
        if self.action_noise_std > 0:
            noise = self.action_noise_std * self._action_rng.standard_normal(self.action_dim)
            action = np.clip(action + noise, -1.0, 1.0)
        return action

    def render(self) -> np.ndarray:
        if self._render_camera is None:
            self._render_camera = rendering.make_camera(self.physics, self.render_size, self.render_size,
                                                        self.camera_id)
        return self._render_camera.render().copy()  # the camera reuses its buffer

    def close(self) -> None:
        """Frees the simulator and its rendering context; the env is unusable afterwards."""
        self._episode_over = True
        if not self._closed:
            self._closed = True
            self._render_camera = None
            self._env.physics.free()


def check_seed(seed) -> int:
    """Returns `seed` as int if it is an integer in [0, 2**32), else raises ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)
