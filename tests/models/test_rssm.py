"""RSSM: sequence/step equivalence, episode resets, checkpoints, exact loss terms, learning."""
import io
import math

import gin
import pytest
import torch

from models import networks
from models.rssm import RSSM, balanced_kl_loss, gaussian_kl

# eval mode carries the posterior mean, so results are deterministic (the sampling default is tested below)
SMALL = dict(deter_dim=12, stoch_dim=5, hidden_dim=16, sample_when_acting=False)


def _small_state_networks():
    return dict(encoder_fn=lambda shape: networks.StateEncoder(shape, hidden_dim=16),
                decoder_fn=lambda dim, shape: networks.StateDecoder(dim, shape, hidden_dim=16))


def _batch(obs_shape, action_dim, batch_size, length, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    if len(obs_shape) == 3:
        obs = torch.randint(0, 256, (batch_size, length, *obs_shape), dtype=torch.uint8, generator=generator)
    else:
        obs = torch.randn(batch_size, length, *obs_shape, generator=generator, dtype=dtype)
    is_first = torch.zeros(batch_size, length, dtype=torch.bool)
    is_first[:, 0] = True
    return {"obs": obs,
            "prev_action": torch.rand(batch_size, length, action_dim, generator=generator, dtype=dtype) * 2 - 1,
            "reward": torch.randn(batch_size, length, generator=generator, dtype=dtype),
            "is_first": is_first}


def _assert_beliefs_equal(actual, expected, atol):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("obs_shape, length", [((5,), 7), ((3, 64, 64), 3)])
def test_observe_equals_successive_steps(obs_shape, length):
    torch.manual_seed(0)
    model = RSSM(obs_shape, 2, sample_when_acting=False).double().eval()
    batch = _batch(obs_shape, 2, 2, length, torch.float64)
    batch["is_first"][0, length // 2] = True
    beliefs, last = model.observe(batch["obs"], batch["prev_action"], batch["is_first"])
    state = model.initial_state(2)
    for t in range(length):
        state = model.step(batch["obs"][:, t], batch["prev_action"][:, t], batch["is_first"][:, t], state)
        _assert_beliefs_equal(state, {k: v[:, t] for k, v in beliefs.items()}, atol=1e-12)
    _assert_beliefs_equal(last, state, atol=1e-12)
    assert beliefs["deter"].shape == (2, length, 200) and beliefs["mean"].shape == (2, length, 64)
    assert model.features(beliefs).shape == (2, length, model.feature_dim) == (2, length, 264)


def test_mid_sequence_is_first_restarts_the_belief():
    torch.manual_seed(0)
    model = RSSM((5,), 2, **SMALL).double().eval()
    batch = _batch((5,), 2, 2, 9, torch.float64)
    batch["is_first"][0, 4] = True  # only sequence 0 starts a new episode at t = 4
    beliefs, _ = model.observe(batch["obs"], batch["prev_action"], batch["is_first"])
    fresh_first = torch.zeros(2, 5, dtype=torch.bool)
    fresh_first[:, 0] = True
    fresh, _ = model.observe(batch["obs"][:, 4:], batch["prev_action"][:, 4:], fresh_first)
    _assert_beliefs_equal({k: v[0, 4:] for k, v in beliefs.items()}, {k: v[0] for k, v in fresh.items()}, atol=1e-12)
    # without the reset the history matters, so the comparison above can fail
    assert (beliefs["deter"][1, 4:] - fresh["deter"][1]).abs().max() > 1e-3
    # the action recorded at a reset step is ignored
    batch["prev_action"][0, 4] = 5.0
    again, _ = model.observe(batch["obs"], batch["prev_action"], batch["is_first"])
    _assert_beliefs_equal(again, beliefs, atol=0)


def test_train_mode_samples_and_features_use_the_posterior_mean():
    torch.manual_seed(0)
    model = RSSM((5,), 2, **SMALL).train()
    batch = _batch((5,), 2, 2, 4)
    beliefs, _ = model.observe(batch["obs"], batch["prev_action"], batch["is_first"])
    noise = (beliefs["stoch"] - beliefs["mean"]) / beliefs["std"]
    assert noise.abs().min() > 0 and 0.3 < noise.std() < 3.0
    torch.testing.assert_close(model.features(beliefs), torch.cat([beliefs["deter"], beliefs["mean"]], -1),
                               atol=0, rtol=0)


def test_acting_drives_the_gru_with_a_sampled_z_by_default():
    """CoRAL acts with a posterior sample; `sample_when_acting = False` carries the posterior mean."""
    batch = _batch((5,), 2, 2, 4)
    sizes = dict(deter_dim=12, stoch_dim=5, hidden_dim=16)
    torch.manual_seed(0)
    sampling = RSSM((5,), 2, **sizes).eval()
    torch.manual_seed(0)
    mean_only = RSSM((5,), 2, **sizes, sample_when_acting=False).eval()
    state = sampling.initial_state(2)
    with torch.no_grad():
        stepped = sampling.step(batch["obs"][:, 0], batch["prev_action"][:, 0], batch["is_first"][:, 0], state)
        noise = (stepped["stoch"] - stepped["mean"]) / stepped["std"]
        assert noise.abs().min() > 0 and 0.3 < noise.std() < 3.0
        again = sampling.step(batch["obs"][:, 1], batch["prev_action"][:, 1], batch["is_first"][:, 1], stepped)
        plain = mean_only.step(batch["obs"][:, 0], batch["prev_action"][:, 0], batch["is_first"][:, 0], state)
        plain = mean_only.step(batch["obs"][:, 1], batch["prev_action"][:, 1], batch["is_first"][:, 1], plain)
    assert torch.equal(plain["stoch"], plain["mean"])
    assert not torch.allclose(again["deter"], plain["deter"], atol=1e-4)  # the sample reached the GRU


@pytest.mark.parametrize("obs_shape", [(5,), (3, 64, 64)])
def test_one_update_gives_finite_loss_and_gradients(obs_shape):
    torch.manual_seed(0)
    model = RSSM(obs_shape, 3, free_nats=0.0)  # no free nats, so every parameter receives gradient
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    batch = _batch(obs_shape, 3, 2, 5)
    loss, metrics, beliefs = model.loss(batch)
    optimizer.zero_grad()
    loss.backward()
    assert torch.isfinite(loss) and loss.dim() == 0
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert torch.isfinite(model.loss(batch)[0])
    assert all(key.startswith("model/") and value.dim() == 0 and torch.isfinite(value)
               for key, value in metrics.items())
    assert beliefs["deter"].shape == (2, 5, 200)


def test_loss_is_the_sum_of_its_hand_computed_terms():
    torch.manual_seed(0)
    model = RSSM((5,), 2, free_nats=0.3, kl_balance=0.8, **SMALL).double().eval()
    batch = _batch((5,), 2, 3, 6, torch.float64)
    loss, metrics, beliefs = model.loss(batch)
    latent = torch.cat([beliefs["deter"], beliefs["mean"]], -1)  # stoch == mean in eval mode
    obs_mean = model.decoder(latent)
    obs_ll = (-0.5 * (batch["obs"] - obs_mean) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    reward_ll = -0.5 * (batch["reward"] - model.reward_head(latent)) ** 2 - 0.5 * math.log(2 * math.pi)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(beliefs["mean"], beliefs["std"]),
        torch.distributions.Normal(beliefs["prior_mean"], beliefs["prior_std"])).sum(-1)
    expected = kl.clamp(min=0.3).mean() - obs_ll.mean() - reward_ll.mean()
    torch.testing.assert_close(loss, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(metrics["model/kl"], kl.mean(), atol=1e-10, rtol=0)
    torch.testing.assert_close(metrics["model/obs_log_likelihood"], obs_ll.mean(), atol=1e-10, rtol=0)


def test_gaussian_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mean_q, mean_p = torch.randn(2, 3, 4, 7, generator=generator, dtype=torch.float64)
    std_q, std_p = torch.rand(2, 3, 4, 7, generator=generator, dtype=torch.float64) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean_q, std_q),
                                                 torch.distributions.Normal(mean_p, std_p)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean_q, std_q, mean_p, std_p), expected, atol=1e-12, rtol=0)
    assert gaussian_kl(mean_q, std_q, mean_q, std_q).abs().max() < 1e-12


