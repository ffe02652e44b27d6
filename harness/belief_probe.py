r"""Probes from a filtered belief to the true state: how much of the simulator's state a belief holds,
and how well calibrated the uncertainty of a probe read from it is.

Data: x (N, F) belief features and y (N, D) true states of evaluation steps, given per episode and
split by episode: the first half of the episodes (n // 2 of n) fits the probe, the rest scores it.
Inside the fitting half, its last `VALIDATION_FRACTION` (1/4) of rows, in episode and step order,
are held out to choose hyperparameters ("train" and "validation" parts below).

Standardisation: x and y are standardised per dimension with the fitting half's mean and std (a
dimension with std < 1e-8 is only centred), so every score below is in units of the fitting half's
target std: comparable across dimensions, tasks and models.

(a) Ridge regression, closed form on centred data, for each alpha of a fixed grid:

        W_alpha = (X'X / n + alpha I)^{-1} X'Y / n,     mu(x) = mean_y + (x - mean_x) W_alpha

    alpha* minimises the validation MSE (mean over target dims) of the train-part fit; the final W
    is refit on the whole fitting half with alpha*. Its variance is one per target dim,
    sigma^2_d = mean squared validation residual of the train-part fit with alpha*: out of sample,
    so it does not shrink when the probe overfits a short fitting half.
(b) Heteroscedastic MLP, x -> (mu(x), sigma^2(x)) with sigma^2 = softplus(.) + 1e-4, ELU hidden
    layers, trained on the train part by full-batch Adam on the Gaussian NLL for `steps` steps from a
    seeded initialisation (the global torch RNG is left untouched); the parameters with the lowest
    validation NLL, checked every `check_every` steps, are kept (early stopping).

Scores on the test half, per target dim d (y standardised as above):

    R^2_d      = 1 - sum_n (y_nd - mu_nd)^2 / sum_n (y_nd - ybar_d)^2     (ybar_d: test-half mean)
    NLL        = mean_{n,d} [ log(2 pi sigma^2_nd) / 2 + (y_nd - mu_nd)^2 / (2 sigma^2_nd) ]
    coverage_k = mean_{n,d} 1[ |y_nd - mu_nd| <= k sigma_nd ],  k = 1, 2  (Gaussian: 0.683, 0.954)

and r2, the mean of R^2_d over the dims whose test-half variance is not zero (NaN if none).
"""
import dataclasses
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

VALIDATION_FRACTION = 0.25
RIDGE_ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MIN_VAR = 1e-4  # variance floor of both probes, in standardised units
_TINY = 1e-8


@dataclasses.dataclass(frozen=True)
class MLPSettings:
    """The heteroscedastic probe's size and optimisation (module docstring (b))."""

    hidden_dim: int = 64
    num_layers: int = 2
    steps: int = 300
    learning_rate: float = 3e-3
    check_every: int = 10
    seed: int = 0


class Standardiser:
    """Per-dimension (v - mean) / std with the statistics of `fit_rows` (N, K)."""

    def __init__(self, fit_rows: np.ndarray):
        self.mean = fit_rows.mean(0)
        std = fit_rows.std(0)
        self.std = np.where(std < _TINY, 1.0, std)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return (rows - self.mean) / self.std


def split_episodes(episodes: list) -> tuple[list, list]:
    """(fitting half, test half) of a list of per-episode arrays: the first n // 2 and the rest."""
    half = len(episodes) // 2
    return episodes[:half], episodes[half:]


def train_validation(rows: int) -> int:
    """Rows of the train part of a fitting half of `rows` rows (at least 1, at most rows - 1)."""
    return min(max(1, int(round(rows * (1 - VALIDATION_FRACTION)))), rows - 1)


def score(mean: np.ndarray, var: np.ndarray, y: np.ndarray) -> dict:
    """Module docstring's scores of a Gaussian prediction N(mean, var), all (N, D), of y (N, D)."""
    residual = y - mean
    total = np.square(y - y.mean(0)).sum(0)
    varying = total > _TINY
    r2_dims = np.full(y.shape[1], np.nan)
    r2_dims[varying] = 1.0 - np.square(residual).sum(0)[varying] / total[varying]
    nll = 0.5 * np.log(2 * np.pi * var) + np.square(residual) / (2 * var)
    z = np.abs(residual) / np.sqrt(var)
    return {"r2": float(np.mean(r2_dims[varying])) if varying.any() else math.nan,
            "r2_dims": [float(v) for v in r2_dims],
            "nll": float(nll.mean()),
            "coverage_1sigma": float((z <= 1.0).mean()),
            "coverage_2sigma": float((z <= 2.0).mean())}


# ---------------------------------------------------------------------------------------------
# (a) ridge

