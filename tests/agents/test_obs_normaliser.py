"""Observation standardisation with prefill statistics: the statistics, identity cases, that the
agent feeds normalised observations to its world model in `update` and in `act`, and that the
statistics travel bit-exactly through the agent's checkpoint."""
import functools
import io

import numpy as np
import pytest
import torch

from agents.latent_sac import LatentSAC
from agents.obs_normaliser import ObsNormaliser
from agents.sac import SAC
from models.identity import Identity


def test_statistics_are_the_float64_mean_and_std_of_the_prefill_observations():
    rng = np.random.default_rng(0)
    obs = (rng.normal(size=(500, 4)) * [1.28, 0.69, 4.09, 0.0] + [3.0, -1.0, 0.5, 7.0]).astype(np.float32)
    normaliser = ObsNormaliser((4,))
    normaliser.fit(obs)
    reference = obs.astype(np.float64)
    std = reference.std(0)
    std[3] = 1.0  # a constant dimension is only centred
    np.testing.assert_allclose(normaliser.mean.numpy(), reference.mean(0), rtol=1e-6)
    np.testing.assert_allclose(normaliser.std.numpy(), std, rtol=1e-6)
    out = normaliser(torch.as_tensor(obs)).double().numpy()
    np.testing.assert_allclose(out[:, :3].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:, :3].std(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[:, 3], 0.0, atol=1e-5)
    assert normaliser.is_fitted


def test_identity_before_fit_for_images_and_when_disabled():
    obs = torch.randn(3, 5) * 10
    assert torch.equal(ObsNormaliser((5,))(obs), obs)
    disabled = ObsNormaliser((5,), enabled=False)
    disabled.fit(np.random.default_rng(0).normal(size=(50, 5)) * 3 + 1)
    assert disabled.is_fitted and torch.equal(disabled(obs), obs)
    images = ObsNormaliser((3, 4, 4))
    frames = np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    images.fit(frames)
    assert images.is_fitted and torch.equal(images(torch.as_tensor(frames)), torch.as_tensor(frames))
    with pytest.raises(ValueError, match="ObsNormaliser.fit needs obs of shape"):
        ObsNormaliser((5,)).fit(np.zeros((3, 4)))


class _Recorder(Identity):
    """Identity that remembers the observations it was given."""

    def observe(self, obs, prev_action, is_first, state=None):
        self.seen = obs.clone()
        return super().observe(obs, prev_action, is_first, state)

    def step(self, obs, prev_action, is_first, state):
        self.seen = obs.clone()
        return super().step(obs, prev_action, is_first, state)


def _agent(model):
    return LatentSAC(model, 1, sac=functools.partial(SAC, hidden_dim=8, num_layers=1))


def test_the_agent_feeds_normalised_observations_to_its_model_in_update_and_act():
    agent = _agent(_Recorder((3,), 1))
    prefill = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32) * [2.0, 0.5, 1.0] + [1.0, 0.0, -3.0]
    agent.fit_obs_normaliser(prefill)
    expected = lambda x: (torch.as_tensor(x) - agent.obs_normaliser.mean) / agent.obs_normaliser.std
    batch = {"obs": prefill[:8].reshape(2, 4, 3), "prev_action": np.zeros((2, 4, 1), np.float32),
             "reward": np.zeros((2, 4), np.float32), "is_first": np.eye(1, 4, dtype=bool).repeat(2, 0),
             "is_terminal": np.zeros((2, 4), bool)}
    agent.update(batch)
    torch.testing.assert_close(agent.world_model.seen, expected(batch["obs"]), rtol=0, atol=0)
    agent.act(agent.initial_state(1), prefill[:1], np.zeros((1, 1), np.float32), [True])
    torch.testing.assert_close(agent.world_model.seen, expected(prefill[:1]), rtol=0, atol=0)
    assert not torch.allclose(agent.world_model.seen, torch.as_tensor(prefill[:1]))  # it did change them


def test_statistics_survive_a_checkpoint_round_trip_bit_exactly():
    agent = _agent(Identity((3,), 1))
    agent.fit_obs_normaliser(np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32) * 3 + 2)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = _agent(Identity((3,), 1))
    assert not restored.obs_normaliser_fitted
    restored.load_state_dict(torch.load(buffer))
    assert restored.obs_normaliser_fitted
    assert torch.equal(restored.obs_normaliser.mean, agent.obs_normaliser.mean)
    assert torch.equal(restored.obs_normaliser.std, agent.obs_normaliser.std)
