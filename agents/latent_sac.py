"""SAC on the filtered beliefs of any `WorldModel`: the one agent every method shares.

One update on a replay batch (B, T):
  1. world model: loss(batch) -> one optimizer step (skipped for models without parameters);
  2. SAC on the transitions (f_t, a_{t+1}^prev, r_{t+1}, f_{t+1}) between consecutive filtered
     features f_t = features(belief_t), detached from the model; a transition is valid unless
     obs_{t+1} starts a new episode, and its discount is 0 when obs_{t+1} is terminal.

Suites that withhold observations (missing_state) give a validity flag: `act` takes it as `obs_valid`
and replay batches carry it as batch["obs_valid"] (B, T); both reach the world model (`step` /
`loss`, models/world_model.py) only when given, so nothing changes for the other suites.

Observations reach the world model standardised by `agents.obs_normaliser.ObsNormaliser` (fitted
once, on the prefill episodes, by `fit_obs_normaliser`; identity for images), in `update` and in
`act` alike. The model optimiser is Adam with the world model's own `learning_rate` and
`grad_clip` (the settings its authors trained it with) unless `model_lr` / `model_grad_clip` are
given. The metric `model/grad_clipped` is 1 on updates whose gradient norm exceeded the clip, so
its average over a log interval is the fraction of clipped updates.

SAC trains on the beliefs of the model's own training pass (train mode: MC dropout active, RSSM's
deterministic path driven by sampled latents), while acting runs the model in eval mode. This costs
no second pass over the sequence, and treats every model alike; recomputing the features in eval
mode would remove that train/act mismatch at the price of one more forward pass per update.

`compile` chooses how an update and an acting step run: 'none' (eager PyTorch), 'graph' (each one
recorded once as a CUDA graph and replayed, `agents.cuda_graph`; CUDA only), or 'auto' (graph on
CUDA, eager elsewhere). Both modes run the same computation; `_update` and `_act` are what is
captured, so they never synchronise with the host.
"""
import gin
import numpy as np
import torch

from agents.cuda_graph import COMPILE_MODES, CapturedCall, check_compile, resolve_compile, set_capturable, signature
from agents.obs_normaliser import ObsNormaliser
from agents.sac import SAC
from models.world_model import obs_valid_kwargs

STATE = "state/"  # prefix of the belief's tensors among a captured acting step's inputs


