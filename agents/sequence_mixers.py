r"""Causal sequence mixers of a return-conditioned policy, (B, L, D) -> (B, L, D).

Both mixers are causal: output t depends on inputs 0..t only. Both end in a LayerNorm.

`CausalTransformer` (Decision Transformer, Chen et al. 2021; GPT-2 blocks, pre-LayerNorm):

    x = x + Dropout(Proj(softmax(Q K^T / sqrt(d_head) + causal mask) V))     Q, K, V from LN(x)
    x = x + Dropout(MLP(LN(x)))            MLP: Linear(D, 4D) - activation - Linear(4D, D)

Acting re-runs `forward` over the last K tokens (a sliding window): O(K^2) per step.

`MambaMixer` (Decision Mamba, Ota 2024): each attention block replaced by a residual Mamba block

    x = x + Mamba(LN(x))                   (models.mamba.Mamba: the mamba_ssm kernel on CUDA)
    x = x + MLP(LN(x))                     only with channel_mlp=True (the paper finds it unnecessary)

It has a recurrent `step` with O(1) state per layer (the Mamba conv window and SSM state), so
acting costs the same at step 1 and step 1000; `step` over a sequence equals `forward` on it.
"""
import math

import gin
import torch.nn.functional as F
from torch import nn

from models.mamba import Mamba

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def channel_mlp(d_model, activation, dropout):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return nn.Sequential(nn.Linear(d_model, 4 * d_model), ACTIVATIONS[activation](),
                         nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t."""

    def __init__(self, d_model, num_heads, dropout):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = (t.view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, L, D)))


@gin.configurable
class CausalTransformer(nn.Module):
    """GPT-2 style stack of pre-LN causal attention blocks (module docstring)."""

    recurrent = False

    def __init__(self, d_model, dropout=0.1, num_layers=3, num_heads=1, activation="gelu"):
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(num_layers):
            self.blocks.append(nn.ModuleDict({
                "ln_attn": nn.LayerNorm(d_model), "attn": CausalSelfAttention(d_model, num_heads, dropout),
                "ln_mlp": nn.LayerNorm(d_model), "mlp": channel_mlp(d_model, activation, dropout)}))
        self.ln_final = nn.LayerNorm(d_model)
        self._init_gpt2(num_layers)

    def _init_gpt2(self, num_layers):
        """GPT-2's initialisation: N(0, 0.02), output projections scaled by 1/sqrt(2 * layers)."""
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * num_layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias") and "ln_" not in name:
                nn.init.zeros_(p)

    def forward(self, x):
        """x (B, L, D) -> (B, L, D); output t sees inputs 0..t."""
        for block in self.blocks:
            x = x + block["attn"](block["ln_attn"](x))
            x = x + block["mlp"](block["ln_mlp"](x))
        return self.ln_final(x)


@gin.configurable
class MambaMixer(nn.Module):
    """Residual `x + Mamba(LN(x))` blocks with a parallel `forward` and a recurrent `step`."""

    recurrent = True

    def __init__(self, d_model, dropout=0.1, num_layers=3, d_state=16, d_conv=4, expand=2,
                 channel_mlp_enabled=False, activation="gelu"):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))
        self.mambas = nn.ModuleList(Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
                                    for _ in range(num_layers))
        self.mlp_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers)) \
            if channel_mlp_enabled else None
        self.mlps = nn.ModuleList(channel_mlp(d_model, activation, dropout) for _ in range(num_layers)) \
            if channel_mlp_enabled else None
        self.ln_final = nn.LayerNorm(d_model)

    def forward(self, x):
        """x (B, L, D) -> (B, L, D), from a zero state."""
        for i, (norm, mamba) in enumerate(zip(self.norms, self.mambas)):
            x = x + mamba(norm(x))
            if self.mlps is not None:
                x = x + self.mlps[i](self.mlp_norms[i](x))
        return self.ln_final(x)

    def initial_state(self, batch_size):
        """One `MambaState` per layer, all zero."""
        return [mamba.initial_state(batch_size) for mamba in self.mambas]

    def step(self, x, state):
        """One token: x (B, D), state from `initial_state` or `step` -> (out (B, D), state)."""
        new_state = []
        for i, (norm, mamba, layer_state) in enumerate(zip(self.norms, self.mambas, state)):
            out, layer_state = mamba.step(norm(x), layer_state)
            x = x + out
            if self.mlps is not None:
                x = x + self.mlps[i](self.mlp_norms[i](x))
            new_state.append(layer_state)
        return self.ln_final(x), new_state
