r"""Variational Recurrent Kalman Network (Becker and Neumann 2022) behind the `WorldModel` interface.

The transition into step t is computed from the filtered belief of step t - 1, with
a_{t-1} = prev_action[:, t] (zero where the belief restarts):

    x     = dropout(ReLU(Linear(concat(mu+_{t-1}, a_{t-1}))))              width H
    h     = GRUCell(x, hidden = mu+_{t-1})                                   size Z
    raw   = Linear(dropout(ReLU(Linear(dropout(h)))))                        3 Z values
    (A_{t-1}, b_{t-1}, Q_{t-1}) = (sigmoid in [0.1, 0.99], raw, sigmoid in [0.001, 0.1])

then one Kalman predict + update with H = I (`models.kalman.kalman_step`):
m-_t = A mu+_{t-1} + b,  P-_t = A^2 P+_{t-1} + Q,  then conditioning on (w_t, R_t), skipped where
the observation is missing (obs_valid False: mu+_t = m-_t, P+_t = P-_t, VRKN's `update_if_valid`).
The update uses the standard form P+ = P- R / (P- + R), algebraically equal to VRKN's Joseph form
and a product of positive terms. Because A, b, Q depend on the filtered mean, filtering is inherently sequential:
`observe` is a loop over the same single step `step` uses (the encoder still runs on the whole
sequence at once). The smoother and the tight ELBO come from the base class; the smoother is the
RTS smoother over the whole window (`kalman_backend`), exact and free of any dependency on the
model's networks, so the baseline is not slowed down by a step-by-step smoother it does not need.

MC dropout samples its masks in train mode only; the agent acts in eval mode, with the mean network
(VRKN's code keeps dropout on except inside its "MAP" context).
"""
import gin
import torch
from torch import nn

from models.kalman import FilterResult, kalman_predict, kalman_step
from models.kalman_world_model import Inference, KalmanWorldModel, TransitionActivation, keyword_parameters
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


class VRKN(KalmanWorldModel):
    """VRKN world model (module docstring). Every argument of `KalmanWorldModel` is accepted as a
    keyword; its defaults (latent 230, hidden 300, dropout 0.1, A in [0.1, 0.99] init 0.9, Q in
    [0.001, 0.1] init 0.01, R init 1 floor 0.01, var0 init 1 floor 0.001, free nats 3, reward scale
    10) are VRKN's. gin/models/vrkn.gin adds what its code does beyond the paper: the start-step KL
    weighted by 0, a fixed zero initial mean, learning rate 6e-4 and gradient clip 100.
    """

    name = "vrkn"

    def __init__(self, obs_shape, action_dim: int, **kwargs):
        super().__init__(obs_shape, action_dim, **kwargs)
        self.transition = GRUTransition(self.latent_dim, self.action_dim, self.hidden_dim, self.dropout,
                                        self.transition_activation)

    def _step(self, state: Belief, w, R, a_prev, restart, obs_valid=None) -> Belief:
        return self._filter_step(state, w, R, a_prev, restart, obs_valid)[0]

    def _filter_step(self, state: Belief, w, R, a_prev, restart, obs_valid=None):
        """One predict + update: w, R (B, Z), a_prev (B, A) zero where restart (B,) bool; no update
        where obs_valid (B,) is False (None: valid).

        Returns (belief (B, ...), FilterResult of (B, Z), (A, b, Q) into this step, each (B, Z)).
        """
        A, b, Q = self.transition(state["mean"], a_prev)
        mean0, var0 = self.initial_belief()
        filtered = kalman_step(state["mean"], state["var"], A, b, Q, w, R, mask=obs_valid, is_first=restart,
                               mean0=mean0, var0=var0)
        belief = {"mean": filtered.filtered_mean, "var": filtered.filtered_var, "reset": torch.zeros_like(restart)}
        return belief, filtered, (A, b, Q)

    def _prior_step(self, state: Belief, action) -> Belief:
        """The transition of `_filter_step` from the (predicted) mean, with no update: the GRU reads
        the prior mean where it would read the filtered one, which is what filtering a missing
        observation gives."""
        mean, var = kalman_predict(state["mean"], state["var"], *self.transition(state["mean"], action))
        return {"mean": mean, "var": var, "reset": torch.zeros_like(state["reset"])}

    def _infer(self, obs, prev_action, is_first, state: Belief | None, obs_valid=None) -> Inference:
        restart = self._restarts(is_first, state)
        state = self.initial_state(is_first.shape[0]) if state is None else state
        w, R = self.latent_observation(obs)
        a_prev = prev_action.to(w.dtype).masked_fill(restart.unsqueeze(-1), 0.0)
        steps, transitions = [], []
        for t in range(is_first.shape[1]):
            valid = None if obs_valid is None else obs_valid[:, t]
            state, filtered, transition = self._filter_step(state, w[:, t], R[:, t], a_prev[:, t], restart[:, t], valid)
            steps.append(filtered)
            transitions.append(transition)
        filtered = FilterResult(*(torch.stack(column, dim=1) for column in zip(*steps)))
        # Transitions out of step t are the ones into t + 1; the last step's are unused (kept finite).
        A, b, Q = (torch.stack(column[1:] + column[-1:], dim=1) for column in zip(*transitions))
        beliefs = {"mean": filtered.filtered_mean, "var": filtered.filtered_var}
        return Inference(beliefs, state, filtered, A, b, Q, restart)


VRKN = gin.configurable(VRKN, allowlist=keyword_parameters(VRKN))
