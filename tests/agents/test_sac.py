import copy
import math

import pytest
import torch
from torch.nn import functional as F

from agents.sac import SAC, TanhGaussianActor, clamp_passing_gradient


@pytest.mark.parametrize("parameterisation", TanhGaussianActor.PARAMETERISATIONS)
def test_tanh_gaussian_log_prob_matches_torch_distributions_in_float64(parameterisation):
    torch.manual_seed(0)
    actor = TanhGaussianActor(feature_dim=5, action_dim=3, hidden_dim=16, num_layers=2,
                              parameterisation=parameterisation).double()
    features = torch.randn(64, 5, dtype=torch.float64)
    torch.manual_seed(1)
    action, log_prob = actor(features)
    mean, log_std = actor.distribution(features)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    expected = reference.log_prob(action.clamp(-1 + 1e-12, 1 - 1e-12)).sum(-1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-6, atol=1e-6)
    assert action.abs().max() < 1


def test_critic_target_is_the_soft_bellman_backup():
    torch.manual_seed(0)
    sac = SAC(feature_dim=4, action_dim=2, hidden_dim=8, num_layers=1, lr=0.0, gamma=0.9)
    with torch.no_grad():  # a target network apart from the online critic, as after any update
        for p in sac.critic_target.parameters():
            p.add_(torch.randn_like(p))
    f, a = torch.randn(6, 4), torch.rand(6, 2) * 2 - 1
    r, f_next, discount = torch.randn(6), torch.randn(6, 4), torch.tensor([1, 1, 0, 1, 1, 1.0])
    mask = torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.bool)
    torch.manual_seed(5)
    metrics = sac.update_critic(f, a, r, f_next, discount, mask)
    torch.manual_seed(5)
    next_a, next_logp = sac.actor(f_next)
    target = r + 0.9 * discount * (torch.min(*sac.critic_target(f_next, next_a)) - sac.alpha * next_logp)
    q1, q2 = sac.critic(f, a)  # lr = 0: unchanged by the step
    expected = (((q1 - target) ** 2 + (q2 - target) ** 2) * mask).sum() / mask.sum()
    torch.testing.assert_close(metrics["sac/critic_loss"], expected.detach())


@pytest.mark.parametrize("entropy_gap", [-3.0, 3.0])
def test_actor_and_temperature_losses_are_sacs(entropy_gap):
    """Actor loss: mean(alpha * log pi(a|f) - min Q(f, a)) over a ~ pi; temperature: d loss / d log alpha
    = -mean(log pi + target entropy), so alpha grows while the entropy is below its target and shrinks
    while above. The target entropy is put `entropy_gap` above the actor's entropy."""
    torch.manual_seed(0)
    sac = SAC(feature_dim=4, action_dim=2, hidden_dim=8, num_layers=1, lr=1e-2, alpha_grad_clip=None)
    before = copy.deepcopy(sac)  # the networks as the update finds them
    f, mask = torch.randn(16, 4), torch.tensor([True] * 12 + [False] * 4)
    torch.manual_seed(3)
    action, log_prob = before.actor(f)  # the sample the update draws from the same seed
    sac.target_entropy = -log_prob[mask].mean().item() + entropy_gap
    torch.manual_seed(3)
    metrics = sac.update_actor_and_alpha(f, mask)

    expected_actor_loss = (before.alpha * log_prob - torch.min(*before.critic(f, action)))[mask].mean()
    torch.testing.assert_close(metrics["sac/actor_loss"], expected_actor_loss.detach())
    torch.testing.assert_close(sac.log_alpha.grad, -(log_prob.detach()[mask] + sac.target_entropy).mean())
    assert math.copysign(1.0, (sac.log_alpha - before.log_alpha).item()) == math.copysign(1.0, entropy_gap)


def test_target_network_follows_the_online_critic_by_ema():
    sac = SAC(feature_dim=3, action_dim=1, hidden_dim=4, num_layers=1, target_ema=0.75)
    online = [p.detach().clone() for p in sac.critic.parameters()]
    with torch.no_grad():
        for p in sac.critic.parameters():
            p.add_(1.0)
    sac.update_target()
    for target, before in zip(sac.critic_target.parameters(), online):
        torch.testing.assert_close(target, 0.75 * before + 0.25 * (before + 1.0))


def test_learns_the_best_action_of_a_contextual_bandit():
    """r = -(a - c)^2 with context c in the features; gamma = 0 so Q is the reward."""
    torch.manual_seed(0)
    sac = SAC(feature_dim=1, action_dim=1, hidden_dim=32, num_layers=2, lr=1e-2, gamma=0.0,
              init_temperature=0.01)
    for _ in range(300):
        c = torch.rand(64, 1) - 0.5
        a = torch.rand(64, 1) * 2 - 1
        r = -((a - c) ** 2).squeeze(-1)
        ones = torch.ones(64)
        sac.update(c, a, r, c, ones, ones.bool())
    contexts = torch.tensor([[-0.4], [0.0], [0.3]])
    actions = sac.act(contexts, deterministic=True)
    torch.testing.assert_close(actions, contexts, atol=0.1, rtol=0)


