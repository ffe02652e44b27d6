"""The missing_state suite: noisy states, withheld except at irregular valid steps (VRKN's scheme).

Valid steps of an episode (agent steps, the reset observation is step 0):

    v_0 = 0,    v_{i+1} = v_i + k_i,    k_i ~ Uniform{min_gap, ..., max_gap} i.i.d.   (default 4 .. 8)

as VRKN's `LowerImgFreqWrapper` (pbecker93/vrkn envs/wrapper/lower_img_freq_wrapper.py, 4 and 8 in
envs/env_factory.py). At a valid step the agent sees the noisy state o_t = s_t + eps_t of
`NoisyStateObservation`; at every other step it sees zeros (D,) float32. info["obs_valid"] says
which (a Python bool), and info["true_obs"] holds the clean state s_t at every step, valid or not.

Random streams: the noise is drawn at every step, valid or not, from the stream `reseed` gives
(so the noise of a step equals that of the noisy_state suite with the same seed); the gaps k_i come
from a second stream spawned from it (`Generator.spawn`, which draws nothing from the first) and
are drawn at valid steps only.
"""
import numpy as np


class MissingObservation:
    """Wraps a `NoisyStateObservation` (the interface of `envs.observations`): zeros and
    info["obs_valid"] = False except at the valid steps of the module docstring."""

    def __init__(self, noisy, min_gap: int = 4, max_gap: int = 8):
        if not 1 <= min_gap <= max_gap:
            raise ValueError(f"missing_gaps must satisfy 1 <= min <= max, got ({min_gap}, {max_gap})")
        self._noisy = noisy
        self.min_gap, self.max_gap = int(min_gap), int(max_gap)
        self.shape, self.dtype = noisy.shape, noisy.dtype
        self._gap_rng = np.random.default_rng(0)
        self._step, self._next_valid = 0, 0

    @property
    def noise_std(self) -> float:
        return self._noisy.noise_std

    def reseed(self, rng: np.random.Generator) -> None:
        self._noisy.reseed(rng)
        self._gap_rng = rng.spawn(1)[0]

    def start_episode(self) -> None:
        self._noisy.start_episode()
        self._step, self._next_valid = 0, 0

    def __call__(self, observation) -> tuple[np.ndarray, dict]:
        noisy, info = self._noisy(observation)
        valid = self._step == self._next_valid
        if valid:
            self._next_valid += int(self._gap_rng.integers(self.min_gap, self.max_gap + 1))
        self._step += 1
        obs = noisy if valid else np.zeros_like(noisy)
        return obs, {**info, "obs_valid": bool(valid)}
