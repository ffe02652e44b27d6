"""The model-free baseline as a world model: the belief is the current observation itself.

SAC on (noisy) states is `Experiment.world_model = @Identity`; it has no parameters and no loss.
Where an observation is missing (obs_valid False) the belief is zeros, and with
`obs_valid_feature` the flag (1 valid, 0 missing) is appended, so SAC sees (zeros, 0) there and
(o_t, 1) elsewhere: the baseline knows when it is blind but remembers nothing.
"""
import gin
import torch

from models.world_model import Belief, WorldModel, obs_valid_kwargs


@gin.configurable
class Identity(WorldModel):
    """features(belief) = obs_t as float32 (D,), or concat(obs_t, valid_t) (D + 1,) with
    `obs_valid_feature`. Only for vector observations. No observation model: `reconstruct` and
    `predict` return None (the base class's), so eval videos show the frame alone."""

    name = "sac"

    def __init__(self, obs_shape, action_dim, obs_valid_feature: bool = False):
        super().__init__()
        if len(obs_shape) != 1:
            raise ValueError(f"Identity needs vector observations, got shape {tuple(obs_shape)}")
        self.obs_shape, self.action_dim = tuple(int(s) for s in obs_shape), int(action_dim)
        self.obs_valid_feature = bool(obs_valid_feature)
        self.feature_dim = int(obs_shape[0]) + self.obs_valid_feature
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries the device

    def initial_state(self, batch_size: int) -> Belief:
        return {"obs": self._anchor.new_zeros(batch_size, self.feature_dim)}

    def _belief(self, obs, obs_valid):
        """obs (..., D), obs_valid (...) or None -> (..., feature_dim)."""
        obs = obs.float()
        if obs_valid is not None:
            obs = obs.masked_fill(~obs_valid.unsqueeze(-1), 0.0)
        if self.obs_valid_feature:
            valid = torch.ones(obs.shape[:-1], dtype=torch.bool, device=obs.device) if obs_valid is None else obs_valid
            obs = torch.cat([obs, valid.float().unsqueeze(-1)], dim=-1)
        return obs

    def observe(self, obs, prev_action, is_first, state=None, obs_valid=None):
        obs = self._belief(obs, obs_valid)
        return {"obs": obs}, {"obs": obs[:, -1]}

    def step(self, obs, prev_action, is_first, state, obs_valid=None):
        return {"obs": self._belief(obs, obs_valid)}

    def features(self, belief):
        return belief["obs"]

    def loss(self, batch):
        beliefs, _ = self.observe(batch["obs"], batch["prev_action"], batch["is_first"],
                                  **obs_valid_kwargs(batch.get("obs_valid")))
        return self._anchor.new_zeros(()), {}, beliefs
