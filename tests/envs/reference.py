"""Raw dm_control, driven the textbook way, as the reference the wrappers are compared with."""
import numpy as np

from envs import rendering


def raw_env(domain: str, task: str, seed: int):
    return rendering.load_suite().load(domain, task, task_kwargs={"random": seed})


def flat_state(observation) -> np.ndarray:
    """The observation dict concatenated in its own key order, float32 (D,)."""
    parts = [np.asarray(value, np.float64).ravel() for value in observation.values()]
    return np.concatenate(parts).astype(np.float32)


def raw_step(env, command: np.ndarray, repeat: int):
    """Applies `command` for `repeat` env steps or until the episode ends; returns
    (last time step, summed reward, env steps taken)."""
    total, steps = 0.0, 0
    for _ in range(repeat):
        time_step = env.step(command)
        total += time_step.reward
        steps += 1
        if time_step.last():
            break
    return time_step, total, steps


def to_simulator(action: np.ndarray, spec) -> np.ndarray:
    """The action itself where the spec is [-1, 1]; otherwise low + (a + 1) (high - low) / 2."""
    if np.all(spec.minimum == -1.0) and np.all(spec.maximum == 1.0):
        return action
    return spec.minimum + (action + 1.0) * (spec.maximum - spec.minimum) / 2.0
