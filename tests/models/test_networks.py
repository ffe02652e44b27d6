"""Shared encoders/decoders: preprocessing, frame independence, exact Gaussian likelihoods, errors."""
import math

import gin
import pytest
import torch

from models import networks


def _uint8_images(*lead, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*lead, channels, 64, 64), dtype=torch.uint8, generator=generator)


def test_preprocess_maps_uint8_to_centered_unit_interval():
    obs = torch.tensor([0, 51, 128, 255], dtype=torch.uint8)
    out = networks.preprocess_obs(obs)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([-0.5, 51 / 255 - 0.5, 128 / 255 - 0.5, 0.5]), atol=1e-7, rtol=0)
    exact = networks.preprocess_obs(obs, torch.float64)
    torch.testing.assert_close(exact, torch.tensor([-0.5, 51 / 255 - 0.5, 128 / 255 - 0.5, 0.5], dtype=torch.float64),
                               atol=1e-15, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_preprocess_leaves_float_states_untouched(dtype):
    states = torch.randn(2, 3, 5, dtype=dtype) * 7.0
    assert networks.preprocess_obs(states) is states


def test_preprocess_rejects_other_integer_observations():
    with pytest.raises(ValueError, match="uint8"):
        networks.preprocess_obs(torch.zeros(3, dtype=torch.int64))


def test_mlp_layout():
    net = networks.mlp(7, 3, hidden_dim=11, num_layers=2)
    linear_shapes = [tuple(m.weight.shape) for m in net if isinstance(m, torch.nn.Linear)]
    assert linear_shapes == [(11, 7), (11, 11), (3, 11)]
    assert isinstance(net[1], torch.nn.ELU) and isinstance(net[-1], torch.nn.Linear)
    assert len(networks.mlp(7, 3, hidden_dim=11, num_layers=0)) == 1


def test_image_encoder_embeds_each_frame_on_its_own():
    torch.manual_seed(0)
    encoder = networks.ImageEncoder((3, 64, 64)).double()
    obs = _uint8_images(2, 3)
    embed = encoder(obs)
    assert embed.shape == (2, 3, 1024) and encoder.embed_dim == 1024
    for b in range(2):
        for t in range(3):
            single = encoder(obs[b, t][None])[0]
            torch.testing.assert_close(embed[b, t], single, atol=1e-12, rtol=0)
    # uint8 input and its preprocessed float version are the same observation
    torch.testing.assert_close(encoder(networks.preprocess_obs(obs, torch.float64)), embed, atol=1e-12, rtol=0)
    assert embed.std() > 0


def test_image_decoder_decodes_each_frame_on_its_own():
    torch.manual_seed(0)
    decoder = networks.ImageDecoder(9, (3, 64, 64)).double()
    features = torch.randn(2, 3, 9, dtype=torch.float64)
    mean = decoder(features)
    assert mean.shape == (2, 3, 3, 64, 64)
    torch.testing.assert_close(mean[1, 2], decoder(features[1, 2][None])[0], atol=1e-12, rtol=0)
    assert mean.std() > 0


def _reference_log_likelihood(mean, target):
    """Unit-variance Gaussian log density summed over all but the first two dims, written out."""
    num_dims = mean[0, 0].numel()
    squared = ((target - mean) ** 2).reshape(*mean.shape[:2], -1).sum(-1)
    return -0.5 * squared - 0.5 * num_dims * math.log(2 * math.pi)


@pytest.mark.parametrize("obs_shape", [(5,), (3, 64, 64)])
def test_decoder_log_likelihood_is_the_unit_gaussian_density(obs_shape):
    torch.manual_seed(1)
    decoder = networks.default_decoder_fn(6, obs_shape).double()
    features = torch.randn(2, 3, 6, dtype=torch.float64)
    if len(obs_shape) == 3:
        obs = _uint8_images(2, 3)
        target = obs.double() / 255.0 - 0.5
    else:
        obs = torch.randn(2, 3, *obs_shape, dtype=torch.float64)
        target = obs
    log_likelihood = decoder.log_likelihood(features, obs)
    mean = decoder(features)
    assert log_likelihood.shape == (2, 3)
    torch.testing.assert_close(log_likelihood, _reference_log_likelihood(mean, target), atol=1e-8, rtol=1e-12)
    by_torch = torch.distributions.Normal(mean, 1.0).log_prob(target).reshape(2, 3, -1).sum(-1)
    torch.testing.assert_close(log_likelihood, by_torch, atol=1e-8, rtol=1e-12)


def test_reward_head_log_likelihood_is_the_unit_gaussian_density():
    torch.manual_seed(2)
    head = networks.RewardHead(4).double()
    features = torch.randn(3, 5, 4, dtype=torch.float64)
    reward = torch.randn(3, 5, dtype=torch.float64)
    predicted = head(features)
    assert predicted.shape == (3, 5)
    expected = -0.5 * (reward - predicted) ** 2 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(head.log_likelihood(features, reward), expected, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="reward must have shape"):
        head.log_likelihood(features, reward[..., None])


def test_state_encoder_and_decoder_shapes_and_sizes():
    encoder = networks.StateEncoder((5,), hidden_dim=13, num_layers=3)
    embed = encoder(torch.randn(2, 7, 5))
    assert embed.shape == (2, 7, 13) and encoder.embed_dim == 13
    assert (embed > -1).all()  # ends in an ELU, like the convolutional encoder ends in a ReLU
    assert sum(isinstance(m, torch.nn.Linear) for m in encoder.net) == 3
    assert networks.StateDecoder(13, (5,))(embed).shape == (2, 7, 5)


def test_state_autoencoder_learns():
    torch.manual_seed(3)
    encoder, decoder = networks.StateEncoder((4,), hidden_dim=32), networks.StateDecoder(32, (4,), hidden_dim=32)
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)
    obs = torch.randn(4, 6, 4)
    initial = -decoder.log_likelihood(encoder(obs), obs).mean().item()
    for _ in range(100):
        loss = -decoder.log_likelihood(encoder(obs), obs).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # the floor is the Gaussian constant 4/2 log(2 pi) = 3.68; start is about 3.68 + 2
    assert loss.item() < initial - 1.5


