"""Training and acting of a return-conditioned sequence policy (agents.sequence_policy).

One update on a batch of windows (B, K) from the dataset:

    loss = mean_{b, t} || policy(R, s, a, t)[b, t] - a[b, t] ||^2

AdamW with weight decay on every parameter, the learning rate warmed up linearly over
`warmup_steps` updates and the gradient norm clipped, as in the Decision Transformer and Decision
Mamba code (gym/experiment.py, gym/util/trainer.py of both repositories): update u (from 0) uses

    lr_u = lr * min((u + 1) / warmup_steps, 1)

computed on the device from a device counter of updates, so that an update never reads the host and
can be recorded as a CUDA graph (`compile`, as `LatentSAC.compile`: 'auto' records it on CUDA and
runs eagerly elsewhere; agents/cuda_graph.py).
"""
import gin
import numpy as np
import torch

from agents.cuda_graph import CapturedCall, check_compile, resolve_compile, set_capturable

METRICS = ("policy/action_mse", "policy/grad_norm", "policy/lr")


@gin.configurable
class ReturnConditionedAgent:
    """Wraps a SequencePolicy with its optimizer; acting takes numpy and returns numpy."""

    def __init__(self, policy, action_dim, lr=1e-4, weight_decay=1e-4, warmup_steps=10_000, grad_clip=0.25,
                 compile="auto"):
        self.policy = policy
        self.action_dim = action_dim
        self.compile = check_compile("ReturnConditionedAgent", compile)
        self.lr, self.warmup_steps, self.grad_clip = float(lr), max(int(warmup_steps), 1), grad_clip
        self.updates = torch.zeros(())  # updates made so far, on the policy's device
        # the rate is a tensor that every update overwrites in place (AdamW reads it on the device)
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=torch.tensor(self.lr), weight_decay=weight_decay)
        self._graph = None

    def to(self, device):
        self.policy.to(device)
        self.updates = self.updates.to(device)
        self._place_optimizer()
        return self

    @property
    def device(self):
        return self.policy.obs_mean.device

    @property
    def compile_mode(self) -> str:
        """The mode in use: 'graph' (CUDA graphs) or 'none' (eager); 'auto' is 'graph' on CUDA."""
        return resolve_compile(self.compile, self.device)

    def _place_optimizer(self):
        """The learning rate tensors and step counters on the policy's device (capturable there:
        AdamW takes a tensor rate on CUDA only so), and no graph that read the old ones."""
        device = self.device
        for group in self.optimizer.param_groups:
            group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32).to(device).clone()
        set_capturable(self.optimizer, device.type == "cuda")
        self._graph = None

    # -- learning ------------------------------------------------------------------------------
    def update(self, batch):
        """batch: numpy or tensors returns_to_go (B, K), obs (B, K, O), actions (B, K, A), timesteps (B, K).
        Returns the scalar metric tensors of METRICS, on the device."""
        batch = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        if self.compile_mode != "graph":
            return self._update(**batch)
        if self._graph is None:
            self._graph = CapturedCall(lambda **inputs: torch.stack(list(self._update(**inputs).values())))
        packed = self._graph(batch).clone()  # one copy for every metric
        return dict(zip(METRICS, packed.unbind()))

    def _update(self, returns_to_go, obs, actions, timesteps):
        """One gradient step on tensors on the device: eager, or what the graph records."""
        self.policy.train()
        actions = actions.float()
        predicted = self.policy(returns_to_go.float(), obs.float(), actions, timesteps)
        loss = ((predicted - actions) ** 2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        lr = self.lr * torch.clamp((self.updates + 1) / self.warmup_steps, max=1.0)  # this update's rate
        for group in self.optimizer.param_groups:
            group["lr"].copy_(lr)
        self.optimizer.step()
        self.updates += 1
        return dict(zip(METRICS, (loss.detach(), grad_norm.detach(), lr)))

    # -- acting --------------------------------------------------------------------------------
    def initial_state(self, batch_size=1):
        return self.policy.initial_state(batch_size)

    @torch.no_grad()
    def act(self, state, returns_to_go, obs, timestep):
        """returns_to_go (B,), obs (B, O), timestep (B,) numpy -> (action (B, A) numpy, state)."""
        self.policy.eval()
        device = self.device
        action, state = self.policy.step(
            state, torch.as_tensor(np.asarray(returns_to_go), dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(timestep), dtype=torch.long, device=device))
        return action.cpu().numpy(), state

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self):
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates.clone()}

    def load_state_dict(self, state):
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = torch.as_tensor(state["updates"], dtype=torch.float32).to(self.device).clone()
        self._place_optimizer()  # new optimizer-state tensors; the flags this device needs
