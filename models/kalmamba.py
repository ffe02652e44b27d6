r"""KalMamba (Becker, Freymuth and Neumann 2024): a Mamba backbone drives a time-varying diagonal
linear-Gaussian latent chain, filtered and smoothed in parallel over time.

With w_t, R_t the latent observation of `models.kalman_world_model` and a_{t-1} = prev_action[:, t]
(zero where the belief restarts), per time step t:

    x_t = input_net(concat(sg(w_t), a_{t-1}))              Linear-ReLU-dropout, width H
    h_t = Mamba(x_{<=t})                                    resets where the belief restarts
    m_t = Linear(h_t)  (or h_t itself when H = Z)          the backbone's summary, size Z
    (A_t, b_t, Q_t) = transition_net(concat(m_t, a_t))     Linear-ReLU-dropout-Linear(3 Z)

with a_t = prev_action[:, t + 1] (the action taken at t), A_t = 0.4 + 0.59 sigmoid(.) in [0.4, 0.99]
and Q_t in [0.001, 0.1] (bounded sigmoids, see the base module); the last step's (A, b, Q) are
unused. Because the transition depends on observations only through the backbone, never through
the filtered belief, all of (A, b, Q) exist before filtering starts: the Kalman filter and the RTS
smoother both run as associative scans (`models.kalman`), and the Mamba scan is parallel too.

Loss: the tight ELBO of the base class plus the Mahalanobis regulariser pulling m_t towards the
filtered belief,  weight * mean_{b,t} sum_z (m_t - sg(mu+_t))^2 / sg(P+_t),  where sg is
stop-gradient: the regulariser trains the backbone to summarise the belief and never moves the
filter towards the backbone.

The backbone reads the latent observations as data, sg(w_t) (`detach_backbone_input`, a choice the
paper does not state): otherwise the regulariser's gradient reaches the shared encoder through m_t,
and the encoder moves the very target mu+_t that m_t chases. Measured on cartpole_swingup noisy
states (quick sizes, 600 updates of 16 x 32, model alone): ELBO per step -13.4 and regulariser
~4000 with the gradient path, -8.1 and ~55 without it; with the regulariser off both reach about -8.

Acting (`step`) is one Kalman predict + update (the transition into t from m_{t-1} and a_{t-1}) and
one recurrent Mamba step; the state holds the filtered mean / var at t - 1, m_{t-1} and the Mamba
state, so nothing is recomputed. In eval mode (dropout off) `observe` equals successive `step`s.
MC dropout samples its masks in train mode only: the agent acts in eval mode, with the mean network.

Continuing `observe` from a given state prepends one pseudo-step with a missing observation whose
outgoing transition is (0, prior mean, prior var): the scan then starts exactly from the state's
predicted belief.
"""
import gin
import torch
from torch import nn

from models.kalman import FilterResult, kalman_filter, kalman_predict, kalman_step
from models.kalman_world_model import Inference, KalmanWorldModel, TransitionActivation
from models.mamba import Mamba, MambaState
from models.world_model import Belief