@pytest.mark.parametrize("balance", [0.8, 0.3])
def test_balanced_kl_value_and_gradients_by_hand(balance):
    """One latent dim, so KL per step is the closed form; steps below free nats get no gradient."""
    free_nats = 0.5
    mean_q = torch.tensor([[[0.0], [2.0], [0.1]], [[-1.5], [0.3], [1.0]]], dtype=torch.float64, requires_grad=True)
    std_q = torch.tensor([[[1.0], [0.5], [0.9]], [[0.7], [1.1], [0.4]]], dtype=torch.float64, requires_grad=True)
    mean_p = torch.tensor([[[0.1], [0.0], [0.0]], [[0.5], [0.2], [0.0]]], dtype=torch.float64, requires_grad=True)
    std_p = torch.tensor([[[1.0], [1.0], [1.0]], [[1.3], [1.0], [0.8]]], dtype=torch.float64, requires_grad=True)
    loss, kl = balanced_kl_loss(mean_q, std_q, mean_p, std_p, free_nats, balance)
    loss.backward()

    mq, sq, mp, sp = (x.detach()[..., 0] for x in (mean_q, std_q, mean_p, std_p))
    kl_by_hand = torch.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5
    active = (kl_by_hand > free_nats).double()
    assert 0 < active.sum() < active.numel()  # the example exercises both sides of the clip
    count = kl_by_hand.numel()
    torch.testing.assert_close(kl, kl_by_hand, atol=1e-12, rtol=0)
    torch.testing.assert_close(loss, kl_by_hand.clamp(min=free_nats).mean(), atol=1e-12, rtol=0)
    expected_grads = {
        "mean_q": (1 - balance) * active * (mq - mp) / sp ** 2 / count,
        "std_q": (1 - balance) * active * (-1 / sq + sq / sp ** 2) / count,
        "mean_p": balance * active * (mp - mq) / sp ** 2 / count,
        "std_p": balance * active * (1 / sp - (sq ** 2 + (mq - mp) ** 2) / sp ** 3) / count,
    }
    for name, tensor in [("mean_q", mean_q), ("std_q", std_q), ("mean_p", mean_p), ("std_p", std_p)]:
        torch.testing.assert_close(tensor.grad[..., 0], expected_grads[name], atol=1e-12, rtol=0, msg=name)