def ridge_weights(x: np.ndarray, y: np.ndarray, alpha: float):
    """Closed-form ridge on centred data: x (n, F), y (n, D) -> (W (F, D), x mean (F,), y mean (D,))."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    n = len(x)
    gram = xc.T @ xc / n + alpha * np.eye(x.shape[1])
    return np.linalg.solve(gram, xc.T @ yc / n), x_mean, y_mean


def ridge_predict(weights, x: np.ndarray) -> np.ndarray:
    W, x_mean, y_mean = weights
    return y_mean + (x - x_mean) @ W


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas=RIDGE_ALPHAS):
    """x (n, F), y (n, D) standardised fitting half -> (weights, variance (D,), alpha*)."""
    cut = train_validation(len(x))
    errors = []
    for alpha in alphas:
        residual = y[cut:] - ridge_predict(ridge_weights(x[:cut], y[:cut], alpha), x[cut:])
        errors.append(float(np.square(residual).mean()))
    alpha = alphas[int(np.argmin(errors))]
    residual = y[cut:] - ridge_predict(ridge_weights(x[:cut], y[:cut], alpha), x[cut:])
    var = np.maximum(np.square(residual).mean(0), MIN_VAR)
    return ridge_weights(x, y, alpha), var, alpha


# ---------------------------------------------------------------------------------------------
# (b) heteroscedastic MLP

class GaussianMLP(nn.Module):
    """x (N, F) -> (mean (N, D), var (N, D)); ELU hidden layers, var = softplus(.) + MIN_VAR."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int):
        super().__init__()
        layers, width = [], in_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ELU()]
            width = hidden_dim
        self.net = nn.Sequential(*layers, nn.Linear(width, 2 * out_dim))

    def forward(self, x):
        mean, raw = self.net(x).chunk(2, dim=-1)
        return mean, F.softplus(raw) + MIN_VAR


def gaussian_nll(mean, var, y):
    """Mean over rows and dims of log(2 pi var) / 2 + (y - mean)^2 / (2 var)."""
    return (0.5 * torch.log(2 * math.pi * var) + (y - mean).square() / (2 * var)).mean()


def fit_mlp(x: np.ndarray, y: np.ndarray, settings: MLPSettings = MLPSettings()) -> GaussianMLP:
    """x (n, F), y (n, D) standardised fitting half -> the early-stopped probe (module docstring)."""
    cut = train_validation(len(x))
    x, y = (torch.as_tensor(v, dtype=torch.float32) for v in (x, y))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = GaussianMLP(x.shape[1], y.shape[1], settings.hidden_dim, settings.num_layers)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    best, best_state = math.inf, None
    for step in range(settings.steps + 1):
        if step % settings.check_every == 0 or step == settings.steps:
            with torch.no_grad():
                validation = float(gaussian_nll(*model(x[cut:]), y[cut:]))
            if validation < best:
                best, best_state = validation, {k: v.clone() for k, v in model.state_dict().items()}
        if step == settings.steps:
            break
        optimiser.zero_grad(set_to_none=True)
        gaussian_nll(*model(x[:cut]), y[:cut]).backward()
        optimiser.step()
    if best_state is not None:
        model.load_state_dict(best_state)
    return model


def mlp_predict(model: GaussianMLP, x: np.ndarray):
    with torch.no_grad():
        mean, var = model(torch.as_tensor(x, dtype=torch.float32))
    return mean.double().numpy(), var.double().numpy()


# ---------------------------------------------------------------------------------------------

def probe(features: list, targets: list, mlp_features: list | None = None, alphas=RIDGE_ALPHAS,
          mlp: MLPSettings = MLPSettings()) -> dict:
    """Both probes fitted on the first half of the episodes and scored on the rest.

    features, targets: per episode, (T_i, F) and (T_i, D) arrays; mlp_features: per episode
    (T_i, F') inputs of the MLP probe (None: `features`). Needs at least 2 episodes.
    Returns {"ridge": scores | {"alpha": alpha*}, "mlp": scores, "fit_steps": n, "test_steps": m}.
    """
    if len(features) < 2:
        raise ValueError(f"the belief probe needs at least 2 episodes (one to fit, one to score), got {len(features)}")
    mlp_features = features if mlp_features is None else mlp_features
    fit_y, test_y = (np.concatenate(half).astype(np.float64) for half in split_episodes(targets))
    if len(fit_y) < 2:
        raise ValueError("the belief probe needs at least 2 steps in its fitting half")
    target = Standardiser(fit_y)
    fit_y, test_y = target(fit_y), target(test_y)
    result = {"fit_steps": len(fit_y), "test_steps": len(test_y)}
    for name, inputs in (("ridge", features), ("mlp", mlp_features)):
        fit_x, test_x = (np.concatenate(half).astype(np.float64) for half in split_episodes(inputs))
        standardise = Standardiser(fit_x)
        fit_x, test_x = standardise(fit_x), standardise(test_x)
        if name == "ridge":
            weights, var, alpha = fit_ridge(fit_x, fit_y, alphas)
            mean = ridge_predict(weights, test_x)
            result[name] = {**score(mean, np.broadcast_to(var, mean.shape), test_y), "alpha": alpha}
        else:
            result[name] = score(*mlp_predict(fit_mlp(fit_x, fit_y, mlp), test_x), test_y)
    return result