@gin.configurable
class LatentSAC:
    """Acts with `world_model.step` + SAC actor; trains both from replay sequences."""

    COMPILE_MODES = COMPILE_MODES

    def __init__(self, world_model, action_dim, sac=SAC, obs_normaliser=ObsNormaliser, model_lr=None,
                 model_grad_clip=None, model_eps=1e-8, compile="auto"):
        self.compile = check_compile("LatentSAC", compile)
        self.world_model = world_model
        self.sac = sac(feature_dim=world_model.feature_dim, action_dim=action_dim)
        self.obs_normaliser = obs_normaliser(world_model.obs_shape)
        self.model_lr = world_model.learning_rate if model_lr is None else float(model_lr)
        self.model_grad_clip = world_model.grad_clip if model_grad_clip is None else float(model_grad_clip)
        params = [p for p in world_model.parameters() if p.requires_grad]
        self.model_opt = torch.optim.Adam(params, lr=self.model_lr, eps=model_eps) if params else None
        self.action_dim = action_dim
        self._graphs = {}  # (kind, input signature) -> CapturedCall
        self._metric_names = ()

    def to(self, device):
        self.world_model.to(device)
        self.sac.to(device)
        self.obs_normaliser.to(device)
        self.release_graphs()
        return self

    # -- observation statistics --------------------------------------------------------------
    @property
    def obs_normaliser_fitted(self) -> bool:
        return self.obs_normaliser.is_fitted

    def fit_obs_normaliser(self, obs):
        """obs (N, *obs_shape) numpy: the prefill observations (the valid ones, where a suite
        withholds some); fixes the statistics for the run."""
        self.obs_normaliser.fit(obs)

    @property
    def device(self):
        return self.sac.log_alpha.device

    @property
    def compile_mode(self) -> str:
        """The mode in use: 'graph' (CUDA graphs) or 'none' (eager); 'auto' is 'graph' on CUDA."""
        return resolve_compile(self.compile, self.device)

    # -- acting --------------------------------------------------------------------------------
    def initial_state(self, batch_size=1):
        return self.world_model.initial_state(batch_size)

    @torch.no_grad()
    def act(self, state, obs, prev_action, is_first, deterministic=False, obs_valid=None):
        """One env step for a batch of envs: obs (B, *obs_shape) numpy, obs_valid (B,) bool or None
        -> (action (B, A) numpy, state)."""
        device = self.device
        inputs = {"obs": torch.as_tensor(np.asarray(obs), device=device),
                  "prev_action": torch.as_tensor(np.asarray(prev_action), dtype=torch.float32, device=device),
                  "is_first": torch.as_tensor(np.asarray(is_first), dtype=torch.bool, device=device)}
        if obs_valid is not None:
            inputs["obs_valid"] = torch.as_tensor(np.asarray(obs_valid), dtype=torch.bool, device=device)
        if self.compile_mode != "graph":
            action, state = self._act(state=state, deterministic=deterministic, **inputs)
            return action.cpu().numpy(), state
        inputs.update({f"{STATE}{name}": value for name, value in state.items()})
        action, state = self._captured(("act", deterministic), inputs)(inputs)
        return action.cpu().numpy(), {name: value.clone() for name, value in state.items()}

    def _act(self, obs, prev_action, is_first, state, deterministic, obs_valid=None):
        """Tensors on the device -> (action (B, A), belief): the acting step, eager or captured."""
        self.world_model.eval()
        state = self.world_model.step(self.obs_normaliser(obs), prev_action, is_first, state,
                                      **obs_valid_kwargs(obs_valid))
        return self.sac.act(self.world_model.features(state), deterministic), state

    def _act_graph_fn(self, deterministic):
        def act(**inputs):
            state = {name[len(STATE):]: inputs.pop(name) for name in list(inputs) if name.startswith(STATE)}
            return self._act(state=state, deterministic=deterministic, **inputs)
        return act

    # -- learning ------------------------------------------------------------------------------
    def update(self, batch):
        """batch: dict of numpy arrays (B, T, ...) from the replay. Returns a dict of scalar tensors."""
        batch = {key: torch.as_tensor(value, device=self.device) for key, value in batch.items()}
        if self.compile_mode != "graph":
            return self._update(batch)
        packed = self._captured("update", batch)(batch).clone()  # one copy for every metric
        return dict(zip(self._metric_names, packed.unbind()))

    def _update(self, batch):
        """Both steps on a batch of tensors on the device: the update, eager or captured."""
        batch = dict(batch, obs=self.obs_normaliser(batch["obs"]))
        metrics, beliefs = self.update_world_model(batch)
        features = self.world_model.features({k: v.detach() for k, v in beliefs.items()})
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # (B, T-1, ...) -> (N, ...)
        metrics.update(self.sac.update(
            features=flat(features[:, :-1]),
            action=flat(batch["prev_action"][:, 1:].float()),
            reward=flat(batch["reward"][:, 1:].float()),
            next_features=flat(features[:, 1:]),
            discount=flat(1.0 - batch["is_terminal"][:, 1:].float()),
            mask=flat(~batch["is_first"][:, 1:])))
        return metrics

    def _packed_update(self, **batch):
        """`_update` with its metrics stacked into one (M,) tensor, named by `_metric_names`."""
        metrics = self._update(batch)
        self._metric_names = tuple(metrics)
        return torch.stack([value.float().reshape(()) for value in metrics.values()])

    # -- CUDA graphs (agents/cuda_graph.py) ------------------------------------------------------
    def _captured(self, kind, inputs) -> CapturedCall:
        """The graph of `kind` ('update', or ('act', deterministic)) for inputs of this signature."""
        key = (kind, signature(inputs))
        if key not in self._graphs:
            if not self._graphs:
                for optimizer in self.optimizers():
                    set_capturable(optimizer, True)
            fn = self._packed_update if kind == "update" else self._act_graph_fn(kind[1])
            self._graphs[key] = CapturedCall(fn)
        return self._graphs[key]

    def release_graphs(self):
        """Forget every graph (and its memory) and go back to host step counters. Needed whenever
        parameter or optimizer-state tensors are replaced, since a graph reads the old ones."""
        self._graphs = {}
        for optimizer in self.optimizers():
            set_capturable(optimizer, False)

    def optimizers(self):
        return [opt for opt in (self.model_opt, self.sac.actor_opt, self.sac.critic_opt, self.sac.alpha_opt)
                if opt is not None]

    def update_world_model(self, batch):
        """Step 1 alone on a batch of tensors already on the device (observations already
        normalised): (metrics, filtered beliefs)."""
        self.world_model.train()
        loss, metrics, beliefs = self.world_model.loss(batch)
        if self.model_opt is not None:
            self.model_opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.world_model.parameters(), self.model_grad_clip)
            self.model_opt.step()
            metrics["model/grad_norm"] = grad_norm.detach()
            metrics["model/grad_clipped"] = (grad_norm.detach() > self.model_grad_clip).float()
        metrics["model/loss"] = loss.detach()
        return metrics, beliefs

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self):
        return {
            "world_model": self.world_model.state_dict(),
            "obs_normaliser": self.obs_normaliser.state_dict(),
            "sac": self.sac.state_dict(),
            "model_opt": self.model_opt.state_dict() if self.model_opt else None,
            "actor_opt": self.sac.actor_opt.state_dict(),
            "critic_opt": self.sac.critic_opt.state_dict(),
            "alpha_opt": self.sac.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state):
        self.world_model.load_state_dict(state["world_model"])
        self.obs_normaliser.load_state_dict(state["obs_normaliser"])
        self.sac.load_state_dict(state["sac"])
        if self.model_opt is not None:
            self.model_opt.load_state_dict(state["model_opt"])
        self.sac.actor_opt.load_state_dict(state["actor_opt"])
        self.sac.critic_opt.load_state_dict(state["critic_opt"])
        self.sac.alpha_opt.load_state_dict(state["alpha_opt"])
        self.release_graphs()  # new optimizer-state tensors; also resets the capturable flags