def test_state_dict_round_trip_reproduces_outputs_exactly():
    torch.manual_seed(0)
    trained = RSSM((5,), 2, **SMALL)
    batch = _batch((5,), 2, 2, 6)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    loss, _, _ = trained.loss(batch)
    loss.backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)

    torch.manual_seed(1)
    restored = RSSM((5,), 2, **SMALL)
    trained.eval(), restored.eval()
    assert not torch.equal(restored.loss(batch)[0], trained.loss(batch)[0])
    restored.load_state_dict(torch.load(buffer))
    expected, _ = trained.observe(batch["obs"], batch["prev_action"], batch["is_first"])
    actual, _ = restored.observe(batch["obs"], batch["prev_action"], batch["is_first"])
    _assert_beliefs_equal(actual, expected, atol=0)
    assert torch.equal(restored.loss(batch)[0], trained.loss(batch)[0])


@pytest.mark.parametrize("make", [
    lambda: RSSM((4, 4), 2),
    lambda: RSSM((5,), 0),
    lambda: RSSM((5,), 2, kl_balance=1.5),
    lambda: RSSM((5,), 2, min_std=0.0),
])
def test_bad_constructor_arguments_raise_one_clear_error(make):
    with pytest.raises(ValueError, match="RSSM needs"):
        make()


def test_bad_sequences_raise_one_clear_error():
    model = RSSM((5,), 2, **SMALL)
    batch = _batch((5,), 2, 2, 4)
    with pytest.raises(ValueError, match="obs must have shape"):
        model.observe(batch["obs"][..., :4], batch["prev_action"], batch["is_first"])
    with pytest.raises(ValueError, match="prev_action must have shape"):
        model.observe(batch["obs"], batch["prev_action"][..., :1], batch["is_first"])
    with pytest.raises(ValueError, match="obs must have shape"):
        model.step(batch["obs"][:, 0, :3], batch["prev_action"][:, 0], batch["is_first"][:, 0], model.initial_state(2))
    with pytest.raises(ValueError, match="batch keys"):
        model.loss({"obs": batch["obs"]})


def test_gin_chooses_networks_and_sizes():
    gin.parse_config("RSSM.encoder_fn = @StateEncoder\nStateEncoder.hidden_dim = 24\nRSSM.deter_dim = 16")
    try:
        model = RSSM((5,), 2)
    finally:
        gin.clear_config()
    assert model.encoder.embed_dim == 24 and model.deter_dim == 16 and model.feature_dim == 16 + 64


def _linear_system_dataset(batch_size=8, length=20, seed=0):
    """A damped 2-d rotation driven by actions, seen through a fixed 6-d linear map plus noise;
    reward is the first latent coordinate."""
    generator = torch.Generator().manual_seed(seed)
    angle = 0.3
    transition = 0.95 * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    emission = torch.randn(6, 2, generator=generator)
    actions = torch.rand(batch_size, length, 1, generator=generator) * 2 - 1
    latent = torch.randn(batch_size, 2, generator=generator)
    obs, rewards = [], []
    for t in range(length):
        if t > 0:
            latent = latent @ transition.T + 0.5 * actions[:, t] * torch.tensor([1.0, 0.0])
        obs.append(latent @ emission.T + 0.05 * torch.randn(batch_size, 6, generator=generator))
        rewards.append(latent[:, 0])
    actions[:, 0] = 0.0
    is_first = torch.zeros(batch_size, length, dtype=torch.bool)
    is_first[:, 0] = True
    return {"obs": torch.stack(obs, 1), "prev_action": actions, "reward": torch.stack(rewards, 1),
            "is_first": is_first}


def test_loss_decreases_on_a_tiny_fixed_dataset():
    torch.manual_seed(0)
    batch = _linear_system_dataset()
    model = RSSM((6,), 1, deter_dim=32, stoch_dim=4, hidden_dim=32, **_small_state_networks())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def eval_metrics():
        model.eval()
        with torch.no_grad():
            _, metrics, _ = model.loss(batch)
        model.train()
        return metrics

    before = eval_metrics()
    for _ in range(150):
        loss, _, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
    after = eval_metrics()
    assert after["model/loss"] < before["model/loss"] - 2.0
    # Best possible with unit-variance decoders: -D/2 log(2 pi) plus the 0.05-std noise, about
    # -5.52 for the 6-d observation and -0.92 for the reward (a function of the latent).
    assert before["model/obs_log_likelihood"] < -7.0 and after["model/obs_log_likelihood"] > -6.0
    assert before["model/reward_log_likelihood"] < -1.2 and after["model/reward_log_likelihood"] > -1.0
