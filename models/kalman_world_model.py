r"""What KalMamba and VRKN share: a diagonal linear-Gaussian latent chain observed through the encoder,
Kalman filtering for acting, RTS smoothing and the tight ELBO for training.

Generative model per latent dimension (latent size Z; tensors (B, T, Z)):

    z_t = N(mean0, var0)                          at t = 0 and wherever is_first[t]
    z_t = A_{t-1} z_{t-1} + b_{t-1} + N(0, Q_{t-1})   otherwise (A, b, Q from the model's transition)
    w_t = z_t + N(0, R_t)                         (w_t, R_t) = observation head(encoder(o_t)), H = I
    o_t ~ N(decoder(z_t), I),   r_t ~ N(reward_head(z_t), 1)

The subclass supplies the transition (A_t, b_t, Q_t) and the filter (`_infer`); this class supplies
the latent observation (w, R), the learned initial belief, the features and the loss

    loss = mean_{b,t} [ -log p(o_t | z_t) - reward_scale log p(r_t | z_t) + max(c_t kl_t, free_nats) ]
           + subclass regularisers,

(with obs_valid, the observation term is averaged over the valid steps only, VRKN's code; the
filter skips the update of z_t where o_t is missing, the `mask` of `models.kalman`),

with z_t drawn from the smoothed marginal N(mu^s_t, P^s_t) by reparameterisation in train mode (its
mean in eval mode) and kl_t the tight-bound KL of `models.tight_elbo` (clipped per (b, t) after
summing over Z, as VRKN's free nats); c_t = start_kl_weight at steps whose prior is the initial
belief (step 0 of every window and each reset), 1 elsewhere (VRKN's code weights that KL by 0).
The metric `model/elbo` is the unclipped, unscaled bound per step: mean [log p(o_t | z_t) + log p(r_t | z_t) - kl_t]. Smoothing is the RTS smoother
for both models: it has no parameters and no sequential dependency of its own, so it runs over the
whole window at once, as fused Triton kernels on CUDA or an associative scan (`kalman_backend`).

Features for the actor and critic (`belief_features`): the filtered mean, Z values (the KalMamba
paper's SAC input), or concat(filtered mean, log filtered variance), 2 Z values (the log puts
variances spanning decades on one scale), which lets the policy see its uncertainty.

Reconstruction and open-loop prediction (`reconstruct`, `predict`) decode latent means: the
reconstruction is decoder(mu+_t) of the filtered mean; the prediction rolls the prior mean
m_{t+k} = A_{t+k-1} m_{t+k-1} + b_{t+k-1} from m_t = mu+_t under the given actions, with the
subclass's transition (`_prior_step`; the variance A^2 P + Q is carried but does not enter the mean
for either model), and decodes each m_{t+k}.

Bounded activations (VRKN's parameterisation): a quantity x in [low, high] with value `init` at a
zero network output is  low + (high - low) sigmoid(raw + logit((init - low) / (high - low))); a
variance with a floor is  softplus(raw + softplus^-1(init - floor)) + floor.
"""
import abc
import inspect
import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from models import networks
from models.kalman import BACKENDS, FilterResult, kalman_smoother, triton_available
from models.tight_elbo import tight_kl
from models.world_model import Belief, WorldModel, obs_valid_kwargs


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _softplus_inverse(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class BoundedSigmoid(nn.Module):
    """raw (...) -> low + (high - low) sigmoid(raw + shift), equal to `init` at raw = 0."""

    def __init__(self, low: float, high: float, init: float):
        super().__init__()
        if not low < init < high:
            raise ValueError(f"bounds must satisfy low < init < high, got low={low}, init={init}, high={high}")
        self.low, self.high, self.shift = float(low), float(high), _logit((init - low) / (high - low))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(raw + self.shift)


class FlooredSoftplus(nn.Module):
    """raw (...) -> softplus(raw + shift) + floor, equal to `init` at raw = 0."""

    def __init__(self, init: float, floor: float):
        super().__init__()
        if not 0.0 < floor < init:
            raise ValueError(f"variance bounds must satisfy 0 < floor < init, got floor={floor}, init={init}")
        self.floor, self.shift = float(floor), _softplus_inverse(init - floor)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw + self.shift) + self.floor


