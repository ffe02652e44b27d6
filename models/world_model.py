"""The one interface every world model implements; agents and the harness use nothing else.

Data conventions (batch-first; a batch is what `agents.replay.ReplayBuffer.sample` returns):

    obs          (B, T, *obs_shape)  float32 state vectors, or uint8 images (B, T, 3, 64, 64)
    prev_action  (B, T, A)           the action that led to obs[:, t]; zero where is_first
    reward       (B, T)              reward received on arriving at obs[:, t]; zero where is_first
    is_first     (B, T) bool         obs[:, t] starts an episode: the belief restarts from the prior
    is_terminal  (B, T) bool         obs[:, t] is terminal (never true in DeepMind Control)

A *belief* is a dict of tensors: (B, T, ...) per time step from `observe`, (B, ...) from `step` and
`initial_state`. It holds everything the model needs to continue filtering (for example the Kalman
mean/variance plus the recurrent state of the backbone). Beliefs used for acting contain only
filtered information: nothing from observations after time t.

Contract:
    initial_state(batch_size) -> belief before the first observation, (B, ...).
    observe(obs, prev_action, is_first, state=None) -> (beliefs (B, T, ...), last_state (B, ...))
        Filtered beliefs for a whole sequence, time-parallel where the model allows. `state`
        continues from an earlier chunk; None means `initial_state`.
    step(obs, prev_action, is_first, state) -> state
        One environment step in O(1) time and memory: obs (B, *obs_shape), prev_action (B, A),
        is_first (B,). `observe` over T steps equals T successive `step`s (eval mode). Both
        methods take the data first and the state to continue from last.
    features(belief) -> (..., feature_dim) tensor the actor and critic see.
    loss(batch) -> (loss, metrics, beliefs)
        Scalar training loss (negative ELBO and regularisers), a dict of scalar tensors with keys
        namespaced `model/...`, and the filtered beliefs of `observe` computed on the way (the agent
        detaches them before SAC uses them).
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
    def observe(self, obs, prev_action, is_first, state: Belief | None = None) -> tuple[Belief, Belief]:
        ...

    @abc.abstractmethod
    def step(self, obs, prev_action, is_first, state: Belief) -> Belief:
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
        self._check_inputs(batch["obs"], batch["prev_action"], batch["is_first"])

    def _check_open_loop(self, state: Belief, actions) -> None:
        """One clear error for `predict` inputs: actions (B, K, A) with K >= 1, a state after a step."""
        batch = next(iter(state.values())).shape[0]
        if actions.dim() != 3 or actions.shape[0] != batch or actions.shape[1] < 1 or actions.shape[2] != self.action_dim:
            raise ValueError(f"actions must have shape ({batch}, K, {self.action_dim}) with K >= 1, "
                             f"got {tuple(actions.shape)}")
        if "reset" in state and bool(state["reset"].any()):
            raise ValueError("predict needs a filtered belief returned by step/observe, not an initial state")

    def _check_inputs(self, obs, prev_action, is_first) -> None:
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
