"""The transitions LatentSAC hands to SAC, against a step-by-step reading of its docstring:
(f_t, a_{t+1}^prev, r_{t+1}, f_{t+1}) for t < T - 1, discount 0 where obs_{t+1} is terminal, and
masked where obs_{t+1} starts a new episode. With the Identity model f_t is the observation itself."""
import functools

import numpy as np
import torch

from agents.latent_sac import LatentSAC
from agents.sac import SAC
from models.identity import Identity

B, T, D, A = 2, 5, 3, 2


def replay_batch():
    rng = np.random.default_rng(0)
    return {"obs": rng.normal(size=(B, T, D)).astype(np.float32),
            "prev_action": rng.uniform(-1, 1, size=(B, T, A)).astype(np.float32),
            "reward": rng.normal(size=(B, T)).astype(np.float32),
            "is_first": np.array([[True, False, False, True, False], [False] * 5]),
            "is_terminal": np.array([[False, False, True, False, False], [False] * 4 + [True]])}


def test_sac_trains_on_consecutive_beliefs_with_the_next_steps_action_reward_and_terminal():
    agent = LatentSAC(Identity((D,), A), A, sac=functools.partial(SAC, hidden_dim=8, num_layers=1),
                      compile="none")
    received = {}
    agent.sac.update = lambda **transitions: received.update(transitions) or {}
    batch = replay_batch()
    agent.update(batch)

    expected = {name: [] for name in ("features", "action", "reward", "next_features", "discount", "mask")}
    for b in range(B):
        for t in range(T - 1):
            expected["features"].append(batch["obs"][b, t])
            expected["action"].append(batch["prev_action"][b, t + 1])
            expected["reward"].append(batch["reward"][b, t + 1])
            expected["next_features"].append(batch["obs"][b, t + 1])
            expected["discount"].append(np.float32(0.0 if batch["is_terminal"][b, t + 1] else 1.0))
            expected["mask"].append(not batch["is_first"][b, t + 1])
    assert received.keys() == expected.keys()
    for name, rows in expected.items():
        torch.testing.assert_close(received[name], torch.as_tensor(np.array(rows)), msg=name)
