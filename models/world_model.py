"""The one interface every world model implements; agents and the harness use nothing else.

Data conventions (batch-first; a batch is what `agents.replay.ReplayBuffer.sample` returns):

    obs          (B, T, *obs_shape)  float32 state vectors, or uint8 images (B, T, 3, 64, 64)
    prev_action  (B, T, A)           the action that led to obs[:, t]; zero where is_first
    reward       (B, T)              reward received on arriving at obs[:, t]; zero where is_first
    is_first     (B, T) bool         obs[:, t] starts an episode: the belief restarts from the prior
    is_terminal  (B, T) bool         obs[:, t] is terminal (never true in DeepMind Control)
    obs_valid    (B, T) bool         optional: False where obs[:, t] was withheld (the missing_state
                                     suite; the observation is zeros there). Absent or None: all valid.

A *belief* is a dict of tensors: (B, T, ...) per time step from `observe`, (B, ...) from `step` and
`initial_state`. It holds everything the model needs to continue filtering (for example the Kalman
mean/variance plus the recurrent state of the backbone). Beliefs used for acting contain only
filtered information: nothing from observations after time t.

Contract:
    initial_state(batch_size) -> belief before the first observation, (B, ...).
    observe(obs, prev_action, is_first, state=None, obs_valid=None) -> (beliefs (B, T, ...), last_state (B, ...))
        Filtered beliefs for a whole sequence, time-parallel where the model allows. `state`
        continues from an earlier chunk; None means `initial_state`.
    step(obs, prev_action, is_first, state, obs_valid=None) -> state
        One environment step in O(1) time and memory: obs (B, *obs_shape), prev_action (B, A),
        is_first (B,), obs_valid (B,) or None. `observe` over T steps equals T successive `step`s
        (eval mode). Both methods take the data first and the state to continue from last.
        Where obs_valid is False the observation carries no information: the Kalman models skip
        the update (their filter's `mask`), RSSM reads a zero embedding (and a validity input when
        built with `obs_valid_input`), Identity sees zeros (and the flag with `obs_valid_feature`).
        The agent passes obs_valid only when the environment gives one, so a model written
        before it existed keeps working on the fully observed suites.
    features(belief) -> (..., feature_dim) tensor the actor and critic see.
    loss(batch) -> (loss, metrics, beliefs)
        Scalar training loss (negative ELBO and regularisers), a dict of scalar tensors with keys
        namespaced `model/...`, and the filtered beliefs of `observe` computed on the way (the agent
        detaches them before SAC uses them). With batch["obs_valid"], the observation likelihood
        counts valid steps only (mean over them), as in VRKN's code for both VRKN and RSSM.
    reconstruct(belief) -> obs mean (B, [T,] *obs_shape), or None
        The decoder's mean observation for the filtered belief, in the decoders' preprocessed space
        (`models.networks.preprocess_obs`: images in [-0.5, 0.5]; `networks.image_to_uint8` inverts).
    predict(state, actions) -> obs means (B, K, *obs_shape), or None
        Open loop: roll the model's prior K steps from a filtered `state` (B, ...) of `step` under
        `actions` (B, K, A) (actions[:, 0] is the one taken at the state's step), with no
        observations, and decode each step's mean latent. In eval mode both draw no random numbers,
        so calling them while acting changes no episode. Models without an observation model
        (the base class's default, e.g. `Identity`) return None: the eval videos then show the
        frame alone.

    belief_distribution(belief) -> (mean, var), each (B, [T,] Z), or None
        The Gaussian marginal of the filtered latent, for models whose belief is one (the Kalman
        models' filtered mean / variance, RSSM's posterior); None otherwise (the base class's).
        The evaluation's belief probes read it (harness/belief_metrics.py).

Every model declares `name`, `obs_shape`, `action_dim` and `feature_dim`, and may override the
optimiser settings the agent uses for it (`learning_rate`, `grad_clip`: the values its authors
trained it with), so swapping the model by one gin binding also swaps them.

A new baseline is one file implementing this class plus one gin file binding
`Experiment.world_model = @MyModel` (see docs/adding_a_baseline.md).
"""
import abc

import torch
from torch import nn

Belief = dict[str, torch.Tensor]


def obs_valid_kwargs(obs_valid) -> dict:
    """{"obs_valid": obs_valid}, or {} for None: callers pass the flag on only when there is one, so
    a method written (or overridden) before obs_valid existed keeps working on fully observed data."""
    return {} if obs_valid is None else {"obs_valid": obs_valid}


