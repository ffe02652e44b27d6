r"""KalMamba (Becker, Freymuth and Neumann 2024): a Mamba backbone drives a time-varying diagonal
linear-Gaussian latent chain, filtered and smoothed in parallel over time.

With w_t, R_t the latent observation of `models.kalman_world_model` and a_{t-1} = prev_action[:, t]
(zero where the belief restarts), per time step t:

    x_t = input_net(concat(w_t, a_{t-1}))                 Linear-ReLU-dropout, width H
    h_t = x_t + Mamba(LayerNorm(x_{<=t}))                  resets where the belief restarts
    m_t = Linear(LayerNorm(h_t))  (Linear: none if H = Z)  the backbone's summary, size Z
    (A_t, b_t, Q_t) = transition_net(concat(m_t, a_t))     Linear-ReLU-dropout-Linear(3 Z)

with a_t = prev_action[:, t + 1] (the action taken at t), A_t = 0.4 + 0.59 sigmoid(.) in [0.4, 0.99]
and Q_t in [0.001, 0.1] (bounded sigmoids, see the base module); the last step's (A, b, Q) are
unused. Because the transition depends on observations only through the backbone, never through
the filtered belief, all of (A, b, Q) exist before filtering starts: the Kalman filter and the RTS
smoother both run over the whole sequence at once (`models.kalman`: fused Triton kernels on CUDA,
associative scans elsewhere, see `kalman_backend`), and the Mamba scan is parallel too.
`backbone_residual = False` gives the bare block h_t = Mamba(x_{<=t}); `use_mamba = False` the
"without Mamba" ablation h_t = x_t. The LayerNorm before the summary is the final norm a Mamba model
ends with (`output_norm`; our choice, the paper is silent): without it nothing bounds m_t, and on
walker_walk the regulariser's pull of m_t towards a filtered mean that itself follows b_t(m_t)
grew m_t geometrically across updates until the loss overflowed (docs/results.md section 10).

Loss: the tight ELBO of the base class plus the Mahalanobis regulariser pulling m_t towards the
filtered belief, with d_{t,z} = (m_{t,z} - sg(mu+_{t,z}))^2 / sg(P+_{t,z}),

    regulariser = weight * mean_{b,t} mean_z d_{t,z}     (regulariser_reduction = 'mean')
    regulariser = weight * mean_{b,t} sum_z  d_{t,z}     (regulariser_reduction = 'sum', Z times larger)

where sg is stop-gradient: the regulariser trains the backbone to summarise the belief and never
moves the filter towards the backbone (letting its gradient reach mu+ and P+ collapses the latent).
The paper writes the sum; with Z = 230 and weight 1 the sum's gradient on the backbone is 50-300
times the ELBO's and decides the gradient clip, while the mean keeps both terms comparable
(REFERENCE.md, docs/results.md). The backbone reads w_t itself (`detach_backbone_input = False`,
the paper's figure 2), so with the mean reduction the regulariser also shapes the encoder a little.

Acting (`step`) is one Kalman predict + update (the transition into t from m_{t-1} and a_{t-1}) and
one recurrent Mamba step; the state holds the filtered mean / var at t - 1, m_{t-1} and the Mamba
state, so nothing is recomputed. In eval mode (dropout off) `observe` equals successive `step`s.
MC dropout samples its masks in train mode only: the agent acts in eval mode, with the mean network.

Open-loop prediction (`predict`) has no w_{t+1} for the backbone: it feeds the model's own expected
latent observation, E[w_{t+1}] = E[z_{t+1}] = A_t mu_t + b_t (H = I: the prior mean), and keeps the
Mamba state running, so each imagined step is one `step` whose update is skipped and whose backbone
reads the prior mean in place of the encoded observation.

Missing observations (obs_valid False) skip the Kalman update (the filter's `mask`), and the
backbone reads w_t = 0 there in place of the encoded observation: the time-parallel scan needs the
backbone's input before filtering, so the prior mean that `predict` feeds is not available, and zero
is what VRKN's code feeds its RSSM in place of a missing embedding.

Continuing `observe` from a given state prepends one pseudo-step with a missing observation whose
outgoing transition is (0, prior mean, prior var): the scan then starts exactly from the state's
predicted belief.
"""
import gin
import torch
from torch import nn

