"""One evaluation episode of an agent: the deterministic policy from reset to the time limit.

Shared by training's evaluations (harness.runner) and `python -m harness.evaluate`, so both run the
same episodes: episode `index` of the evaluation at `env_step` starts from the reset seed

    seed * 7919 + (env_step // eval_every) * 1000 + index

which makes evaluating a run's last checkpoint repeat its last evaluation exactly.
"""
import numpy as np

from harness import video_strip


def eval_seed(experiment_seed: int, env_step: int, eval_every: int, index: int) -> int:
    return experiment_seed * 7919 + (env_step // max(eval_every, 1)) * 1000 + index


def act_inputs(info: dict) -> dict:
    """The acting step's optional keyword inputs read from the env's info for one env: obs_valid
    (1,) where the suite withholds observations (missing_state), nothing otherwise."""
    return {"obs_valid": np.asarray([info["obs_valid"]], bool)} if "obs_valid" in info else {}


def run_eval_episode(agent, env, seed: int, frames: list | None = None, recorder=None) -> float:
    """Undiscounted return of one deterministic-policy episode from `env.reset(seed=seed)`.

    frames: a list to append a video frame to, once after reset and once per agent step
    (max_episode_steps + 1 frames), or None to render nothing. A frame is `env.render()`, with the
    world model's reconstruction and open-loop prediction beside it for image-suite world models
    (harness.video_strip).
    recorder: a `harness.belief_metrics.BeliefRecorder` (or None), given each belief the agent acts
    on with its action, observation and info, and the final observation.
    """
    obs, info = env.reset(seed=seed)
    state = agent.initial_state(1)
    prev_action = np.zeros(env.action_dim, np.float32)
    is_first, total, done = True, 0.0, False
    strip = video_strip.strip_for(agent) if frames is not None else None
    rendered = env.render() if frames is not None else None
    if recorder is not None:
        recorder.start_episode()
    while not done:
        action, state = agent.act(state, obs[None], prev_action[None], [is_first], deterministic=True,
                                  **act_inputs(info))
        if frames is not None:
            frames.append(strip.frame(rendered, state, action) if strip else rendered)
        if recorder is not None:
            recorder.record(state, action[0], obs, info)
        obs, reward, terminated, truncated, info = env.step(action[0])
        total += reward
        prev_action, is_first, done = action[0], False, terminated or truncated
        if frames is not None:
            rendered = env.render()
    if frames is not None:
        frames.append(strip.frame(rendered) if strip else rendered)
    if recorder is not None:
        recorder.end_episode(obs, info)
    return total
