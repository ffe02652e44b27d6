"""Training and acting of a return-conditioned sequence policy (agents.sequence_policy).

One update on a batch of windows (B, K) from the dataset:

    loss = mean_{b, t} || policy(R, s, a, t)[b, t] - a[b, t] ||^2

AdamW with weight decay on every parameter, the learning rate warmed up linearly over
`warmup_steps` updates and the gradient norm clipped, as in the Decision Transformer and Decision
Mamba code (gym/experiment.py, gym/util/trainer.py of both repositories).
"""
import gin
import numpy as np
import torch


@gin.configurable
class ReturnConditionedAgent:
    """Wraps a SequencePolicy with its optimizer; acting takes numpy and returns numpy."""

    def __init__(self, policy, action_dim, lr=1e-4, weight_decay=1e-4, warmup_steps=10_000, grad_clip=0.25):
        self.policy = policy
        self.action_dim = action_dim
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda updates: min((updates + 1) / max(warmup_steps, 1), 1.0))
        self.grad_clip = grad_clip

    def to(self, device):
        self.policy.to(device)
        return self

    @property
    def device(self):
        return self.policy.obs_mean.device

    # -- learning ------------------------------------------------------------------------------
    def update(self, batch):
        """batch: numpy or tensors returns_to_go (B, K), obs (B, K, O), actions (B, K, A), timesteps (B, K)."""
        batch = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        self.policy.train()
        actions = batch["actions"].float()
        predicted = self.policy(batch["returns_to_go"].float(), batch["obs"].float(), actions,
                                batch["timesteps"])
        loss = ((predicted - actions) ** 2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        lr = self.scheduler.get_last_lr()[0]  # this update's learning rate
        self.optimizer.step()
        self.scheduler.step()
        return {"policy/action_mse": loss.detach(), "policy/grad_norm": grad_norm.detach(),
                "policy/lr": torch.full((), lr, device=self.device)}  # a fill kernel, not a host copy

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
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state):
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
