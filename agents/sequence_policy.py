r"""Return-conditioned sequence policies: Decision Transformer and Decision Mamba.

Token layout (Chen et al. 2021, kept by Ota 2024): every agent step t contributes three tokens,

    ..., R_t, s_t, a_t, R_{t+1}, s_{t+1}, a_{t+1}, ...        (B, 3L, D) for L steps

    R_t = sum_{t' >= t} r_t' / return_scale     the return still to collect (return-to-go)
    token(x, t) = LN(Linear_kind(x) + E_time[t])   one linear embedding per kind, a shared
                                                   timestep embedding, then LayerNorm and dropout

A causal mixer (agents.sequence_mixers) maps the tokens to outputs h, and the action at t is read
from the state token: a_t = tanh(Linear(h[s_t])), which has seen R_0..R_t, s_0..s_t, a_0..a_{t-1}.
Training minimises the mean squared error to the dataset's actions at every position of a window.

Observations are normalised by the dataset's mean and standard deviation (buffers saved with the
weights). Acting (`step`): the policy keeps its own history and is told R_t, s_t and t each step;
the action it returns becomes its next a_{t-1} token.

- DecisionTransformer: a sliding window of the last `context_length` steps, re-encoded each step.
- DecisionMamba: the mixer's recurrent state, three token steps per agent step (a_{t-1}, R_t, s_t):
  constant time per step, and exactly `forward` over the whole episode so far. Training windows
  are `context_length` long, so late in an episode the recurrent policy sees a longer history
  than it was trained on; `recurrent_acting=False` acts with the sliding window instead.
"""
import gin
import torch
from torch import nn

from agents.sequence_mixers import CausalTransformer, MambaMixer

MAX_TIMESTEP = 1000  # agent steps per episode: DeepMind Control's 1000 env steps at action repeat >= 1


