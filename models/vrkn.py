r"""Variational Recurrent Kalman Network (Becker and Neumann 2022) behind the `WorldModel` interface.

The transition into step t is computed from the filtered belief of step t - 1, with
a_{t-1} = prev_action[:, t] (zero where the belief restarts):

    x     = dropout(ReLU(Linear(concat(mu+_{t-1}, a_{t-1}))))              width H
    h     = GRUCell(x, hidden = mu+_{t-1})                                   size Z
    raw   = Linear(dropout(ReLU(Linear(dropout(h)))))                        3 Z values
    (A_{t-1}, b_{t-1}, Q_{t-1}) = (sigmoid in [0.1, 0.99], raw, sigmoid in [0.001, 0.1])

then one Kalman predict + update with H = I (`models.kalman.kalman_step`):
m-_t = A mu+_{t-1} + b,  P-_t = A^2 P+_{t-1} + Q,  then conditioning on (w_t, R_t). The update uses
the standard form P+ = P- R / (P- + R), algebraically equal to VRKN's Joseph form and a product of
positive terms. Because A, b, Q depend on the filtered mean, filtering is inherently sequential:
`observe` is a loop over the same single step `step` uses (the encoder still runs on the whole
sequence at once). The smoother and the tight ELBO come from the base class; the smoother is the
time-parallel RTS smoother, exact and free of any sequential dependency, so the baseline is not
slowed down by a serial smoother it does not need.

MC dropout samples its masks in train mode only; the agent acts in eval mode, with the mean network
(VRKN's code keeps dropout on except inside its "MAP" context).
"""
import gin
import torch
from torch import nn

from models.kalman import FilterResult, kalman_step
from models.kalman_world_model import Inference, KalmanWorldModel, TransitionActivation
from models.world_model import Belief


class GRUTransition(nn.Module):
    """(filtered mean (B, Z), action (B, A)) -> (A, b, Q), each (B, Z), as in the module docstring."""

    def __init__(self, latent_dim: int, action_dim: int, hidden_dim: int, dropout: float,
                 activation: TransitionActivation):
        super().__init__()
        self.pre = nn.Sequential(nn.Linear(latent_dim + action_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.gru = nn.GRUCell(hidden_dim, latent_dim)
        self.post = nn.Sequential(nn.Dropout(dropout), nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden_dim, 3 * latent_dim))
        self.activation = activation

    def forward(self, mean, action):
        hidden = self.gru(self.pre(torch.cat([mean, action], dim=-1)), mean)
        return self.activation(self.post(hidden))


@gin.configurable
class VRKN(KalmanWorldModel):
    """VRKN world model (module docstring); defaults are those of the VRKN paper and code.

    Args:
        obs_shape: (D,) state vectors or (C, 64, 64) uint8 images.
        action_dim: A.
        encoder_fn, decoder_fn: factories from `models.networks`; None picks the default for obs_shape.
        latent_dim: Z = 230.    hidden_dim: H = 300.    dropout: 0.1 (MC dropout in the transition).
        transition_scale_bounds, transition_scale_init: A in [0.1, 0.99], 0.9 at a zero network output.
        transition_var_bounds, transition_var_init: Q in [0.001, 0.1], 0.01 at init.
        obs_var_init, obs_var_min: R = softplus(.) with 1.0 at init and floor 0.01.
        initial_var_init, initial_var_min: learned var0, 1.0 at init, floor 0.001.
        free_nats: 3.0, clipping the KL per time step.
        reward_scale: 10.0, weight of the reward log-likelihood (VRKN's reward decoder scale).
    """

    name = "vrkn"

    def __init__(self, obs_shape, action_dim: int, encoder_fn=None, decoder_fn=None, latent_dim: int = 230,
                 hidden_dim: int = 300, dropout: float = 0.1, transition_scale_bounds=(0.1, 0.99),
                 transition_scale_init: float = 0.9, transition_var_bounds=(0.001, 0.1),
                 transition_var_init: float = 0.01, obs_var_init: float = 1.0, obs_var_min: float = 0.01,
                 initial_var_init: float = 1.0, initial_var_min: float = 0.001, free_nats: float = 3.0,
                 reward_scale: float = 10.0):
        super().__init__(obs_shape, action_dim, encoder_fn, decoder_fn, latent_dim, obs_var_init, obs_var_min,
                         initial_var_init, initial_var_min, free_nats, reward_scale)
        if int(hidden_dim) < 1:
            raise ValueError(f"VRKN needs hidden_dim >= 1, got {hidden_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"VRKN needs dropout in [0, 1), got {dropout}")
        activation = TransitionActivation(transition_scale_bounds, transition_scale_init,
                                          transition_var_bounds, transition_var_init)
        self.transition = GRUTransition(self.latent_dim, self.action_dim, int(hidden_dim), dropout, activation)

    def step(self, state: Belief, obs, prev_action, is_first) -> Belief:
        """obs (B, *obs_shape), prev_action (B, A), is_first (B,) -> belief (B, ...)."""
        self._check_inputs(obs.unsqueeze(1), prev_action.unsqueeze(1), is_first.unsqueeze(1))
        restart = is_first | state.get("reset", torch.zeros_like(is_first))
        w, R = (x.squeeze(1) for x in self.latent_observation(obs.unsqueeze(1)))
        return self._filter_step(state, w, R, prev_action, restart)[0]

    def _filter_step(self, state: Belief, w, R, prev_action, restart):
        """One predict + update: w, R (B, Z), prev_action (B, A), restart (B,) bool.

        Returns (belief (B, ...), FilterResult of (B, Z), (A, b, Q) into this step, each (B, Z)).
        """
        a_prev = prev_action.to(w.dtype).masked_fill(restart.unsqueeze(-1), 0.0)
        A, b, Q = self.transition(state["mean"], a_prev)
        mean0, var0 = self.initial_belief()
        filtered = kalman_step(state["mean"], state["var"], A, b, Q, w, R, is_first=restart, mean0=mean0, var0=var0)
        belief = {"mean": filtered.filtered_mean, "var": filtered.filtered_var, "reset": torch.zeros_like(restart)}
        return belief, filtered, (A, b, Q)

    def _infer(self, obs, prev_action, is_first, state: Belief | None) -> Inference:
        restart = self._restarts(is_first, state)
        state = self.initial_state(is_first.shape[0]) if state is None else state
        w, R = self.latent_observation(obs)
        steps, transitions = [], []
        for t in range(is_first.shape[1]):
            state, filtered, transition = self._filter_step(state, w[:, t], R[:, t], prev_action[:, t], restart[:, t])
            steps.append(filtered)
            transitions.append(transition)
        filtered = FilterResult(*(torch.stack(column, dim=1) for column in zip(*steps)))
        # Transitions out of step t are the ones into t + 1; the last step's are unused (kept finite).
        A, b, Q = (torch.stack(column[1:] + column[-1:], dim=1) for column in zip(*transitions))
        beliefs = {"mean": filtered.filtered_mean, "var": filtered.filtered_var}
        return Inference(beliefs, state, filtered, A, b, Q, restart)
