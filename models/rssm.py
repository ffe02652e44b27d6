"""Recurrent state-space model (PlaNet / Dreamer v1 Gaussian RSSM) behind the `WorldModel` interface.

The latent state at time t is a deterministic GRU state h_t and a Gaussian stochastic state z_t:

    h_t = GRU(h_{t-1}, f(z_{t-1}, a_{t-1}))                  deterministic path
    p(z_t | h_t)      = N(mu^p_t, sigma^p_t)                 prior (from h_t only)
    q(z_t | h_t, o_t) = N(mu^q_t, sigma^q_t)                 posterior (h_t and the embedding of o_t)
    p(o_t | h_t, z_t), p(r_t | h_t, z_t)                     unit-variance Gaussian decoders

with sigma = softplus(.) + min_std and f, the prior and posterior heads ELU MLPs. Where is_first[t]
the carry (h_{t-1}, z_{t-1}) is replaced by `initial_state` (zeros) and a_{t-1} by zeros, so an
episode start inside a sequence begins exactly like a fresh sequence.

Loss per time step, averaged over (B, T): the negative ELBO with free nats and KL balancing,

    loss = -log p(o_t | .) - log p(r_t | .)
           + alpha     max(KL[sg(q) || p], free_nats)          (trains the prior)
           + (1-alpha) max(KL[q || sg(p)], free_nats)          (trains the posterior)

where sg is stop-gradient and the clip applies per (b, t), after summing the KL over the latent
dimensions. Both terms have the value KL[q || p]; balancing only splits the gradient.

Reconstruction decodes concat(h_t, mu^q_t), the posterior mean (the features' latent); open-loop
prediction continues from the carried (h_t, z_t) as `step` would, with h_{t+k} = GRU(h_{t+k-1},
f(z_{t+k-1}, a_{t+k-1})) and z_{t+k} = mu^p_{t+k}, the prior mean (no sampling: deterministic, and
no random numbers drawn), decoding concat(h_{t+k}, mu^p_{t+k}).

Missing observations (obs_valid False) follow VRKN's code for its RSSM baseline (pbecker93/vrkn
ssm_mbrl/rssm/transition/r_rssm_tm.py `update_with_obs_valid`, objectives/autoencoding_vi_objective.py):
the posterior reads a zero embedding there, plus the validity flag as one more input when built
with `obs_valid_input` (their `build_with_obs_valid`), and the observation likelihood is averaged
over the valid steps only. The prior, the KL and the reward term are unchanged.

The model is inherently sequential: `observe` is a Python loop over the same single step `step`
uses. In train mode z_t is sampled by reparameterisation. In eval mode (acting) z_t is sampled too
when `sample_when_acting` (CoRAL drives the GRU with a sampled z when acting as in training), else
z_t = mu^q_t, and then `observe` and successive `step`s agree exactly and acting is deterministic.
"""
import gin
import torch
from torch import nn
from torch.nn import functional as F

from models import networks
from models.world_model import Belief, WorldModel, obs_valid_kwargs


def gaussian_kl(mean_q, std_q, mean_p, std_p) -> torch.Tensor:
    """KL[N(mean_q, std_q^2) || N(mean_p, std_p^2)] for diagonal Gaussians, summed over the last dim.

    Per dimension: log(std_p / std_q) + (std_q^2 + (mean_q - mean_p)^2) / (2 std_p^2) - 1/2.
    """
    per_dim = (torch.log(std_p) - torch.log(std_q)
               + (std_q.square() + (mean_q - mean_p).square()) / (2.0 * std_p.square()) - 0.5)
    return per_dim.sum(-1)


def balanced_kl_loss(post_mean, post_std, prior_mean, prior_std, free_nats: float, balance: float):
    """KL term of the RSSM loss (module docstring): all inputs (B, T, Z).

    Returns (scalar loss, KL[q || p] of shape (B, T), detached).
    """
    kl_for_prior = gaussian_kl(post_mean.detach(), post_std.detach(), prior_mean, prior_std)
    kl_for_posterior = gaussian_kl(post_mean, post_std, prior_mean.detach(), prior_std.detach())
    loss = (balance * kl_for_prior.clamp(min=free_nats).mean()
            + (1.0 - balance) * kl_for_posterior.clamp(min=free_nats).mean())
    return loss, kl_for_prior.detach()


