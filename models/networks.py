"""Encoders, decoders and the reward head shared by every world model.

A comparison between world models only measures the models if everything around them is the same,
so KalMamba, RSSM and VRKN all build their observation networks from this file. A suite's gin file
chooses them, e.g. ``RSSM.encoder_fn = @ImageEncoder``; ``None`` means `default_encoder_fn` /
`default_decoder_fn`, which pick the image networks for rank-3 observation shapes and the MLPs for
vectors.

Interfaces (all time-distributed over any leading dims, written here for (B, T)):
    encoder_fn(obs_shape) -> encoder;  encoder(obs (B, T, *obs_shape)) -> (B, T, encoder.embed_dim)
        obs may be uint8 images or float states; they are preprocessed inside.
    decoder_fn(feature_dim, obs_shape) -> decoder;  decoder(features (B, T, F)) -> (B, T, *obs_shape)
        the mean in preprocessed space; decoder.log_likelihood(features, obs) -> (B, T).
    RewardHead(feature_dim);  head(features (B, T, F)) -> (B, T);  head.log_likelihood(...) -> (B, T).

Every likelihood here is a unit-variance Gaussian summed over the observed dimensions, constant
included:  log N(x | mu, I) = -1/2 sum_i (x_i - mu_i)^2 - D/2 log(2 pi),  with x = preprocess_obs(obs).

Default sizes and where they come from:
    images: Dreamer v1 / PlaNet convolutions (depth 32-64-128-256, kernel 4, stride 2, ReLU; the
        decoder mirrors them with transposed kernels 5-5-6-6) for 64x64 inputs, giving a 1024 embedding.
    state encoder/decoder: 3 x 300 ELU, the dense encoder of the CoRAL RSSM+SAC configuration.
    reward head: 2 x 128 ELU, the CoRAL reward decoder.
"""
import math

import gin
import torch
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