class SequencePolicy(nn.Module):
    """(returns_to_go, obs, actions, timesteps) windows -> actions; see the module docstring.

    Args:
      obs_shape: (O,) vector observations.
      action_dim: A, actions in [-1, 1].
      context_length: K, steps per training window and per acting window.
      mixer: factory `(d_model, dropout) -> mixer`, e.g. `@CausalTransformer` or `@MambaMixer`.
      embed_dim: D.
      dropout: on the embedded tokens (and inside the mixer's blocks).
      max_timestep: size of the timestep embedding; larger timesteps are clamped.
      return_scale: returns-to-go are divided by it.
    """

    name = None

    def __init__(self, obs_shape, action_dim, context_length=20, mixer=CausalTransformer, embed_dim=128,
                 dropout=0.1, max_timestep=MAX_TIMESTEP, return_scale=1000.0):
        super().__init__()
        if len(obs_shape) != 1:
            raise ValueError(f"{type(self).__name__} needs vector observations, got shape {tuple(obs_shape)}")
        self.obs_dim, self.action_dim = int(obs_shape[0]), int(action_dim)
        self.context_length, self.max_timestep = int(context_length), int(max_timestep)
        self.return_scale = float(return_scale)
        self.embed_return = nn.Linear(1, embed_dim)
        self.embed_obs = nn.Linear(self.obs_dim, embed_dim)
        self.embed_action = nn.Linear(self.action_dim, embed_dim)
        self.embed_timestep = nn.Embedding(self.max_timestep, embed_dim)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.embed_dropout = nn.Dropout(dropout)
        self.mixer = mixer(d_model=embed_dim, dropout=dropout)
        self.predict_action = nn.Sequential(nn.Linear(embed_dim, self.action_dim), nn.Tanh())
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))

    def set_obs_normalisation(self, mean, std):
        """Dataset statistics, (O,) each; std is floored at 1e-6 as in the DT code."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=self.obs_mean.dtype))
        self.obs_std.copy_(torch.as_tensor(std, dtype=self.obs_std.dtype).clamp_min(1e-6))

    # -- tokens ----------------------------------------------------------------------------------
    def _embed(self, kind, x, timesteps):
        """One token kind: x (..., X) at timesteps (...) -> (..., D)."""
        if kind == "return":
            e = self.embed_return(x.unsqueeze(-1) / self.return_scale)
        elif kind == "obs":
            e = self.embed_obs((x - self.obs_mean) / self.obs_std)
        else:
            e = self.embed_action(x)
        t = timesteps.long().clamp(0, self.max_timestep - 1)
        return self.embed_dropout(self.embed_norm(e + self.embed_timestep(t)))

    def tokens(self, returns_to_go, obs, actions, timesteps):
        """(B, L), (B, L, O), (B, L, A), (B, L) -> (B, 3L, D) interleaved R_0, s_0, a_0, R_1, ..."""
        stacked = torch.stack([self._embed("return", returns_to_go, timesteps),
                               self._embed("obs", obs, timesteps),
                               self._embed("action", actions, timesteps)], dim=2)  # (B, L, 3, D)
        return stacked.flatten(1, 2)

    def forward(self, returns_to_go, obs, actions, timesteps):
        """Predicted actions (B, L, A); position t depends on R_0..R_t, s_0..s_t, a_0..a_{t-1}."""
        h = self.mixer(self.tokens(returns_to_go, obs, actions, timesteps))
        return self.predict_action(h[:, 1::3])

    # -- acting: sliding window ---------------------------------------------------------------------
    def initial_state(self, batch_size):
        """Empty history of one episode per batch row (all rows start together)."""
        p = self.obs_mean
        return {"returns_to_go": p.new_zeros(batch_size, 0), "obs": p.new_zeros(batch_size, 0, self.obs_dim),
                "actions": p.new_zeros(batch_size, 0, self.action_dim),
                "timesteps": p.new_zeros(batch_size, 0, dtype=torch.long)}

    def step(self, state, returns_to_go, obs, timestep):
        """One agent step: R_t (B,), s_t (B, O), t (B,) -> (a_t (B, A), state)."""
        K = self.context_length
        append = lambda old, new: torch.cat([old, new.unsqueeze(1)], 1)[:, -K:]
        state = {"returns_to_go": append(state["returns_to_go"], returns_to_go.to(self.obs_mean.dtype)),
                 "obs": append(state["obs"], obs.to(self.obs_mean.dtype)),
                 "actions": append(state["actions"], obs.new_zeros(obs.shape[0], self.action_dim,
                                                                   dtype=self.obs_mean.dtype)),
                 "timesteps": append(state["timesteps"], timestep.long())}
        # the zero placeholder a_t comes after s_t: causality keeps it out of the prediction
        action = self.forward(state["returns_to_go"], state["obs"], state["actions"], state["timesteps"])[:, -1]
        state["actions"] = torch.cat([state["actions"][:, :-1], action.unsqueeze(1)], 1)
        return action, state


@gin.configurable
class DecisionTransformer(SequencePolicy):
    """Causal attention mixer, sliding-window acting."""

    name = "decision_transformer"

    def __init__(self, obs_shape, action_dim, mixer=CausalTransformer, **kwargs):
        super().__init__(obs_shape, action_dim, mixer=mixer, **kwargs)


@gin.configurable
class DecisionMamba(SequencePolicy):
    """Residual Mamba mixer; acts with its recurrent state (O(1) per step) unless told otherwise."""

    name = "decision_mamba"

    def __init__(self, obs_shape, action_dim, mixer=MambaMixer, recurrent_acting=True, **kwargs):
        super().__init__(obs_shape, action_dim, mixer=mixer, **kwargs)
        if recurrent_acting and not getattr(self.mixer, "recurrent", False):
            raise ValueError(f"recurrent_acting needs a mixer with a recurrent step, got {type(self.mixer).__name__}")
        self.recurrent_acting = recurrent_acting

    def initial_state(self, batch_size):
        if not self.recurrent_acting:
            return super().initial_state(batch_size)
        return {"mixer": self.mixer.initial_state(batch_size), "last_action": None, "last_timestep": None}

    def step(self, state, returns_to_go, obs, timestep):
        if not self.recurrent_acting:
            return super().step(state, returns_to_go, obs, timestep)
        mixer_state = state["mixer"]
        if state["last_action"] is not None:  # the previous step's action token a_{t-1}
            _, mixer_state = self.mixer.step(self._embed("action", state["last_action"], state["last_timestep"]),
                                             mixer_state)
        _, mixer_state = self.mixer.step(self._embed("return", returns_to_go.to(self.obs_mean.dtype), timestep),
                                         mixer_state)
        h, mixer_state = self.mixer.step(self._embed("obs", obs.to(self.obs_mean.dtype), timestep), mixer_state)
        action = self.predict_action(h)
        return action, {"mixer": mixer_state, "last_action": action, "last_timestep": timestep}
