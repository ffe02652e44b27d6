r"""KL term of the tight variational lower bound for diagonal linear-Gaussian latent chains.

Setting (every latent dimension is an independent scalar chain, tensors (B, T, D)): the prior is
the transition model of `models.kalman`,

    p(z_t | z_{t-1}) = N(A_{t-1} z_{t-1} + b_{t-1}, Q_{t-1}),     p(z_t) = N(mean0, var0) at a start

(t = 0 or is_first[t]), and the approximate posterior q is the exact smoothing posterior of that
model given the latent observations. q is a Markov chain with smoothed marginals N(mu_t, P_t). With
the filtered variance P+_t, the predicted variance P-_t = A_{t-1}^2 P+_{t-1} + Q_{t-1} and the RTS
gain c_{t-1} = P+_{t-1} A_{t-1} / P-_t, the pair (z_{t-1}, z_t) has covariance c_{t-1} P_t, so

    q(z_t | z_{t-1}) = N(mu_t + G_t (z_{t-1} - mu_{t-1}), V_t),   G_t = c_{t-1} P_t / P_{t-1},
    V_t = P_t - G_t c_{t-1} P_t = P_t L_{t-1} / P_{t-1},   L_{t-1} = P+_{t-1} Q_{t-1} / P-_t,

where the second form of V_t uses the smoother recursion P_{t-1} = c_{t-1}^2 P_t + L_{t-1}; it is a
product of positive terms, so V_t stays positive in float32 where P_t - G_t c_{t-1} P_t would cancel.
The KL of the bound is  KL[q(z_{0:T-1}) || p(z_{0:T-1})] = sum_t kl_t  with, per dimension,

    kl_t = E_{z_{t-1} ~ N(mu_{t-1}, P_{t-1})} KL[q(z_t | z_{t-1}) || p(z_t | z_{t-1})]
         = 1/2 [ r - 1 - log r + ((mu_t - A mu_{t-1} - b)^2 + (G_t - A)^2 P_{t-1}) / Q ],
           r = V_t / Q = P_t P+_{t-1} / (P-_t P_{t-1})          (A, b, Q taken at t - 1),

and at a start  kl_t = KL[N(mu_t, P_t) || N(mean0, var0)]  (no earlier step to condition on).
Because q is the exact posterior, E_q[log p(y | z)] - sum_t kl_t equals log p(y): the bound is tight.
"""
import torch


def tight_kl(filtered_var, smoothed_mean, smoothed_var, A, b, Q, mean0, var0, is_first=None):
    """Per-step KL of the tight bound, summed over the latent dimensions (module docstring).

    filtered_var, smoothed_mean, smoothed_var: (B, T, D) from `kalman_filter` / `kalman_smoother`
    run on the same model; A, b, Q: (B, T, D) transitions out of each step (z_t -> z_{t+1}, the
    last step's unused), exactly as given to the filter; mean0, var0: broadcastable to (B, D);
    is_first: (B, T) bool or None. Step 0 always counts as a start. Returns (B, T).
    """
    shape = smoothed_mean.shape
    if len(shape) != 3 or any(x.shape != shape for x in (filtered_var, smoothed_var, A, b, Q)):
        raise ValueError("tight_kl needs filtered_var, smoothed_mean, smoothed_var, A, b, Q of one shape "
                         f"(B, T, D), got {[tuple(x.shape) for x in (filtered_var, smoothed_mean, smoothed_var, A, b, Q)]}")
    start = torch.ones(shape[:2], dtype=torch.bool, device=smoothed_mean.device)
    if is_first is not None:
        if tuple(is_first.shape) != tuple(shape[:2]):
            raise ValueError(f"is_first must have shape (B, T) = {tuple(shape[:2])}, got {tuple(is_first.shape)}")
        start[:, 1:] = is_first[:, 1:]

    mean0 = torch.as_tensor(mean0, dtype=smoothed_mean.dtype).expand(shape[0], shape[2]).unsqueeze(1)
    var0 = torch.as_tensor(var0, dtype=smoothed_var.dtype).expand(shape[0], shape[2]).unsqueeze(1)
    kl_start = gaussian_kl_terms(smoothed_var / var0, (smoothed_mean - mean0).square() / var0)

    # Transition from t - 1 into t, for t >= 1 (position 0 is a start and is filled below).
    a, c, q = A[:, :-1], b[:, :-1], Q[:, :-1]
    prev_mean, prev_var, prev_filtered_var = smoothed_mean[:, :-1], smoothed_var[:, :-1], filtered_var[:, :-1]
    mean, var = smoothed_mean[:, 1:], smoothed_var[:, 1:]
    predicted_var = a * a * prev_filtered_var + q
    gain = prev_filtered_var * a / predicted_var
    G = gain * var / prev_var
    ratio = var * prev_filtered_var / (predicted_var * prev_var)
    residual = (mean - a * prev_mean - c).square() + (G - a).square() * prev_var
    kl_step = gaussian_kl_terms(ratio, residual / q)
    kl_step = torch.cat([kl_start[:, :1], kl_step], dim=1)

    return torch.where(start.unsqueeze(-1), kl_start, kl_step).sum(-1)


def gaussian_kl_terms(var_ratio, scaled_square_distance):
    """KL[N(m1, v1) || N(m2, v2)] per element from r = v1 / v2 and (m1 - m2)^2 / v2:
    1/2 (r - 1 - log r + (m1 - m2)^2 / v2)."""
    return 0.5 * (var_ratio - 1.0 - torch.log(var_ratio) + scaled_square_distance)