def preprocess_obs(obs: torch.Tensor, image_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images -> `image_dtype` in [-0.5, 0.5] (x / 255 - 0.5); floating-point states unchanged."""
    if obs.dtype == torch.uint8:
        return obs.to(image_dtype) / 255.0 - 0.5
    if obs.is_floating_point():
        return obs
    raise ValueError(f"observations must be uint8 images or floating-point states, got dtype {obs.dtype}")


def image_to_uint8(mean: torch.Tensor) -> torch.Tensor:
    """Inverse of `preprocess_obs` for images: x in [-0.5, 0.5] -> round(255 (x + 0.5)) as uint8, clipped."""
    return ((mean.detach().float() + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)


def gaussian_log_likelihood(mean: torch.Tensor, target: torch.Tensor, event_dims: int) -> torch.Tensor:
    """log N(target | mean, I) summed over the last `event_dims` dimensions, 2 pi constant included."""
    squared_error = (target - mean).square()
    if event_dims > 0:
        squared_error = squared_error.flatten(-event_dims)
        num_dims = squared_error.shape[-1]
        squared_error = squared_error.sum(-1)
    else:
        num_dims = 1
    return -0.5 * squared_error - 0.5 * num_dims * _LOG_2PI


def mlp(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int,
        activation=nn.ELU, output_activation=None) -> nn.Sequential:
    """`num_layers` hidden Linear+activation layers of width `hidden_dim`, then Linear(out_dim)
    (followed by `output_activation` when given). num_layers = 0 is a single Linear."""
    layers, width = [], in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_dim), activation()]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


def _apply_time_distributed(net: nn.Module, x: torch.Tensor, event_dims: int, out_shape) -> torch.Tensor:
    """Run `net` on x (*lead, *event) flattened to (N, *event); returns (*lead, *out_shape)."""
    lead = x.shape[: x.dim() - event_dims]
    y = net(x.reshape(-1, *x.shape[x.dim() - event_dims:]))
    return y.reshape(*lead, *out_shape)


def _check_trailing_shape(x: torch.Tensor, shape: tuple, what: str) -> None:
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != tuple(shape):
        raise ValueError(f"{what} must end in shape {tuple(shape)}, got {tuple(x.shape)}")


def _check_image_shape(obs_shape) -> tuple:
    obs_shape = tuple(int(s) for s in obs_shape)
    if len(obs_shape) != 3 or obs_shape[1:] != (64, 64):
        raise ValueError(f"image networks need obs_shape (channels, 64, 64), got {obs_shape}")
    return obs_shape


def _check_vector_shape(obs_shape) -> tuple:
    obs_shape = tuple(int(s) for s in obs_shape)
    if len(obs_shape) != 1 or obs_shape[0] < 1:
        raise ValueError(f"state networks need a vector obs_shape (D,), got {obs_shape}")
    return obs_shape


class _Decoder(nn.Module):
    """Shared likelihood of both decoders; subclasses define `obs_shape` and `forward`."""

    obs_shape: tuple

    def log_likelihood(self, features: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """features (B, T, F), obs (B, T, *obs_shape) raw -> log N(preprocess(obs) | decoder(features), I), (B, T)."""
        _check_trailing_shape(obs, self.obs_shape, "obs")
        mean = self(features)
        target = preprocess_obs(obs, mean.dtype).to(mean.dtype)
        return gaussian_log_likelihood(mean, target, event_dims=len(self.obs_shape))


@gin.configurable
class ImageEncoder(nn.Module):
    """(B, T, C, 64, 64) uint8 -> (B, T, 1024): four ReLU convs (32, 64, 128, 256 channels, kernel 4,
    stride 2; spatial 64 -> 31 -> 14 -> 6 -> 2), flattened."""

    def __init__(self, obs_shape, depth: int = 32):
        super().__init__()
        self.obs_shape = _check_image_shape(obs_shape)
        channels = [self.obs_shape[0], depth, 2 * depth, 4 * depth, 8 * depth]
        layers = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2), nn.ReLU()]
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.embed_dim = 8 * depth * 2 * 2

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        _check_trailing_shape(obs, self.obs_shape, "obs")
        dtype = self.convs[0].weight.dtype
        x = preprocess_obs(obs, dtype).to(dtype)
        return _apply_time_distributed(self.convs, x, 3, (self.embed_dim,))


@gin.configurable
class ImageDecoder(_Decoder):
    """(B, T, F) -> mean image (B, T, C, 64, 64) in [-0.5, 0.5] space: Linear(F, 32 * depth) as a
    1x1 map, then transposed convs (128, 64, 32, C channels; kernels 5, 5, 6, 6; stride 2;
    spatial 1 -> 5 -> 13 -> 30 -> 64), ReLU between them."""

    def __init__(self, feature_dim: int, obs_shape, depth: int = 32):
        super().__init__()
        self.obs_shape = _check_image_shape(obs_shape)
        self.project = nn.Linear(feature_dim, 32 * depth)
        self.deconvs = nn.Sequential(
            nn.Unflatten(1, (32 * depth, 1, 1)),
            nn.ConvTranspose2d(32 * depth, 4 * depth, kernel_size=5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, kernel_size=5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(2 * depth, depth, kernel_size=6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(depth, self.obs_shape[0], kernel_size=6, stride=2),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return _apply_time_distributed(self.deconvs, self.project(features), 1, self.obs_shape)


@gin.configurable
class StateEncoder(nn.Module):
    """(B, T, D) float -> (B, T, hidden_dim): `num_layers` ELU layers (the output is the last hidden
    layer, activation included, like the convolutional encoder's)."""

    def __init__(self, obs_shape, hidden_dim: int = 300, num_layers: int = 3):
        super().__init__()
        self.obs_shape = _check_vector_shape(obs_shape)
        if num_layers < 1:
            raise ValueError(f"StateEncoder needs num_layers >= 1, got {num_layers}")
        self.net = mlp(self.obs_shape[0], hidden_dim, hidden_dim, num_layers - 1, output_activation=nn.ELU)
        self.embed_dim = hidden_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        _check_trailing_shape(obs, self.obs_shape, "obs")
        dtype = self.net[0].weight.dtype
        return self.net(preprocess_obs(obs, dtype).to(dtype))


@gin.configurable
class StateDecoder(_Decoder):
    """(B, T, F) -> mean state (B, T, D): `num_layers` hidden ELU layers, then a linear output."""

    def __init__(self, feature_dim: int, obs_shape, hidden_dim: int = 300, num_layers: int = 3):
        super().__init__()
        self.obs_shape = _check_vector_shape(obs_shape)
        self.net = mlp(feature_dim, self.obs_shape[0], hidden_dim, num_layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


@gin.configurable
class RewardHead(nn.Module):
    """(B, T, F) -> predicted reward (B, T): `num_layers` hidden ELU layers, linear scalar output."""

    def __init__(self, feature_dim: int, hidden_dim: int = 128, num_layers: int = 2):
        super().__init__()
        self.net = mlp(feature_dim, 1, hidden_dim, num_layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)

    def log_likelihood(self, features: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """log N(reward | head(features), 1), (B, T)."""
        mean = self(features)
        if reward.shape != mean.shape:
            raise ValueError(f"reward must have shape {tuple(mean.shape)}, got {tuple(reward.shape)}")
        return gaussian_log_likelihood(mean, reward.to(mean.dtype), event_dims=0)


def default_encoder_fn(obs_shape) -> nn.Module:
    """ImageEncoder for (C, 64, 64) observations, StateEncoder for vectors (D,)."""
    if len(obs_shape) == 3:
        return ImageEncoder(obs_shape)
    if len(obs_shape) == 1:
        return StateEncoder(obs_shape)
    raise ValueError(f"no default encoder for obs_shape {tuple(obs_shape)}: expected (C, 64, 64) or (D,)")


def default_decoder_fn(feature_dim: int, obs_shape) -> nn.Module:
    """ImageDecoder for (C, 64, 64) observations, StateDecoder for vectors (D,)."""
    if len(obs_shape) == 3:
        return ImageDecoder(feature_dim, obs_shape)
    if len(obs_shape) == 1:
        return StateDecoder(feature_dim, obs_shape)
    raise ValueError(f"no default decoder for obs_shape {tuple(obs_shape)}: expected (C, 64, 64) or (D,)")
