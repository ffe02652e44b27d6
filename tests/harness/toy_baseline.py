"""The smallest useful world model, used by docs/adding_a_baseline.md's test: an exponential filter.

    belief_t = obs_t                                      where is_first_t
    belief_t = a * belief_{t-1} + (1 - a) * obs_t          otherwise,   a = sigmoid(smoothing_logit)

The loss is the squared error of predicting obs_t by belief_{t-1} (steps that start an episode are
left out), so the one parameter `a` is trained by the agent's model optimizer. The doc's test copies
this file to `models/my_model.py` of a copy of the repository, as the doc's step 1.
"""
import math

import gin
import torch
from torch import nn

from models.world_model import Belief, WorldModel


@gin.configurable
class ExponentialFilter(WorldModel):
    """Vector observations only; feature_dim = obs_dim."""

    name = "my_model"  # two words: nothing may read a model's name from a file name up to '_'

    def __init__(self, obs_shape, action_dim, init_smoothing=0.5):
        super().__init__()
        if len(obs_shape) != 1:
            raise ValueError(f"ExponentialFilter needs vector observations, got shape {tuple(obs_shape)}")
        if not 0 < init_smoothing < 1:
            raise ValueError(f"init_smoothing must lie in (0, 1), got {init_smoothing}")
        self.obs_shape, self.action_dim = tuple(int(s) for s in obs_shape), int(action_dim)
        self.feature_dim = int(obs_shape[0])
        self.smoothing_logit = nn.Parameter(torch.tensor(math.log(init_smoothing / (1 - init_smoothing))))

    def initial_state(self, batch_size: int) -> Belief:
        return {"mean": self.smoothing_logit.new_zeros(batch_size, self.feature_dim)}

    def step(self, obs, prev_action, is_first, state):
        """obs (B, D), is_first (B,) -> {'mean': (B, D)}."""
        a = torch.sigmoid(self.smoothing_logit)
        obs = obs.to(a.dtype)  # float32 in training; float64 in reference tests
        mean = a * state["mean"] + (1 - a) * obs
        return {"mean": torch.where(is_first[:, None], obs, mean)}

    def observe(self, obs, prev_action, is_first, state=None):
        """obs (B, T, D) -> beliefs {'mean': (B, T, D)}, last state {'mean': (B, D)}; a loop of `step`."""
        self._check_inputs(obs, prev_action, is_first)  # one clear error for mismatched shapes
        state = self.initial_state(obs.shape[0]) if state is None else state
        means = []
        for t in range(obs.shape[1]):
            state = self.step(obs[:, t], prev_action[:, t], is_first[:, t], state)
            means.append(state["mean"])
        return {"mean": torch.stack(means, dim=1)}, state

    def features(self, belief):
        return belief["mean"]

    def loss(self, batch):
        self._check_batch(batch)
        beliefs, _ = self.observe(batch["obs"], batch["prev_action"], batch["is_first"])
        error = (beliefs["mean"][:, :-1] - batch["obs"][:, 1:].to(beliefs["mean"].dtype)).pow(2).sum(-1)
        valid = (~batch["is_first"][:, 1:]).float()
        loss = (error * valid).sum() / valid.sum().clamp(min=1.0)
        return loss, {"model/prediction_error": loss.detach(),
                      "model/smoothing": torch.sigmoid(self.smoothing_logit).detach()}, beliefs
