"""Soft actor-critic (Haarnoja et al. 2018) on a feature vector.

Twin Q-functions with EMA targets, a tanh-squashed Gaussian actor and a learned temperature:

    critic:  L_Q = E[(Q_i(f, a) - y)^2],  y = r + gamma * d * (min_i Qbar_i(f', a') - alpha log pi(a'|f'))
    actor:   L_pi = E[alpha log pi(a|f) - min_i Q_i(f, a)],  a ~ pi(.|f) reparameterised
    alpha:   L_alpha = -E[log alpha * (log pi(a|f) + target_entropy)]

with a' ~ pi(.|f'), d = 0 at terminal transitions, alpha = exp(log_alpha), and all expectations
masked to valid transitions. Defaults follow the RSSM+SAC stack of CoRAL (3x1024 ELU, lr 1e-3, gamma
0.99, target EMA 0.995, initial temperature 0.1, actor gradient clip 10, temperature gradient clip 1;
ssm_rl/policy_learning/common/actor.py and mf_default.yml).

The actor's pre-tanh Gaussian from the network's raw outputs (raw_mean, raw_std), two choices:

    'softplus_std' (CoRAL):  mean = 5 tanh(raw_mean / 5),  std = softplus(raw_std + softplus^-1(0.0183)) + 0.005
    'clamped_log_std':       mean = raw_mean,  log std = clamp(raw_std, -5, 2) with a straight-through gradient

CoRAL's starts every action dimension at std 0.0233 and bounds it below by 0.005; the clamped one
is what earlier runs here used (`clamp_passing_gradient` says why its gradient passes the clamp).
"""
import math

import gin
import torch
import torch.nn.functional as F
from torch import nn

from models.networks import mlp


def clamp_passing_gradient(x, low, high):
    """Values clamped to [low, high]; gradients pass as if unclamped (straight-through).

    A squashing bound (tanh, sigmoid, softplus) has a derivative that is exactly 0 in float32 far
    from the bounds. In our first SAC run the actor's log-std went there, stuck at its lower bound,
    the entropy stayed far below its target and the temperature grew without limit until the critic
    diverged (docs/results.md). With a straight-through clamp the entropy term can always pull it back.
    """
    return x + (x.clamp(low, high) - x).detach()


def _softplus_inverse(x):
    return x + math.log(-math.expm1(-x))


class TanhGaussianActor(nn.Module):
    """pi(a|f) = tanh(N(mu(f), sigma(f)^2)); log-probabilities include the tanh Jacobian.
    `parameterisation` is 'softplus_std' or 'clamped_log_std' (module docstring)."""

    PARAMETERISATIONS = ("softplus_std", "clamped_log_std")

    def __init__(self, feature_dim, action_dim, hidden_dim, num_layers, parameterisation="softplus_std",
                 log_std_bounds=(-5.0, 2.0), mean_scale=5.0, init_std=0.0183, min_std=0.005):
        super().__init__()
        if parameterisation not in self.PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {self.PARAMETERISATIONS}, got {parameterisation!r}")
        self.net = mlp(feature_dim, 2 * action_dim, hidden_dim, num_layers)
        self.parameterisation = parameterisation
        self.log_std_bounds = log_std_bounds
        self.mean_scale, self.min_std = float(mean_scale), float(min_std)
        self.std_shift = _softplus_inverse(float(init_std))

    def distribution(self, features):
        """features (..., F) -> (mean, log std) of the pre-tanh Gaussian, each (..., A)."""
        raw_mean, raw_std = self.net(features).chunk(2, dim=-1)
        if self.parameterisation == "clamped_log_std":
            return raw_mean, clamp_passing_gradient(raw_std, *self.log_std_bounds)
        mean = self.mean_scale * torch.tanh(raw_mean / self.mean_scale)
        return mean, torch.log(F.softplus(raw_std + self.std_shift) + self.min_std)

    def forward(self, features, deterministic=False):
        """features (..., F) -> action (..., A) in (-1, 1), log_prob (...)."""
        mean, log_std = self.distribution(features)
        if deterministic:
            return torch.tanh(mean), None
        std = log_std.exp()
        pre_tanh = mean + std * torch.randn_like(mean)
        log_prob = (-0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x)), stable for large |x|
        log_prob = log_prob - (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), log_prob


