"""The model-free baseline as a world model: the belief is the current observation itself.

SAC on (noisy) states is `Experiment.world_model = @Identity`; it has no parameters and no loss.
"""
import gin
import torch

from models.world_model import Belief, WorldModel


@gin.configurable
class Identity(WorldModel):
    """features(belief) = obs_t as float32. Only for vector observations. No observation model:
    `reconstruct` and `predict` return None (the base class's), so eval videos show the frame alone."""

    name = "sac"

    def __init__(self, obs_shape, action_dim):
        super().__init__()
        if len(obs_shape) != 1:
            raise ValueError(f"Identity needs vector observations, got shape {tuple(obs_shape)}")
        self.obs_shape, self.action_dim = tuple(int(s) for s in obs_shape), int(action_dim)
        self.feature_dim = int(obs_shape[0])
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries the device

    def initial_state(self, batch_size: int) -> Belief:
        return {"obs": self._anchor.new_zeros(batch_size, self.feature_dim)}

    def observe(self, obs, prev_action, is_first, state=None):
        obs = obs.float()
        return {"obs": obs}, {"obs": obs[:, -1]}

    def step(self, obs, prev_action, is_first, state):
        return {"obs": obs.float()}

    def features(self, belief):
        return belief["obs"]

    def loss(self, batch):
        beliefs, _ = self.observe(batch["obs"], batch["prev_action"], batch["is_first"])
        return self._anchor.new_zeros(()), {}, beliefs