def test_defaults_pick_networks_by_observation_rank():
    assert isinstance(networks.default_encoder_fn((3, 64, 64)), networks.ImageEncoder)
    assert isinstance(networks.default_encoder_fn((5,)), networks.StateEncoder)
    assert isinstance(networks.default_decoder_fn(8, (3, 64, 64)), networks.ImageDecoder)
    assert isinstance(networks.default_decoder_fn(8, (5,)), networks.StateDecoder)


@pytest.mark.parametrize("make", [
    lambda: networks.default_encoder_fn((4, 4)),
    lambda: networks.default_decoder_fn(3, (4, 4)),
    lambda: networks.ImageEncoder((3, 32, 32)),
    lambda: networks.ImageDecoder(3, (64, 64, 3)),
    lambda: networks.StateEncoder((3, 64, 64)),
    lambda: networks.StateDecoder(3, (0,)),
])
def test_bad_shapes_raise_one_clear_error(make):
    with pytest.raises(ValueError, match="obs_shape"):
        make()


def test_wrong_observation_shape_is_reported():
    with pytest.raises(ValueError, match=r"obs must end in shape \(5,\)"):
        networks.StateEncoder((5,))(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="obs must end in shape"):
        networks.ImageEncoder((3, 64, 64))(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="obs must end in shape"):
        networks.StateDecoder(3, (5,)).log_likelihood(torch.zeros(2, 3), torch.zeros(2, 4))


def test_gin_configures_the_default_networks():
    gin.parse_config("StateEncoder.hidden_dim = 17\nImageEncoder.depth = 8")
    try:
        assert networks.default_encoder_fn((5,)).embed_dim == 17
        assert networks.default_encoder_fn((3, 64, 64)).embed_dim == 8 * 8 * 4
    finally:
        gin.clear_config()