class TransitionActivation(nn.Module):
    """raw (..., 3 Z) -> (A, b, Q), each (..., Z): A and Q through `BoundedSigmoid`, b as is."""

    def __init__(self, scale_bounds, scale_init: float, var_bounds, var_init: float):
        super().__init__()
        self.scale = BoundedSigmoid(scale_bounds[0], scale_bounds[1], scale_init)
        self.var = BoundedSigmoid(var_bounds[0], var_bounds[1], var_init)

    def forward(self, raw: torch.Tensor):
        raw_scale, offset, raw_var = raw.chunk(3, dim=-1)
        return self.scale(raw_scale), offset, self.var(raw_var)


class Inference(NamedTuple):
    """What a subclass's `_infer` returns for a sequence (B, T).

    beliefs: filtered beliefs (B, T, ...); last_state: belief after the last step (B, ...);
    filtered: the Kalman filter's marginals; A, b, Q: (B, T, Z) transitions *out of* each step
    (z_t -> z_{t+1}, the last one unused), as given to the filter; restart: (B, T) bool, the steps
    whose prior is the initial belief (step 0 of a fresh sequence and every is_first).
    """

    beliefs: Belief
    last_state: Belief
    filtered: FilterResult
    A: torch.Tensor
    b: torch.Tensor
    Q: torch.Tensor
    restart: torch.Tensor


