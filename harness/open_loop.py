r"""Open-loop prediction error of a world model, from filtered beliefs of evaluation episodes.

From the filtered belief b_t (after observing o_t, what the agent acted on at t) the model's prior
is rolled K = max(horizons) steps under the actions the agent then took, a_t, ..., a_{t+K-1}, with
no observation (`WorldModel.predict`), and each decoded mean is compared with the clean observation
it predicts:

    MSE_k = mean over starts t and observation elements of ( predict(b_t, a_{t:t+K})[k - 1] - c_{t+k} )^2

for k in `horizons` (1, 5, 10, 25 by default). c is the clean observation (noise-free, unoccluded,
never withheld: the env's info["true_obs"], or the observation itself in the noise-free image suite)
in the decoder's own space: states standardised by the agent's `ObsNormaliser` (so every dimension
counts on the scale of its prefill spread), images mapped to [-0.5, 0.5] (`preprocess_obs`).
"""
import torch

from models.networks import preprocess_obs


def decoder_space(clean, obs_normaliser=None) -> torch.Tensor:
    """clean observations (..., *obs_shape) tensor -> the decoder's space (module docstring)."""
    if obs_normaliser is not None:
        clean = obs_normaliser(clean)
    return preprocess_obs(clean)


@torch.no_grad()
def open_loop_squared_errors(world_model, starts, actions, targets, horizons, chunk: int = 64):
    """Summed squared errors of open-loop predictions, per horizon.

    starts: a belief dict of N filtered states (N, ...) stacked along the batch; actions (N, K, A)
    with actions[:, 0] taken at the start's step; targets (N, K, *obs_shape), targets[:, k - 1] the
    clean observation k steps later in the decoder's space. Predicts `chunk` starts at a time.
    Returns {k: (sum of squared errors, number of elements)} for k <= K in `horizons`, or None when
    the model has no observation model (`predict` returns None).
    """
    K = actions.shape[1]
    totals = {k: [0.0, 0] for k in horizons if 1 <= k <= K}
    for begin in range(0, actions.shape[0], chunk):
        rows = slice(begin, begin + chunk)
        predicted = world_model.predict({name: value[rows] for name, value in starts.items()}, actions[rows])
        if predicted is None:
            return None
        for k, total in totals.items():
            error = (predicted[:, k - 1].double() - targets[rows, k - 1].double()).square()
            total[0] += float(error.sum())
            total[1] += error.numel()
    return {k: tuple(total) for k, total in totals.items()}