@gin.configurable
class KalMamba(KalmanWorldModel):
    """KalMamba world model (module docstring). Sizes the public material does not give are taken
    from VRKN (Becker and Neumann 2022), the closest relative by the same authors:

    Args:
        obs_shape: (D,) state vectors or (C, 64, 64) uint8 images.
        action_dim: A.
        encoder_fn, decoder_fn: factories from `models.networks`; None picks the default for obs_shape.
        latent_dim: Z = 230 (VRKN's latent size; KalMamba's is not published).
        hidden_dim: H = 300, width of both small nets and of the Mamba block (VRKN's hidden size).
        dropout: 0.1, MC dropout of both small nets (VRKN's rate; KalMamba's is not published).
        d_state, d_conv, expand: Mamba's state size 16, conv width 4, expansion 2 (the Mamba defaults).
        transition_scale_bounds, transition_scale_init: A in [0.4, 0.99] (KalMamba, secondary
            source), 0.9 at a zero network output (VRKN's init).
        transition_var_bounds, transition_var_init: Q in [0.001, 0.1], 0.01 at init (VRKN).
        obs_var_init, obs_var_min: R = softplus(.) with 1.0 at init and floor 0.01 (VRKN).
        initial_var_init, initial_var_min: learned var0, 1.0 at init, floor 0.001 (VRKN).
        free_nats: 3.0 (VRKN), clipping the KL per time step.
        reward_scale: 10.0, weight of the reward log-likelihood (VRKN's reward decoder scale).
        regulariser_weight: 1.0, weight of the Mahalanobis regulariser (KalMamba).
        detach_backbone_input: True, the backbone reads sg(w_t) (module docstring).
        use_kernel: let the Mamba block use mamba_ssm's CUDA kernel when available.
    """

    name = "kalmamba"

    def __init__(self, obs_shape, action_dim: int, encoder_fn=None, decoder_fn=None, latent_dim: int = 230,
                 hidden_dim: int = 300, dropout: float = 0.1, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 transition_scale_bounds=(0.4, 0.99), transition_scale_init: float = 0.9,
                 transition_var_bounds=(0.001, 0.1), transition_var_init: float = 0.01,
                 obs_var_init: float = 1.0, obs_var_min: float = 0.01, initial_var_init: float = 1.0,
                 initial_var_min: float = 0.001, free_nats: float = 3.0, reward_scale: float = 10.0,
                 regulariser_weight: float = 1.0, detach_backbone_input: bool = True, use_kernel: bool = True):
        super().__init__(obs_shape, action_dim, encoder_fn, decoder_fn, latent_dim, obs_var_init, obs_var_min,
                         initial_var_init, initial_var_min, free_nats, reward_scale)
        if int(hidden_dim) < 1:
            raise ValueError(f"KalMamba needs hidden_dim >= 1, got {hidden_dim}")
        if not 0.0 <= dropout < 1.0 or regulariser_weight < 0.0:
            raise ValueError(f"KalMamba needs dropout in [0, 1) and regulariser_weight >= 0, got {dropout} "
                             f"and {regulariser_weight}")
        Z, A, H = self.latent_dim, self.action_dim, int(hidden_dim)
        self.regulariser_weight = float(regulariser_weight)
        self.detach_backbone_input = bool(detach_backbone_input)
        self.input_net = nn.Sequential(nn.Linear(Z + A, H), nn.ReLU(), nn.Dropout(dropout))
        self.mamba = Mamba(H, d_state=d_state, d_conv=d_conv, expand=expand, use_kernel=use_kernel)
        self.backbone_output = nn.Linear(H, Z) if H != Z else nn.Identity()
        self.transition_net = nn.Sequential(nn.Linear(Z + A, H), nn.ReLU(), nn.Dropout(dropout), nn.Linear(H, 3 * Z))
        self.transition_activation = TransitionActivation(transition_scale_bounds, transition_scale_init,
                                                          transition_var_bounds, transition_var_init)

    def transition(self, m, action):
        """m (..., Z), action (..., A) -> (A, b, Q), each (..., Z): the transition out of the step of m."""
        return self.transition_activation(self.transition_net(torch.cat([m, action], dim=-1)))

    def backbone_input(self, w, a_prev):
        """w (..., Z), a_prev (..., A) -> x (..., H), the Mamba block's input."""
        if self.detach_backbone_input:
            w = w.detach()
        return self.input_net(torch.cat([w, a_prev], dim=-1))

    def initial_state(self, batch_size: int) -> Belief:
        """Initial belief plus m = 0 and a zero Mamba state (all reset by the first step anyway)."""
        state = super().initial_state(batch_size)
        mamba = self.mamba.initial_state(batch_size)
        state.update(m=state["mean"].new_zeros(batch_size, self.latent_dim), mamba_conv=mamba.conv,
                     mamba_ssm=mamba.ssm)
        return state

    def step(self, state: Belief, obs, prev_action, is_first) -> Belief:
        """obs (B, *obs_shape), prev_action (B, A), is_first (B,) -> belief (B, ...)."""
        self._check_inputs(obs.unsqueeze(1), prev_action.unsqueeze(1), is_first.unsqueeze(1))
        restart = is_first | state.get("reset", torch.zeros_like(is_first))
        w, R = (x.squeeze(1) for x in self.latent_observation(obs.unsqueeze(1)))
        a_prev = prev_action.to(w.dtype).masked_fill(restart.unsqueeze(-1), 0.0)
        A, b, Q = self.transition(state["m"], a_prev)
        mean0, var0 = self.initial_belief()
        filtered = kalman_step(state["mean"], state["var"], A, b, Q, w, R, is_first=restart, mean0=mean0, var0=var0)
        h, mamba = self.mamba.step(self.backbone_input(w, a_prev),
                                   MambaState(state["mamba_conv"], state["mamba_ssm"]), restart)
        return {"mean": filtered.filtered_mean, "var": filtered.filtered_var, "m": self.backbone_output(h),
                "mamba_conv": mamba.conv, "mamba_ssm": mamba.ssm, "reset": torch.zeros_like(restart)}

    def _infer(self, obs, prev_action, is_first, state: Belief | None) -> Inference:
        restart = self._restarts(is_first, state)
        fresh = state is None or bool(restart[:, 0].all())
        w, R = self.latent_observation(obs)
        a_prev = prev_action.to(w.dtype).masked_fill(restart.unsqueeze(-1), 0.0)
        mamba_state = None if fresh else MambaState(state["mamba_conv"], state["mamba_ssm"])
        h, mamba_state = self.mamba.forward_with_state(self.backbone_input(w, a_prev),
                                                       mamba_state, restart)
        m = self.backbone_output(h)
        a_next = torch.cat([a_prev[:, 1:], torch.zeros_like(a_prev[:, :1])], dim=1)
        A, b, Q = self.transition(m, a_next)
        mean0, var0 = self.initial_belief()
        if fresh:
            filtered = kalman_filter(A, b, Q, w, R, mean0, var0, is_first=restart)
        else:
            filtered = self._filter_from_state(state, a_prev[:, 0], A, b, Q, w, R, restart)
        beliefs = {"mean": filtered.filtered_mean, "var": filtered.filtered_var, "m": m}
        last = {"mean": beliefs["mean"][:, -1], "var": beliefs["var"][:, -1], "m": m[:, -1],
                "mamba_conv": mamba_state.conv, "mamba_ssm": mamba_state.ssm,
                "reset": torch.zeros_like(restart[:, 0])}
        return Inference(beliefs, last, filtered, A, b, Q, restart)

    def _filter_from_state(self, state, first_action, A, b, Q, w, R, restart) -> FilterResult:
        """Parallel filter whose step 0 is predicted from `state` (module docstring), (B, T, Z) each."""
        mean0, var0 = self.initial_belief()
        prior_mean, prior_var = kalman_predict(state["mean"], state["var"], *self.transition(state["m"], first_action))

        def prepend(x, first):
            return torch.cat([first.unsqueeze(1), x], dim=1)

        observed = torch.ones_like(restart)
        filtered = kalman_filter(prepend(A, torch.zeros_like(prior_mean)), prepend(b, prior_mean),
                                 prepend(Q, prior_var), prepend(w, torch.zeros_like(prior_mean)),
                                 prepend(R, torch.ones_like(prior_var)), mean0, var0,
                                 mask=prepend(observed, ~observed[:, 0]), is_first=prepend(restart, observed[:, 0]))
        return FilterResult(*(x[:, 1:] for x in filtered))

    def _regularisers(self, inference: Inference):
        """Mahalanobis distance of m_t to the filtered belief, filter side stop-gradient: (B, T) summed over Z."""
        mean = inference.filtered.filtered_mean.detach()
        var = inference.filtered.filtered_var.detach()
        distance = ((inference.beliefs["m"] - mean).square() / var).sum(-1)
        return self.regulariser_weight * distance.mean(), {"model/regulariser": distance.mean().detach()}