class _GaussianHead(nn.Module):
    """x (..., in_dim) -> (mean, std), each (..., out_dim), std = softplus(.) + min_std."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, min_std: float):
        super().__init__()
        self.net = networks.mlp(in_dim, 2 * out_dim, hidden_dim, num_layers)
        self.min_std = min_std

    def forward(self, x):
        mean, raw_std = self.net(x).chunk(2, dim=-1)
        return mean, F.softplus(raw_std) + self.min_std


@gin.configurable
class RSSM(WorldModel):
    """Gaussian RSSM with free nats and KL balancing (equations in the module docstring).

    Args (defaults are the CoRAL RSSM+SAC configuration unless noted):
        obs_shape: (D,) state vectors or (C, 64, 64) uint8 images.
        action_dim: A.
        encoder_fn, decoder_fn: factories from `models.networks`; None picks the default for obs_shape.
        deter_dim: GRU state size, 200 (CoRAL; also PlaNet / Dreamer v1).
        stoch_dim: Gaussian latent size, 64 (CoRAL; PlaNet / Dreamer v1 use 30).
        hidden_dim, num_layers: width 400 and depth 2 of the ELU MLPs before the GRU, after it (prior)
            and for the posterior (CoRAL).
        free_nats: 1.0 (CoRAL; PlaNet / Dreamer v1 use 3.0), clipped per time step.
        kl_balance: alpha = 0.8, the weight of the prior-training KL term (CoRAL, from Dreamer v2).
        min_std: 0.1, lower bound of every standard deviation (CoRAL, Dreamer v1).
        sample_when_acting: True, the carried z is a posterior sample in eval mode too (CoRAL);
            False carries the posterior mean when acting.
        obs_valid_input: False; True gives the posterior the validity flag (1 valid, 0 missing) as
            one more input (VRKN's code for missing observations; gin/suites/missing_state.gin).
        learning_rate, grad_clip: the agent's model optimiser settings for this model (None keeps
            `WorldModel`'s); gin/models/rssm.gin binds CoRAL's 3e-4 and 10.

    Belief (B, [T,] ...): deter h (deter_dim), stoch z carried to the next step (stoch_dim; a sample,
    or the posterior mean in eval mode without `sample_when_acting`), mean / std of the posterior,
    prior_mean / prior_std of the prior. features = concat(h, posterior mean) (CoRAL's features for
    SAC); h is driven by sampled z in training and, with `sample_when_acting`, when acting too.
    """

    name = "rssm"

    def __init__(self, obs_shape, action_dim: int, encoder_fn=None, decoder_fn=None,
                 deter_dim: int = 200, stoch_dim: int = 64, hidden_dim: int = 400, num_layers: int = 2,
                 free_nats: float = 1.0, kl_balance: float = 0.8, min_std: float = 0.1,
                 sample_when_acting: bool = True, learning_rate: float | None = None,
                 grad_clip: float | None = None, obs_valid_input: bool = False):
        super().__init__()
        self.obs_shape = tuple(int(s) for s in obs_shape)
        if len(self.obs_shape) not in (1, 3):
            raise ValueError(f"RSSM needs obs_shape (D,) or (C, 64, 64), got {self.obs_shape}")
        for name, value in [("action_dim", action_dim), ("deter_dim", deter_dim), ("stoch_dim", stoch_dim),
                            ("hidden_dim", hidden_dim), ("num_layers", num_layers)]:
            if int(value) < 1:
                raise ValueError(f"RSSM needs {name} >= 1, got {value}")
        if not 0.0 <= kl_balance <= 1.0:
            raise ValueError(f"RSSM needs kl_balance in [0, 1], got {kl_balance}")
        if free_nats < 0.0 or min_std <= 0.0:
            raise ValueError(f"RSSM needs free_nats >= 0 and min_std > 0, got {free_nats} and {min_std}")
        self.action_dim, self.deter_dim, self.stoch_dim = int(action_dim), int(deter_dim), int(stoch_dim)
        self.free_nats, self.kl_balance = float(free_nats), float(kl_balance)
        self.sample_when_acting = bool(sample_when_acting)
        self.obs_valid_input = bool(obs_valid_input)
        for name, value in [("learning_rate", learning_rate), ("grad_clip", grad_clip)]:
            if value is not None and not value > 0.0:
                raise ValueError(f"RSSM needs {name} > 0, got {value}")
            if value is not None:
                setattr(self, name, float(value))
        self.feature_dim = self.deter_dim + self.stoch_dim

        self.encoder = (encoder_fn or networks.default_encoder_fn)(self.obs_shape)
        self.decoder = (decoder_fn or networks.default_decoder_fn)(self.feature_dim, self.obs_shape)
        self.reward_head = networks.RewardHead(self.feature_dim)
        self.transition_input = networks.mlp(self.stoch_dim + self.action_dim, hidden_dim, hidden_dim,
                                             num_layers - 1, output_activation=nn.ELU)
        self.gru = nn.GRUCell(hidden_dim, self.deter_dim)
        self.prior_head = _GaussianHead(self.deter_dim, self.stoch_dim, hidden_dim, num_layers, min_std)
        self.posterior_head = _GaussianHead(self.deter_dim + self.encoder.embed_dim + self.obs_valid_input,
                                            self.stoch_dim, hidden_dim, num_layers, min_std)

    def initial_state(self, batch_size: int) -> Belief:
        """Zeros for h and z (PlaNet / Dreamer), unit std: (B, ...)."""
        anchor = self.gru.weight_hh
        deter = anchor.new_zeros(batch_size, self.deter_dim)
        zeros, ones = anchor.new_zeros(batch_size, self.stoch_dim), anchor.new_ones(batch_size, self.stoch_dim)
        return {"deter": deter, "stoch": zeros, "mean": zeros, "std": ones,
                "prior_mean": zeros, "prior_std": ones}

    def _filter_step(self, state: Belief, embed, prev_action, is_first, obs_valid=None) -> Belief:
        """state (B, ...), embed (B, E), prev_action (B, A), is_first (B,), obs_valid (B,) or None
        -> next belief (B, ...)."""
        reset = is_first.bool().unsqueeze(-1)
        initial = self.initial_state(embed.shape[0])
        deter = torch.where(reset, initial["deter"], state["deter"])
        stoch = torch.where(reset, initial["stoch"], state["stoch"])
        action = torch.where(reset, torch.zeros_like(prev_action), prev_action).to(deter.dtype)

        deter = self.gru(self.transition_input(torch.cat([stoch, action], -1)), deter)
        prior_mean, prior_std = self.prior_head(deter)
        posterior_input = [deter, embed.to(deter.dtype)]
        if obs_valid is not None:
            posterior_input[1] = posterior_input[1].masked_fill(~obs_valid.unsqueeze(-1), 0.0)
        if self.obs_valid_input:
            valid = torch.ones_like(is_first) if obs_valid is None else obs_valid
            posterior_input.append(valid.to(deter.dtype).unsqueeze(-1))
        mean, std = self.posterior_head(torch.cat(posterior_input, -1))
        sample = self.training or self.sample_when_acting
        stoch = mean + std * torch.randn_like(std) if sample else mean
        return {"deter": deter, "stoch": stoch, "mean": mean, "std": std,
                "prior_mean": prior_mean, "prior_std": prior_std}

    def step(self, obs, prev_action, is_first, state: Belief, obs_valid=None) -> Belief:
        """obs (B, *obs_shape), prev_action (B, A), is_first (B,), obs_valid (B,) or None -> belief (B, ...)."""
        self._check_inputs(obs.unsqueeze(1), prev_action.unsqueeze(1), is_first.unsqueeze(1),
                           None if obs_valid is None else obs_valid.unsqueeze(1))
        embed = self.encoder(obs.unsqueeze(1)).squeeze(1)
        return self._filter_step(state, embed, prev_action, is_first, obs_valid)

    def observe(self, obs, prev_action, is_first, state: Belief | None = None,
                obs_valid=None) -> tuple[Belief, Belief]:
        """obs (B, T, *obs_shape), prev_action (B, T, A), is_first (B, T), obs_valid (B, T) or None
        -> (beliefs (B, T, ...), last (B, ...))."""
        self._check_inputs(obs, prev_action, is_first, obs_valid)
        batch_size, length = is_first.shape
        state = self.initial_state(batch_size) if state is None else state
        embed = self.encoder(obs)
        beliefs = []
        for t in range(length):
            valid = None if obs_valid is None else obs_valid[:, t]
            state = self._filter_step(state, embed[:, t], prev_action[:, t], is_first[:, t], valid)
            beliefs.append(state)
        stacked = {key: torch.stack([belief[key] for belief in beliefs], dim=1) for key in state}
        return stacked, state

    def features(self, belief: Belief) -> torch.Tensor:
        """concat(deter, posterior mean): (..., deter_dim + stoch_dim)."""
        return torch.cat([belief["deter"], belief["mean"]], dim=-1)

    def belief_distribution(self, belief: Belief):
        """The posterior of the stochastic latent: (mean, std^2), each (B, [T,] stoch_dim)."""
        return belief["mean"], belief["std"].square()

    def reconstruct(self, belief: Belief) -> torch.Tensor:
        """decoder(concat(deter, posterior mean)): (B, [T,] *obs_shape), preprocessed space."""
        return self.decoder(self.features(belief))

    def predict(self, state: Belief, actions) -> torch.Tensor:
        """state (B, ...) of `step`, actions (B, K, A) -> decoded prior means (B, K, *obs_shape)
        (module docstring)."""
        self._check_open_loop(state, actions)
        deter, stoch, latents = state["deter"], state["stoch"], []
        for k in range(actions.shape[1]):
            action = actions[:, k].to(deter.dtype)
            deter = self.gru(self.transition_input(torch.cat([stoch, action], -1)), deter)
            stoch, _ = self.prior_head(deter)
            latents.append(torch.cat([deter, stoch], dim=-1))
        return self.decoder(torch.stack(latents, dim=1))

    def loss(self, batch: dict[str, torch.Tensor]):
        """batch: obs, prev_action, reward, is_first, optional obs_valid (see `models.world_model`)
        -> (loss, metrics, beliefs)."""
        self._check_batch(batch)
        obs_valid = batch.get("obs_valid")
        beliefs, _ = self.observe(batch["obs"], batch["prev_action"], batch["is_first"], **obs_valid_kwargs(obs_valid))
        # Decoders see the carried z (a sample in training), as in the ELBO's expectation over q.
        latent = torch.cat([beliefs["deter"], beliefs["stoch"]], dim=-1)
        obs_ll = self.decoder.log_likelihood(latent, batch["obs"])
        reward_ll = self.reward_head.log_likelihood(latent, batch["reward"])
        kl_loss, kl = balanced_kl_loss(beliefs["mean"], beliefs["std"], beliefs["prior_mean"],
                                       beliefs["prior_std"], self.free_nats, self.kl_balance)
        obs_term = self.valid_mean(obs_ll, obs_valid)
        loss = kl_loss - obs_term - reward_ll.mean()
        metrics = {
            "model/loss": loss.detach(),
            "model/obs_log_likelihood": obs_term.detach(),
            "model/reward_log_likelihood": reward_ll.mean().detach(),
            "model/kl": kl.mean(),
            "model/kl_loss": kl_loss.detach(),
            "model/prior_std": beliefs["prior_std"].mean().detach(),
            "model/posterior_std": beliefs["std"].mean().detach(),
        }
        return loss, metrics, beliefs
