"""What the agent sees of a dm_control state: rendered pixels, or a noisy flat state vector.

Every observation function shares one small interface used by `envs.dmc.DMCEnv`:
    shape, dtype                    of the observation array
    reseed(rng)                     takes a numpy Generator (its own stream of the env seed)
    start_episode()                 called by reset() before the episode's first observation
    __call__(observation) -> (obs, info)
        `observation` is the dm_control observation dict of the current time step; `info` holds
        extra entries for the env's info dict.

The partially observed suites wrap these two: `envs.missing` (withheld states) and
`envs.occlusions` (images with moving occluders).
"""
import numpy as np

from envs import rendering


def flat_state(observation, keys) -> np.ndarray:
    """The dm_control observation dict as one float64 vector (D,): the entries of `keys` (the
    task's own key order) raveled and concatenated."""
    return np.concatenate([np.asarray(observation[key], np.float64).ravel() for key in keys])


class PixelObservation:
    """A (3, size, size) uint8 RGB frame, channels first, from one fixed camera of the model.

    Renders the physics' current state, so the env calls it once per agent step (after the action
    repeat), not once per env step.
    """

    dtype = np.uint8

    def __init__(self, physics, camera_id: int, size: int):
        rendering.use_fast_render_settings(physics)
        self.shape = (3, size, size)
        self._physics = physics
        self._camera_id = camera_id
        self._camera = None  # created on the first frame, which also creates the GL context

    def reseed(self, rng: np.random.Generator) -> None:
        del rng  # rendering is deterministic

    def start_episode(self) -> None:
        pass

    def __call__(self, observation) -> tuple[np.ndarray, dict]:
        del observation
        if self._camera is None:
            size = self.shape[1]
            self._camera = rendering.make_camera(self._physics, size, size, self._camera_id)
        frame = self._camera.render()  # (size, size, 3)
        return np.ascontiguousarray(frame.transpose(2, 0, 1)), {}


class NoisyStateObservation:
    """o = s + eps, eps ~ N(0, noise_std^2 I), as float32; the clean s goes to info["true_obs"].

    s is the dm_control observation dict flattened in the task's own key order (`keys`, fixed by
    the task definition), each entry raveled, concatenated: shape (D,). noise_std is a standard
    deviation: the source of the noisy suite states "N(0, 0.3)", which may mean variance 0.3 (std
    0.548); we read it as std 0.3. With noise_std = 0 no random numbers are drawn and o == s.
    """

    dtype = np.float32

    def __init__(self, observation_spec, noise_std: float):
        self.keys = tuple(observation_spec)
        size = sum(int(np.prod(spec.shape, dtype=np.int64)) for spec in observation_spec.values())
        self.shape = (size,)
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(0)

    def reseed(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def start_episode(self) -> None:
        pass

    def __call__(self, observation) -> tuple[np.ndarray, dict]:
        state = flat_state(observation, self.keys)
        noisy = state
        if self.noise_std > 0:
            noisy = state + self.noise_std * self._rng.standard_normal(state.shape)
        return noisy.astype(np.float32), {"true_obs": state.astype(np.float32)}
