r"""Standardisation of low-dimensional observations with statistics fixed at the end of prefill.

Both reference stacks (pbecker93/CoRAL ssm_rl/policy_learning/common/rl_factory.py, pbecker93/vrkn
ssm_mbrl/mbrl/common/mbrl_factory.py) standardise state observations with the per-dimension mean
and standard deviation of the initial random episodes:

    normalise(o) = (o - mean) / std,    mean, std over the N prefill observations (N, D)

computed once, after the noise (the agent sees what the environment emits), and then held fixed
for the whole run. A dimension whose std is below `min_std` (constant during prefill) is only
centred (std taken as 1). uint8 images pass through unchanged (the networks scale them), and so
does everything before `fit`. The statistics are buffers, so they are part of the agent's
checkpoint and a resumed run continues with exactly the same ones.
"""
import gin
import numpy as np
import torch
from torch import nn


@gin.configurable
class ObsNormaliser(nn.Module):
    """obs (..., *obs_shape) -> standardised obs of the same shape (identity for uint8 or before `fit`)."""

    def __init__(self, obs_shape, enabled: bool = True, min_std: float = 1e-6):
        super().__init__()
        self.enabled, self.min_std = bool(enabled), float(min_std)
        self.register_buffer("mean", torch.zeros(tuple(obs_shape)))
        self.register_buffer("std", torch.ones(tuple(obs_shape)))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def fit(self, obs: np.ndarray) -> None:
        """obs (N, *obs_shape): statistics in float64, stored in float32. Marks the normaliser fitted
        even when it stays the identity (disabled, images, or N = 0), so it is fitted only once."""
        obs = np.asarray(obs)
        if tuple(obs.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(f"ObsNormaliser.fit needs obs of shape (N, {tuple(self.mean.shape)}), got {obs.shape}")
        if self.enabled and obs.dtype != np.uint8 and len(obs) > 0:
            mean = obs.astype(np.float64).mean(0)
            std = obs.astype(np.float64).std(0)
            std = np.where(std < self.min_std, 1.0, std)
            self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
            self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))
        self.fitted.fill_(True)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dtype == torch.uint8:
            return obs
        return (obs - self.mean.to(obs.dtype)) / self.std.to(obs.dtype)
