"""VRKN: filtering against an independent Joseph-form loop, its loss against an explicit
computation, parameter bounds and inits, free nats, reward scale, chunked observe, bad config."""
import functools

import pytest
import torch

from models import networks
from models.kalman import FilterResult, kalman_smoother
from models.tight_elbo import tight_kl
from models.vrkn import VRKN

F64 = torch.float64


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(latent_dim=5, hidden_dim=9,
                  encoder_fn=functools.partial(networks.StateEncoder, hidden_dim=12, num_layers=2),
                  decoder_fn=functools.partial(networks.StateDecoder, hidden_dim=12, num_layers=1))
    kwargs.update(overrides)
    return VRKN((4,), 2, **kwargs)


def make_batch(B=3, T=11, seed=0, resets=((1, 4), (2, 8))):
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    for b, t in resets:
        is_first[b, t] = True
    prev_action = 2 * torch.rand(B, T, 2, generator=g, dtype=F64) - 1
    prev_action[is_first] = 0
    return {"obs": torch.randn(B, T, 4, generator=g, dtype=F64), "prev_action": prev_action,
            "reward": torch.randn(B, T, generator=g, dtype=F64), "is_first": is_first}


def joseph_form_filter(model, batch):
    """Independent filter loop: transition from (previous filtered mean, prev_action[t]), predict,
    then the Joseph-form update P+ = (1 - K)^2 P- + K^2 R that VRKN's code uses."""
    w, R = model.latent_observation(batch["obs"])
    mean0, var0 = model.initial_belief()
    B, T = batch["is_first"].shape
    mean, var = mean0.expand(B, -1), var0.expand(B, -1)
    means, variances, transitions = [], [], []
    for t in range(T):
        A, b, Q = model.transition(mean, batch["prev_action"][:, t])
        start = batch["is_first"][:, t:t + 1] | (t == 0)
        prior_mean = torch.where(start, mean0, A * mean + b)
        prior_var = torch.where(start, var0, A * A * var + Q)
        gain = prior_var / (prior_var + R[:, t])
        mean = prior_mean + gain * (w[:, t] - prior_mean)
        var = (1 - gain).square() * prior_var + gain.square() * R[:, t]
        means.append(mean)
        variances.append(var)
        transitions.append((A, b, Q))
    return torch.stack(means, 1), torch.stack(variances, 1), transitions


def test_filter_matches_an_independent_joseph_form_loop():
    model = make_model().double().eval()
    batch = make_batch()
    with torch.no_grad():
        beliefs, last = model.observe(batch["obs"], batch["prev_action"], batch["is_first"])
        mean, var, _ = joseph_form_filter(model, batch)
    torch.testing.assert_close(beliefs["mean"], mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(beliefs["var"], var, rtol=1e-12, atol=0)
    torch.testing.assert_close(last["mean"], mean[:, -1], rtol=0, atol=1e-12)


def test_loss_equals_an_explicit_computation():
    """Eval mode: sequential RTS smoother on the Joseph-form beliefs, transitions out of step t taken
    from step t + 1, decoders on the smoothed mean, KL clipped by the free nats per step."""
    model = make_model(free_nats=0.3).double().eval()
    batch = make_batch()
    loss, metrics, _ = model.loss(batch)
    with torch.no_grad():
        mean, var, transitions = joseph_form_filter(model, batch)
        A, b, Q = (torch.stack([tr[i] for tr in transitions[1:]] + [transitions[-1][i]], 1) for i in range(3))
        restart = batch["is_first"].clone()
        restart[:, 0] = True
        smoothed = kalman_smoother(FilterResult(mean, var, mean, var, restart), A, b, Q, backend="sequential")
        mean0, var0 = model.initial_belief()
        kl = tight_kl(var, smoothed.smoothed_mean, smoothed.smoothed_var, A, b, Q, mean0, var0, restart)
        obs_ll = model.decoder.log_likelihood(smoothed.smoothed_mean, batch["obs"])
        reward_ll = model.reward_head.log_likelihood(smoothed.smoothed_mean, batch["reward"])
    assert (kl < 0.3).any() and (kl > 0.3).any()
    expected = kl.clamp(min=0.3).mean() - obs_ll.mean() - 10.0 * reward_ll.mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(metrics["model/kl"], kl.mean(), rtol=1e-10, atol=1e-10)


def test_transition_and_variances_respect_bounds_and_start_at_their_inits():
    model = make_model().double()
    mean = 1e3 * torch.randn(64, 5, dtype=F64)
    action = torch.rand(64, 2, dtype=F64)
    A, b, Q = model.transition(mean, action)
    assert A.min() >= 0.1 and A.max() <= 0.99 and Q.min() >= 0.001 and Q.max() <= 0.1
    with torch.no_grad():
        model.transition.post[-1].weight.zero_()
        model.transition.post[-1].bias.zero_()
        model.obs_head.weight.zero_()
        model.obs_head.bias.zero_()
    A, b, Q = model.transition(mean, action)
    torch.testing.assert_close(A, torch.full_like(A, 0.9), rtol=0, atol=1e-12)
    torch.testing.assert_close(Q, torch.full_like(Q, 0.01), rtol=0, atol=1e-12)
    assert torch.equal(b, torch.zeros_like(b))
    _, R = model.latent_observation(torch.randn(2, 3, 4, dtype=F64))
    torch.testing.assert_close(R, torch.ones_like(R), rtol=0, atol=1e-12)
    with torch.no_grad():
        model.obs_head.bias.fill_(-1e3)
        model.initial_var_raw.fill_(-1e3)
    _, R = model.latent_observation(torch.randn(2, 3, 4, dtype=F64))
    torch.testing.assert_close(R, torch.full_like(R, 0.01), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.initial_belief()[1], torch.full((5,), 0.001, dtype=F64), rtol=0, atol=1e-12)


def test_free_nats_and_reward_scale():
    batch = make_batch()
    reference = make_model(free_nats=0.0).double().eval()
    loss0, metrics0, _ = reference.loss(batch)
    clipped = make_model(free_nats=1e3).double().eval()
    _, metrics_clipped, _ = clipped.loss(batch)
    assert metrics_clipped["model/kl_loss"].item() == 1e3
    torch.testing.assert_close(metrics0["model/kl_loss"], metrics0["model/kl"], rtol=1e-12, atol=0)
    unscaled = make_model(free_nats=0.0, reward_scale=0.0).double().eval()
    loss_unscaled, _, _ = unscaled.loss(batch)
    torch.testing.assert_close(loss0 - loss_unscaled, -10.0 * metrics0["model/reward_log_likelihood"],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs,message", [
    (dict(dropout=-0.1), "dropout"), (dict(hidden_dim=0), "hidden_dim"),
    (dict(transition_var_bounds=(0.001, 0.1), transition_var_init=0.5), "low < init < high"),
    (dict(initial_var_min=0.0), "floor < init"), (dict(reward_scale=-1.0), "reward_scale"),
])
def test_bad_configuration_gives_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_model(**kwargs)