def keyword_parameters(cls) -> list[str]:
    """The keyword arguments `cls` accepts along its class hierarchy. A subclass passes the base's
    on with `**kwargs`, which hides them from gin; `gin.configurable(cls, allowlist=...)` with this
    list keeps a misspelt binding a parse-time error."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and issubclass(klass, KalmanWorldModel):
            for name, parameter in inspect.signature(klass.__init__).parameters.items():
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                    names.add(name)
    return sorted(names)


class KalmanWorldModel(WorldModel, abc.ABC):
    """Base of KalMamba and VRKN (module docstring). Subclasses implement `_infer` and `_step`,
    may extend `initial_state`, and may add `_regularisers`.

    Every argument after (obs_shape, action_dim) is a keyword argument, each default written here
    once; a subclass passes on what it does not change (`**kwargs`).

    Args:
        obs_shape: (D,) state vectors or (C, 64, 64) uint8 images.
        action_dim: A.
        encoder_fn, decoder_fn: factories from `models.networks`; None picks the default for obs_shape.
        latent_dim: Z.    hidden_dim: width H of the subclass's transition networks.
        dropout: MC dropout rate of the transition networks (train mode only).
        transition_scale_bounds, transition_scale_init: range of A and its value at a zero network output.
        transition_var_bounds, transition_var_init: range of Q and its value at init.
        obs_var_init, obs_var_min: R = softplus(.) with this value at init and this floor.
        initial_var_init, initial_var_min: learned var0, its init and floor.
        learn_initial_mean: mean0 is a parameter (True) or a fixed zero buffer (False).
        free_nats: per-step KL clip (after summing over Z).
        reward_scale: weight of the reward log-likelihood.
        start_kl_weight: weight of the KL at steps whose prior is the initial belief (step 0 of every
            training window and each reset); the `model/elbo` metric always counts it fully.
        belief_features: what the actor and critic see, 'mean' (the filtered mean, Z values) or
            'mean_and_log_var' (concat(filtered mean, log filtered variance), 2 Z values).
        learning_rate, grad_clip: the agent's model optimiser settings for this model (None keeps
            `WorldModel`'s).
        kalman_backend: how sequences are filtered and smoothed (`models.kalman`): 'scan',
            'sequential', 'triton' (fused kernels), or 'auto': 'triton' for CUDA tensors when triton
            imports, else 'scan'. All give the same results up to rounding.
    """

    FEATURES = ("mean", "mean_and_log_var")
    KALMAN_BACKENDS = ("auto",) + BACKENDS

    def __init__(self, obs_shape, action_dim: int, *, encoder_fn=None, decoder_fn=None, latent_dim: int = 230,
                 hidden_dim: int = 300, dropout: float = 0.1, transition_scale_bounds=(0.1, 0.99),
                 transition_scale_init: float = 0.9, transition_var_bounds=(0.001, 0.1),
                 transition_var_init: float = 0.01, obs_var_init: float = 1.0, obs_var_min: float = 0.01,
                 initial_var_init: float = 1.0, initial_var_min: float = 0.001, learn_initial_mean: bool = True,
                 free_nats: float = 3.0, reward_scale: float = 10.0, start_kl_weight: float = 1.0,
                 belief_features: str = "mean", learning_rate: float | None = None,
                 grad_clip: float | None = None, kalman_backend: str = "auto"):
        super().__init__()
        name = type(self).__name__
        self.obs_shape = tuple(int(s) for s in obs_shape)
        if len(self.obs_shape) not in (1, 3):
            raise ValueError(f"{name} needs obs_shape (D,) or (C, 64, 64), got {self.obs_shape}")
        for arg, value in [("action_dim", action_dim), ("latent_dim", latent_dim), ("hidden_dim", hidden_dim)]:
            if int(value) < 1:
                raise ValueError(f"{name} needs {arg} >= 1, got {value}")
        if free_nats < 0.0 or reward_scale < 0.0 or start_kl_weight < 0.0:
            raise ValueError(f"{name} needs free_nats, reward_scale and start_kl_weight >= 0, got {free_nats}, "
                             f"{reward_scale} and {start_kl_weight}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name} needs dropout in [0, 1), got {dropout}")
        if belief_features not in self.FEATURES:
            raise ValueError(f"{name} needs belief_features in {self.FEATURES}, got {belief_features!r}")
        if kalman_backend not in self.KALMAN_BACKENDS:
            raise ValueError(f"{name} needs kalman_backend in {self.KALMAN_BACKENDS}, got {kalman_backend!r}")
        if kalman_backend == "triton" and not triton_available():
            raise ValueError(f"{name} was given kalman_backend='triton', but triton does not import")
        for arg, value in [("learning_rate", learning_rate), ("grad_clip", grad_clip)]:
            if value is not None and not value > 0.0:
                raise ValueError(f"{name} needs {arg} > 0, got {value}")
            if value is not None:
                setattr(self, arg, float(value))
        self.action_dim, self.latent_dim = int(action_dim), int(latent_dim)
        self.hidden_dim, self.dropout = int(hidden_dim), float(dropout)
        self.free_nats, self.reward_scale = float(free_nats), float(reward_scale)
        self.start_kl_weight = float(start_kl_weight)
        self.belief_features = belief_features
        self.kalman_backend = kalman_backend
        self.feature_dim = self.latent_dim if belief_features == "mean" else 2 * self.latent_dim

        self.encoder = (encoder_fn or networks.default_encoder_fn)(self.obs_shape)
        self.obs_head = nn.Linear(self.encoder.embed_dim, 2 * self.latent_dim)
        self.obs_var = FlooredSoftplus(obs_var_init, obs_var_min)
        self.decoder = (decoder_fn or networks.default_decoder_fn)(self.latent_dim, self.obs_shape)
        self.reward_head = networks.RewardHead(self.latent_dim)
        self.transition_activation = TransitionActivation(transition_scale_bounds, transition_scale_init,
                                                          transition_var_bounds, transition_var_init)
        if learn_initial_mean:
            self.initial_mean = nn.Parameter(torch.zeros(self.latent_dim))
        else:
            self.register_buffer("initial_mean", torch.zeros(self.latent_dim))
        self.initial_var_raw = nn.Parameter(torch.zeros(self.latent_dim))
        self.initial_var = FlooredSoftplus(initial_var_init, initial_var_min)

    # -- pieces ----------------------------------------------------------------------------------
    def initial_belief(self):
        """(mean0, var0), each (Z,)."""
        return self.initial_mean, self.initial_var(self.initial_var_raw)

    def latent_observation(self, obs):
        """obs (B, T, *obs_shape) -> (w, R), each (B, T, Z): the observation of z_t and its variance."""
        w, raw_var = self.obs_head(self.encoder(obs)).chunk(2, dim=-1)
        return w, self.obs_var(raw_var)

    # -- interface -------------------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> Belief:
        """The initial belief N(mean0, var0), and `reset` = True: the next step restarts (B, ...)."""
        mean0, var0 = self.initial_belief()
        return {"mean": mean0.detach().expand(batch_size, -1).clone(),
                "var": var0.detach().expand(batch_size, -1).clone(),
                "reset": torch.ones(batch_size, dtype=torch.bool, device=mean0.device)}

    def observe(self, obs, prev_action, is_first, state: Belief | None = None, obs_valid=None):
        """obs (B, T, *obs_shape), prev_action (B, T, A), is_first (B, T), obs_valid (B, T) or None
        -> (beliefs (B, T, ...), last (B, ...))."""
        self._check_inputs(obs, prev_action, is_first, obs_valid)
        inference = self._infer(obs, prev_action, is_first, state, **obs_valid_kwargs(obs_valid))
        return inference.beliefs, inference.last_state

    def step(self, obs, prev_action, is_first, state: Belief, obs_valid=None) -> Belief:
        """obs (B, *obs_shape), prev_action (B, A), is_first (B,), obs_valid (B,) or None -> belief (B, ...).

        The belief restarts where is_first or where `state` says the next step restarts; the
        previous action is zero there. The subclass's `_step` does one filter step on (w_t, R_t),
        with no update where obs_valid is False."""
        self._check_inputs(obs.unsqueeze(1), prev_action.unsqueeze(1), is_first.unsqueeze(1),
                           None if obs_valid is None else obs_valid.unsqueeze(1))
        restart = is_first | state.get("reset", torch.zeros_like(is_first))
        w, R = (x.squeeze(1) for x in self.latent_observation(obs.unsqueeze(1)))
        a_prev = prev_action.to(w.dtype).masked_fill(restart.unsqueeze(-1), 0.0)
        return self._step(state, w, R, a_prev, restart, **obs_valid_kwargs(obs_valid))

    def features(self, belief: Belief) -> torch.Tensor:
        """The filtered mean (..., Z), or concat(mean, log var) (..., 2 Z): `belief_features`."""
        if self.belief_features == "mean":
            return belief["mean"]
        return torch.cat([belief["mean"], torch.log(belief["var"])], dim=-1)

    def belief_distribution(self, belief: Belief):
        """The filtered marginal N(mu+, P+): (mean, var), each (B, [T,] Z)."""
        return belief["mean"], belief["var"]

    def reconstruct(self, belief: Belief) -> torch.Tensor:
        """decoder(filtered mean): (B, [T,] *obs_shape), in the decoder's preprocessed space."""
        return self.decoder(belief["mean"])

    def predict(self, state: Belief, actions) -> torch.Tensor:
        """state (B, ...) of `step`, actions (B, K, A) -> decoded prior means (B, K, *obs_shape)
        (module docstring); no random numbers are drawn (dropout only acts in train mode)."""
        self._check_open_loop(state, actions)
        means = []
        for k in range(actions.shape[1]):
            state = self._prior_step(state, actions[:, k].to(state["mean"].dtype))
            means.append(state["mean"])
        return self.decoder(torch.stack(means, dim=1))

    def loss(self, batch: dict[str, torch.Tensor]):
        """batch: obs, prev_action, reward, is_first, optional obs_valid (see `models.world_model`)
        -> (loss, metrics, beliefs)."""
        self._check_batch(batch)
        obs, reward, obs_valid = batch["obs"], batch["reward"], batch.get("obs_valid")
        inference = self._infer(obs, batch["prev_action"], batch["is_first"], None, **obs_valid_kwargs(obs_valid))
        smoothed = kalman_smoother(inference.filtered, inference.A, inference.b, inference.Q,
                                   backend=self._kalman_backend(inference.A))
        mean, var = smoothed.smoothed_mean, smoothed.smoothed_var
        z = mean + var.sqrt() * torch.randn_like(mean) if self.training else mean
        obs_ll = self.decoder.log_likelihood(z, obs)
        reward_ll = self.reward_head.log_likelihood(z, reward)
        mean0, var0 = self.initial_belief()
        kl = tight_kl(inference.filtered.filtered_var, mean, var, inference.A, inference.b, inference.Q,
                      mean0, var0, inference.restart)
        weighted_kl = torch.where(inference.restart, self.start_kl_weight * kl, kl)
        kl_loss = weighted_kl.clamp(min=self.free_nats).mean()
        extra_loss, metrics = self._regularisers(inference)
        obs_term = self.valid_mean(obs_ll, obs_valid)
        loss = kl_loss - obs_term - self.reward_scale * reward_ll.mean() + extra_loss
        elbo = (obs_ll + reward_ll - kl).mean() if obs_valid is None else obs_term + (reward_ll - kl).mean()
        metrics.update({
            "model/loss": loss.detach(),
            "model/elbo": elbo.detach(),
            "model/obs_log_likelihood": obs_term.detach(),
            "model/reward_log_likelihood": reward_ll.mean().detach(),
            "model/kl": kl.mean().detach(),
            "model/kl_loss": kl_loss.detach(),
            "model/transition_scale": inference.A.mean().detach(),
            "model/transition_var": inference.Q.mean().detach(),
            "model/filtered_var": inference.filtered.filtered_var.mean().detach(),
            "model/smoothed_var": var.mean().detach(),
        })
        return loss, metrics, inference.beliefs

    # -- for subclasses ----------------------------------------------------------------------------
    @abc.abstractmethod
    def _infer(self, obs, prev_action, is_first, state: Belief | None, obs_valid=None) -> Inference:
        """Filter a checked sequence from `state` (None: `initial_state`), skipping the update
        where obs_valid (B, T) is False (None: all valid); see `Inference`."""

    @abc.abstractmethod
    def _step(self, state: Belief, w, R, a_prev, restart, obs_valid=None) -> Belief:
        """One filter step from `state`: w, R (B, Z), a_prev (B, A) zero where restart (B,) bool;
        no update where obs_valid (B,) is False (None: valid)."""

    @abc.abstractmethod
    def _prior_step(self, state: Belief, action) -> Belief:
        """One step of the prior without an observation: state (B, ...), action (B, A) taken at the
        state's step -> the predicted belief (B, ...) with mean A m + b and variance A^2 P + Q."""

    def _regularisers(self, inference: Inference):
        """(scalar added to the loss, metrics dict); none by default."""
        return inference.filtered.filtered_mean.new_zeros(()), {}

    def _kalman_backend(self, like: torch.Tensor) -> str:
        """`kalman_backend` for tensors like `like`, with 'auto' resolved by their device."""
        if self.kalman_backend != "auto":
            return self.kalman_backend
        return "triton" if like.is_cuda and triton_available() else "scan"

    def _restarts(self, is_first, state: Belief | None):
        """(B, T) bool: is_first, plus step 0 where the state says the next step restarts."""
        restart = is_first.clone()
        if state is None:
            restart[:, 0] = True
        elif "reset" in state:
            restart[:, 0] |= state["reset"].to(restart.device)
        return restart