from models.kalman import FilterResult, kalman_filter, kalman_predict, kalman_step
from models.kalman_world_model import Inference, KalmanWorldModel, keyword_parameters
from models.mamba import Mamba, MambaState
from models.world_model import Belief


class KalMamba(KalmanWorldModel):
    """KalMamba world model (module docstring). Sizes the public material does not give are taken
    from VRKN (Becker and Neumann 2022), the closest relative by the same authors; every argument
    of `KalmanWorldModel` is accepted as a keyword (latent_dim 230, hidden_dim 300, dropout 0.1, ...).

    Args (KalMamba's own; defaults are the paper's where it states them):
        transition_scale_bounds: A in [0.4, 0.99] (KalMamba, secondary source).
        d_state, d_conv, expand: Mamba's state size 16, conv width 4, expansion 2 (the Mamba defaults).
        use_mamba: True; False is the paper's "without Mamba" ablation: h_t = x_t, per step.
        backbone_residual: h_t = x_t + Mamba(LayerNorm(x_t)) instead of the bare Mamba(x_t)
            (module docstring).
        regulariser_weight: 1.0, weight of the Mahalanobis regulariser (KalMamba); 0 is the paper's
            "without regulariser" ablation.
        regulariser_reduction: 'mean' over the Z latent dimensions (default) or 'sum' (the plain
            Mahalanobis distance), see the module docstring.
        detach_backbone_input: False, the backbone reads w_t itself (the paper's figure 2: the
            backbone shares the encoder's output); True reads sg(w_t).
        output_norm: True, LayerNorm(h_t) before the summary
            (module docstring); False is the backbone without a final norm.
        use_kernel: let the Mamba block use mamba_ssm's CUDA kernel when available.
    """

    name = "kalmamba"
    REDUCTIONS = ("mean", "sum")

    def __init__(self, obs_shape, action_dim: int, *, transition_scale_bounds=(0.4, 0.99), d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, use_mamba: bool = True, backbone_residual: bool = True,
                 regulariser_weight: float = 1.0, regulariser_reduction: str = "mean",
                 detach_backbone_input: bool = False, output_norm: bool = True, use_kernel: bool = True,
                 **kwargs):
        super().__init__(obs_shape, action_dim, transition_scale_bounds=transition_scale_bounds, **kwargs)
        if regulariser_weight < 0.0 or regulariser_reduction not in self.REDUCTIONS:
            raise ValueError(f"KalMamba needs regulariser_weight >= 0 and regulariser_reduction in "
                             f"{self.REDUCTIONS}, got {regulariser_weight} and {regulariser_reduction!r}")
        Z, A, H = self.latent_dim, self.action_dim, self.hidden_dim
        self.regulariser_weight = float(regulariser_weight)
        self.regulariser_reduction = regulariser_reduction
        self.detach_backbone_input = bool(detach_backbone_input)
        self.backbone_residual = bool(backbone_residual) and use_mamba
        self.input_net = nn.Sequential(nn.Linear(Z + A, H), nn.ReLU(), nn.Dropout(self.dropout))
        self.mamba = Mamba(H, d_state=d_state, d_conv=d_conv, expand=expand, use_kernel=use_kernel) if use_mamba else None
        self.backbone_norm = nn.LayerNorm(H) if self.backbone_residual else nn.Identity()
        self.output_norm = nn.LayerNorm(H) if output_norm else nn.Identity()
        self.backbone_output = nn.Linear(H, Z) if H != Z else nn.Identity()
        self.transition_net = nn.Sequential(nn.Linear(Z + A, H), nn.ReLU(), nn.Dropout(self.dropout),
                                            nn.Linear(H, 3 * Z))

    def transition(self, m, action):
        """m (..., Z), action (..., A) -> (A, b, Q), each (..., Z): the transition out of the step of m."""
        return self.transition_activation(self.transition_net(torch.cat([m, action], dim=-1)))

    def backbone_input(self, w, a_prev):
        """w (..., Z), a_prev (..., A) -> x (..., H), the Mamba block's input."""
        if self.detach_backbone_input:
            w = w.detach()
        return self.input_net(torch.cat([w, a_prev], dim=-1))

    def backbone(self, x, state: MambaState | None, restart):
        """x (B, T, H), restart (B, T) -> (m (B, T, Z), last Mamba state or None); state None: fresh."""
        if self.mamba is None:
            return self._summary(x), None
        h, state = self.mamba.forward_with_state(self.backbone_norm(x), state, restart)
        return self._summary(x + h if self.backbone_residual else h), state

    def backbone_step(self, x, state: MambaState | None, restart):
        """x (B, H), restart (B,) -> (m (B, Z), Mamba state or None): one step of `backbone`."""
        if self.mamba is None:
            return self._summary(x), None
        h, state = self.mamba.step(self.backbone_norm(x), state, restart)
        return self._summary(x + h if self.backbone_residual else h), state

    def _summary(self, h):
        """h (..., H) -> m (..., Z): the optional final LayerNorm, then the output projection."""
        return self.backbone_output(self.output_norm(h))

    def initial_state(self, batch_size: int) -> Belief:
        """Initial belief plus m = 0 and a zero Mamba state (all reset by the first step anyway)."""
        state = super().initial_state(batch_size)
        state["m"] = state["mean"].new_zeros(batch_size, self.latent_dim)
        if self.mamba is not None:
            mamba = self.mamba.initial_state(batch_size)
            state.update(mamba_conv=mamba.conv, mamba_ssm=mamba.ssm)
        return state

    def _step(self, state: Belief, w, R, a_prev, restart, obs_valid=None) -> Belief:
        A, b, Q = self.transition(state["m"], a_prev)
        mean0, var0 = self.initial_belief()
        filtered = kalman_step(state["mean"], state["var"], A, b, Q, w, R, mask=obs_valid, is_first=restart,
                               mean0=mean0, var0=var0)
        m, mamba = self.backbone_step(self.backbone_input(self._zero_missing(w, obs_valid), a_prev),
                                      self._mamba_state(state), restart)
        return self._carry(filtered.filtered_mean, filtered.filtered_var, m, mamba, restart)

    def _prior_step(self, state: Belief, action) -> Belief:
        """Predict with (A, b, Q) = transition(m_t, a_t), then one backbone step reading the prior
        mean as w_{t+1} (module docstring)."""
        mean, var = kalman_predict(state["mean"], state["var"], *self.transition(state["m"], action))
        no_restart = torch.zeros_like(state["reset"])
        m, mamba = self.backbone_step(self.backbone_input(mean, action), self._mamba_state(state), no_restart)
        return self._carry(mean, var, m, mamba, no_restart)

    def _infer(self, obs, prev_action, is_first, state: Belief | None, obs_valid=None) -> Inference:
        restart = self._restarts(is_first, state)
        fresh = state is None or bool(restart[:, 0].all())
        w, R = self.latent_observation(obs)
        a_prev = prev_action.to(w.dtype).masked_fill(restart.unsqueeze(-1), 0.0)
        m, mamba_state = self.backbone(self.backbone_input(self._zero_missing(w, obs_valid), a_prev),
                                       None if fresh else self._mamba_state(state), restart)
        a_next = torch.cat([a_prev[:, 1:], torch.zeros_like(a_prev[:, :1])], dim=1)
        A, b, Q = self.transition(m, a_next)
        mean0, var0 = self.initial_belief()
        if fresh:
            filtered = kalman_filter(A, b, Q, w, R, mean0, var0, mask=obs_valid, is_first=restart,
                                     backend=self._kalman_backend(w))
        else:
            filtered = self._filter_from_state(state, a_prev[:, 0], A, b, Q, w, R, restart, obs_valid)
        beliefs = {"mean": filtered.filtered_mean, "var": filtered.filtered_var, "m": m}
        last = self._carry(beliefs["mean"][:, -1], beliefs["var"][:, -1], m[:, -1], mamba_state, restart[:, 0])
        return Inference(beliefs, last, filtered, A, b, Q, restart)

    @staticmethod
    def _zero_missing(w, obs_valid):
        """w (..., Z) with zeros where obs_valid (...) is False: what the backbone reads."""
        return w if obs_valid is None else w.masked_fill(~obs_valid.unsqueeze(-1), 0.0)

    def _mamba_state(self, state: Belief) -> MambaState | None:
        return None if self.mamba is None else MambaState(state["mamba_conv"], state["mamba_ssm"])

    @staticmethod
    def _carry(mean, var, m, mamba: MambaState | None, like_flags) -> Belief:
        """The belief carried to the next step (B, ...): filter, backbone summary and Mamba state."""
        carry = {"mean": mean, "var": var, "m": m, "reset": torch.zeros_like(like_flags)}
        if mamba is not None:
            carry.update(mamba_conv=mamba.conv, mamba_ssm=mamba.ssm)
        return carry

    def _filter_from_state(self, state, first_action, A, b, Q, w, R, restart, obs_valid=None) -> FilterResult:
        """Whole-sequence filter whose step 0 is predicted from `state` (module docstring), (B, T, Z)
        each; obs_valid (B, T) or None as in `_infer`."""
        mean0, var0 = self.initial_belief()
        prior_mean, prior_var = kalman_predict(state["mean"], state["var"], *self.transition(state["m"], first_action))

        def prepend(x, first):
            return torch.cat([first.unsqueeze(1), x], dim=1)

        observed = torch.ones_like(restart)
        valid = observed if obs_valid is None else obs_valid
        filtered = kalman_filter(prepend(A, torch.zeros_like(prior_mean)), prepend(b, prior_mean),
                                 prepend(Q, prior_var), prepend(w, torch.zeros_like(prior_mean)),
                                 prepend(R, torch.ones_like(prior_var)), mean0, var0,
                                 mask=prepend(valid, ~observed[:, 0]), is_first=prepend(restart, observed[:, 0]),
                                 backend=self._kalman_backend(w))
        return FilterResult(*(x[:, 1:] for x in filtered))

    def _regularisers(self, inference: Inference):
        """The Mahalanobis regulariser of the module docstring, filter side stop-gradient.

        Metrics: the term added to the loss, the distance summed over Z (mean over b, t), the
        per-dimension distance (mean over b, t) summarised by its median and maximum over Z, and the
        distance's two parts: the squared error (m - mu+)^2 and, for scale, mu+^2 (means over b, t, z)."""
        mean = inference.filtered.filtered_mean.detach()
        var = inference.filtered.filtered_var.detach()
        squared_error = (inference.beliefs["m"] - mean).square()
        per_element = squared_error / var  # (B, T, Z)
        reduced = per_element.mean(-1) if self.regulariser_reduction == "mean" else per_element.sum(-1)
        value = self.regulariser_weight * reduced.mean()
        per_dim = per_element.detach().mean(dim=(0, 1))
        return value, {"model/regulariser": value.detach(),
                       "model/mahalanobis": per_dim.sum(),
                       "model/mahalanobis_dim_median": per_dim.median(),
                       "model/mahalanobis_dim_max": per_dim.max(),
                       "model/backbone_sq_error": squared_error.detach().mean(),
                       "model/filtered_mean_sq": mean.square().mean()}


KalMamba = gin.configurable(KalMamba, allowlist=keyword_parameters(KalMamba))