def test_masked_transitions_do_not_change_the_update():
    torch.manual_seed(0)
    base = SAC(feature_dim=2, action_dim=1, hidden_dim=8, num_layers=1)
    data = [torch.randn(5, 2), torch.rand(5, 1), torch.randn(5), torch.randn(5, 2), torch.ones(5)]
    mask = torch.tensor([1, 1, 0, 1, 0], dtype=torch.bool)
    results = []
    for garbage in (0.0, 1e3):
        sac = SAC(feature_dim=2, action_dim=1, hidden_dim=8, num_layers=1)
        sac.load_state_dict(base.state_dict())
        r = data[2].clone()
        r[~mask] += garbage
        torch.manual_seed(3)
        results.append(sac.update_critic(data[0], data[1], r, data[3], data[4], mask)["sac/critic_loss"])
    assert math.isclose(results[0].item(), results[1].item(), rel_tol=1e-6)


def test_log_std_clamp_bounds_values_and_keeps_gradients_outside_the_bounds():
    x = torch.tensor([-1e3, -50.0, -5.0, 0.0, 2.0, 50.0, 1e3], requires_grad=True)
    y = clamp_passing_gradient(x, -5.0, 2.0)
    torch.testing.assert_close(y, torch.tensor([-5.0, -5.0, -5.0, 0.0, 2.0, 2.0, 2.0]))
    (grad,) = torch.autograd.grad((y * torch.arange(7.0)).sum(), x)
    torch.testing.assert_close(grad, torch.arange(7.0))  # a tanh squash gives exactly 0 at +-50


def test_coral_parameterisation_by_hand():
    """mean = 5 tanh(raw / 5), std = softplus(raw + softplus^-1(0.0183)) + 0.005 (CoRAL actor.py):
    std 0.0233 at a zero raw output, never below 0.005, and |mean| < 5."""
    actor = TanhGaussianActor(feature_dim=2, action_dim=2, hidden_dim=4, num_layers=0).double()
    assert actor.parameterisation == "softplus_std"
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.copy_(torch.tensor([30.0, -1.0, 0.0, -50.0], dtype=torch.float64))
    mean, log_std = actor.distribution(torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(mean[0], 5 * torch.tanh(torch.tensor([6.0, -0.2], dtype=torch.float64)), rtol=0, atol=1e-12)
    shift = math.log(math.expm1(0.0183))
    expected_std = F.softplus(torch.tensor([0.0, -50.0], dtype=torch.float64) + shift) + 0.005
    torch.testing.assert_close(log_std[0].exp(), expected_std, rtol=1e-12, atol=0)
    assert abs(expected_std[0].item() - 0.0233) < 1e-12 and abs(expected_std[1].item() - 0.005) < 1e-12


def test_sac_defaults_are_corals_clips_and_actor():
    sac = SAC(feature_dim=2, action_dim=1, hidden_dim=4, num_layers=1)
    assert sac.actor.parameterisation == "softplus_std"
    assert (sac.actor_grad_clip, sac.alpha_grad_clip) == (10.0, 1.0)


def test_temperature_gradient_is_clipped_to_one():
    sac = SAC(feature_dim=2, action_dim=1, hidden_dim=4, num_layers=1, lr=1.0)
    features = 100.0 * torch.randn(32, 2)
    with torch.no_grad():
        sac.actor.net[-1].bias[1] = -40.0  # entropy far below the target: a large alpha gradient
    before = sac.log_alpha.detach().clone()
    sac.update_actor_and_alpha(features, torch.ones(32, dtype=torch.bool))
    assert sac.log_alpha.grad.abs().item() == pytest.approx(1.0, abs=1e-6)  # clipped, before Adam's step
    assert sac.log_alpha.detach() != before


@pytest.mark.parametrize("parameterisation,raw", [("clamped_log_std", -40.0), ("softplus_std", -10.0)])
def test_entropy_bonus_pulls_a_collapsed_std_back(parameterisation, raw):
    """An actor whose std sits at its lower bound recovers when only entropy matters. The clamped
    log-std passes gradients straight through, however deep the raw value; CoRAL's softplus std is
    at its 0.005 floor already at raw -10 (entropy -3.9) and recovers from there, because Adam
    rescales the small softplus gradient. (At raw -40 that gradient underflows in float32 and the
    std stays at the floor: `sac/entropy` shows such a collapse.)"""
    torch.manual_seed(0)
    actor = TanhGaussianActor(feature_dim=2, action_dim=1, hidden_dim=8, num_layers=1,
                              parameterisation=parameterisation)
    with torch.no_grad():
        actor.net[-1].bias[1] = raw
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-2)
    features = torch.randn(256, 2)
    for _ in range(200):
        _, log_prob = actor(features)
        optimizer.zero_grad()
        log_prob.mean().backward()  # maximise entropy
        optimizer.step()
    _, log_prob = actor(features)
    assert -log_prob.mean() > 0.0  # entropy back near that of a wide tanh-Gaussian (-3.6 / -3.9 at the bounds)