class TwinCritic(nn.Module):
    def __init__(self, feature_dim, action_dim, hidden_dim, num_layers):
        super().__init__()
        self.q1 = mlp(feature_dim + action_dim, 1, hidden_dim, num_layers)
        self.q2 = mlp(feature_dim + action_dim, 1, hidden_dim, num_layers)

    def forward(self, features, action):
        x = torch.cat([features, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


@gin.configurable
class SAC(nn.Module):
    """SAC over features (N, F); `update` takes flat batches of transitions."""

    def __init__(self, feature_dim, action_dim, hidden_dim=1024, num_layers=3, lr=1e-3,
                 gamma=0.99, target_ema=0.995, init_temperature=0.1, target_entropy=None,
                 actor_parameterisation="softplus_std", actor_grad_clip=10.0, critic_grad_clip=100.0,
                 alpha_grad_clip=1.0):
        super().__init__()
        self.actor = TanhGaussianActor(feature_dim, action_dim, hidden_dim, num_layers, actor_parameterisation)
        self.critic = TwinCritic(feature_dim, action_dim, hidden_dim, num_layers)
        self.critic_target = TwinCritic(feature_dim, action_dim, hidden_dim, num_layers)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.gamma, self.target_ema = gamma, target_ema
        self.actor_grad_clip, self.critic_grad_clip, self.alpha_grad_clip = actor_grad_clip, critic_grad_clip, alpha_grad_clip
        self.target_entropy = -float(action_dim) if target_entropy is None else target_entropy
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)

    @property
    def alpha(self):
        return self.log_alpha.exp()

    @torch.no_grad()
    def act(self, features, deterministic=False):
        return self.actor(features, deterministic)[0]

    def update(self, features, action, reward, next_features, discount, mask):
        """All inputs flat: features (N, F), action (N, A), reward/discount/mask (N,). Returns metrics."""
        metrics = self.update_critic(features, action, reward, next_features, discount, mask)
        metrics.update(self.update_actor_and_alpha(features, mask))
        self.update_target()
        return metrics

    def update_critic(self, features, action, reward, next_features, discount, mask):
        with torch.no_grad():
            next_action, next_log_prob = self.actor(next_features)
            target_q = torch.min(*self.critic_target(next_features, next_action))
            target = reward + self.gamma * discount * (target_q - self.alpha * next_log_prob)
        q1, q2 = self.critic(features, action)
        loss = _masked_mean((q1 - target) ** 2 + (q2 - target) ** 2, mask)
        _step(self.critic_opt, loss, self.critic.parameters(), self.critic_grad_clip)
        return {"sac/critic_loss": loss.detach(), "sac/q": _masked_mean(q1.detach(), mask)}

    def update_actor_and_alpha(self, features, mask):
        action, log_prob = self.actor(features)
        q = torch.min(*self.critic(features, action))
        actor_loss = _masked_mean(self.alpha.detach() * log_prob - q, mask)
        _step(self.actor_opt, actor_loss, self.actor.parameters(), self.actor_grad_clip)
        alpha_loss = -_masked_mean(self.log_alpha * (log_prob.detach() + self.target_entropy), mask)
        _step(self.alpha_opt, alpha_loss, [self.log_alpha], self.alpha_grad_clip)
        return {"sac/actor_loss": actor_loss.detach(), "sac/alpha": self.alpha.detach(),
                "sac/entropy": -_masked_mean(log_prob.detach(), mask)}

    @torch.no_grad()
    def update_target(self):
        for target, online in zip(self.critic_target.parameters(), self.critic.parameters()):
            target.lerp_(online, 1.0 - self.target_ema)


def _masked_mean(x, mask):
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def _step(optimizer, loss, parameters, grad_clip):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
