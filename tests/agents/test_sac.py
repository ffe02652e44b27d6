import math

import torch

from agents.sac import SAC, TanhGaussianActor, clamp_passing_gradient


def test_tanh_gaussian_log_prob_matches_torch_distributions_in_float64():
    torch.manual_seed(0)
    actor = TanhGaussianActor(feature_dim=5, action_dim=3, hidden_dim=16, num_layers=2).double()
    features = torch.randn(64, 5, dtype=torch.float64)
    torch.manual_seed(1)
    action, log_prob = actor(features)
    mean, log_std = actor.net(features).chunk(2, dim=-1)
    log_std = clamp_passing_gradient(log_std, *actor.log_std_bounds)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    expected = reference.log_prob(action.clamp(-1 + 1e-12, 1 - 1e-12)).sum(-1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-6, atol=1e-6)
    assert action.abs().max() < 1


def test_critic_target_is_the_soft_bellman_backup():
    torch.manual_seed(0)
    sac = SAC(feature_dim=4, action_dim=2, hidden_dim=8, num_layers=1, lr=0.0, gamma=0.9)
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


def test_entropy_bonus_pulls_a_collapsed_log_std_back():
    """An actor whose raw log-std sits far below the bound recovers when only entropy matters."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(feature_dim=2, action_dim=1, hidden_dim=8, num_layers=1)
    with torch.no_grad():
        actor.net[-1].bias[1] = -40.0  # raw log-std far below -5
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-2)
    features = torch.randn(256, 2)
    for _ in range(200):
        _, log_prob = actor(features)
        optimizer.zero_grad()
        log_prob.mean().backward()  # maximise entropy
        optimizer.step()
    _, log_prob = actor(features)
    assert -log_prob.mean() > 0.0  # entropy back near that of a wide tanh-Gaussian (-3.6 at the bound)