class WorldModel(nn.Module, abc.ABC):
    """Abstract base: see the module docstring for the contract."""

    # The method's label on the leaderboard and in run directories: lower case, letters, digits
    # and underscores. The run's identity is read from the class that was built, never from a
    # second label that could disagree with it.
    name: str
    obs_shape: tuple[int, ...]
    action_dim: int
    feature_dim: int
    # Adam learning rate and gradient-norm clip of the agent's model optimiser for this model.
    learning_rate: float = 3e-4
    grad_clip: float = 100.0

    @abc.abstractmethod
    def initial_state(self, batch_size: int) -> Belief:
        ...

    @abc.abstractmethod
    def observe(self, obs, prev_action, is_first, state: Belief | None = None,
                obs_valid=None) -> tuple[Belief, Belief]:
        ...

    @abc.abstractmethod
    def step(self, obs, prev_action, is_first, state: Belief, obs_valid=None) -> Belief:
        ...

    @abc.abstractmethod
    def features(self, belief: Belief) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], Belief]:
        ...

    def reconstruct(self, belief: Belief) -> torch.Tensor | None:
        """Decoder mean of the filtered belief (module docstring); None: no observation model."""
        return None

    def predict(self, state: Belief, actions: torch.Tensor) -> torch.Tensor | None:
        """state (B, ...), actions (B, K, A) -> open-loop decoder means (B, K, *obs_shape), or None."""
        return None

    def belief_distribution(self, belief: Belief) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, var) of a Gaussian belief's latent (module docstring), or None."""
        return None

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def _check_batch(self, batch) -> None:
        """One clear error for a training batch without the keys `loss` needs, or of bad shapes."""
        missing = {"obs", "prev_action", "reward", "is_first"} - set(batch)
        if missing:
            raise ValueError(f"{type(self).__name__}.loss needs batch keys {sorted(missing)}")
        self._check_inputs(batch["obs"], batch["prev_action"], batch["is_first"], batch.get("obs_valid"))

    def _check_open_loop(self, state: Belief, actions) -> None:
        """One clear error for `predict` inputs: actions (B, K, A) with K >= 1, a state after a step."""
        batch = next(iter(state.values())).shape[0]
        if actions.dim() != 3 or actions.shape[0] != batch or actions.shape[1] < 1 or actions.shape[2] != self.action_dim:
            raise ValueError(f"actions must have shape ({batch}, K, {self.action_dim}) with K >= 1, "
                             f"got {tuple(actions.shape)}")
        if "reset" in state and bool(state["reset"].any()):
            raise ValueError("predict needs a filtered belief returned by step/observe, not an initial state")

    def _check_inputs(self, obs, prev_action, is_first, obs_valid=None) -> None:
        """One clear error for sequences that do not match the model (shapes as in `observe`)."""
        if not torch.is_tensor(is_first) or is_first.dim() != 2 or is_first.dtype != torch.bool:
            got = f"{is_first.dtype} {tuple(is_first.shape)}" if torch.is_tensor(is_first) else type(is_first).__name__
            raise ValueError(f"is_first must be a bool tensor of shape (B, T), got {got}")
        batch_time = tuple(is_first.shape)
        if batch_time[1] < 1:
            raise ValueError("sequences need at least one step (T >= 1)")
        if tuple(obs.shape) != batch_time + self.obs_shape:
            raise ValueError(f"obs must have shape {batch_time + self.obs_shape} (B, T, *obs_shape), "
                             f"got {tuple(obs.shape)}")
        if tuple(prev_action.shape) != batch_time + (self.action_dim,):
            raise ValueError(f"prev_action must have shape {batch_time + (self.action_dim,)} (B, T, A), "
                             f"got {tuple(prev_action.shape)}")
        if obs_valid is not None and (not torch.is_tensor(obs_valid) or obs_valid.dtype != torch.bool
                                      or tuple(obs_valid.shape) != batch_time):
            got = f"{obs_valid.dtype} {tuple(obs_valid.shape)}" if torch.is_tensor(obs_valid) else type(obs_valid).__name__
            raise ValueError(f"obs_valid must be a bool tensor of shape {batch_time} (B, T) or None, got {got}")

    @staticmethod
    def valid_mean(values, obs_valid):
        """values (B, T) -> their mean over all steps (obs_valid None) or over the valid ones
        (VRKN's code: sum over valid steps / their count; 0 when none is valid)."""
        if obs_valid is None:
            return values.mean()
        weight = obs_valid.to(values.dtype)
        return (values * weight).sum() / weight.sum().clamp(min=1.0)
