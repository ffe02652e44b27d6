"""The validity flag of the missing_state suite through replay and LatentSAC: stored only when the
env gives it, sampled as (B, T) bool, checkpointed, left out of the normaliser's statistics, and
passed to the world model when acting and updating."""
import functools

import numpy as np
import pytest
import torch

from agents.latent_sac import LatentSAC
from agents.replay import ReplayBuffer
from agents.sac import SAC
from tests.models import model_table


def fill(buffer, length, valid_every=None):
    """One episode; obs = [step, valid]; with valid_every, step t is valid iff t % valid_every == 0
    (its obs zeros otherwise), else no flag is passed."""
    for t in range(length):
        valid = None if valid_every is None else t % valid_every == 0
        obs = np.array([t, 1.0], np.float32) if valid in (None, True) else np.zeros(2, np.float32)
        buffer.add(obs, np.ones(1, np.float32), 1.0, is_first=t == 0, obs_valid=valid)


def test_obs_valid_is_stored_only_when_given():
    plain = ReplayBuffer(50, (2,), np.float32, 1)
    fill(plain, 20)
    assert "obs_valid" not in plain.data and "obs_valid" not in plain.sample(4, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(plain.valid_observations(), plain.data["obs"][:20])

    flagged = ReplayBuffer(50, (2,), np.float32, 1)
    fill(flagged, 20, valid_every=3)
    batch = flagged.sample(64, 5, np.random.default_rng(0))
    assert batch["obs_valid"].shape == (64, 5) and batch["obs_valid"].dtype == bool
    np.testing.assert_array_equal(batch["obs_valid"], batch["obs"][..., 1] == 1.0)
    assert batch["obs_valid"].any() and not batch["obs_valid"].all()
    np.testing.assert_array_equal(flagged.valid_observations()[:, 0], np.arange(0, 20, 3))


def test_obs_valid_survives_a_checkpoint(tmp_path):
    buffer = ReplayBuffer(50, (2,), np.float32, 1)
    fill(buffer, 20, valid_every=4)
    buffer.save(tmp_path)
    restored = ReplayBuffer(50, (2,), np.float32, 1)
    restored.load(tmp_path, buffer.total_added)
    np.testing.assert_array_equal(restored.data["obs_valid"], buffer.data["obs_valid"])
    plain = ReplayBuffer(50, (2,), np.float32, 1)  # a checkpoint without the flag loads without it
    fill(plain, 20)
    plain.save(tmp_path / "plain")
    again = ReplayBuffer(50, (2,), np.float32, 1)
    again.load(tmp_path / "plain", plain.total_added)
    assert "obs_valid" not in again.data


class Recording(torch.nn.Module):
    """Wraps a world model and records the obs_valid its step and loss receive."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []
        for name in ("name", "obs_shape", "action_dim", "feature_dim", "learning_rate", "grad_clip"):
            setattr(self, name, getattr(model, name))

    def initial_state(self, batch_size):
        return self.model.initial_state(batch_size)

    def step(self, obs, prev_action, is_first, state, **kwargs):
        self.seen.append(("step", kwargs.get("obs_valid")))
        return self.model.step(obs, prev_action, is_first, state, **kwargs)

    def features(self, belief):
        return self.model.features(belief)

    def loss(self, batch):
        self.seen.append(("loss", batch.get("obs_valid")))
        return self.model.loss(batch)


@pytest.mark.parametrize("name", ["kalmamba", "rssm", "identity"])
def test_latent_sac_passes_obs_valid_to_the_world_model_only_when_given(name):
    torch.manual_seed(0)
    model = Recording(model_table.build(name, "state", 2))
    agent = LatentSAC(model, 2, sac=functools.partial(SAC, hidden_dim=16, num_layers=2), compile="none")
    obs = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    state = agent.initial_state(2)
    action, state = agent.act(state, obs, np.zeros((2, 2), np.float32), [True, True])
    _, state = agent.act(state, obs, action, [False, False], obs_valid=[True, False])
    assert model.seen[0] == ("step", None)
    assert model.seen[1][0] == "step" and model.seen[1][1].tolist() == [True, False]

    buffer = ReplayBuffer(100, (5,), np.float32, 2)
    for t in range(40):
        buffer.add(obs[0] if t % 4 == 0 else np.zeros(5, np.float32), np.zeros(2, np.float32), 0.5,
                   is_first=t == 0, obs_valid=t % 4 == 0)
    batch = buffer.sample(3, 6, np.random.default_rng(1))
    metrics = agent.update(batch)
    kind, valid = model.seen[-1]
    assert kind == "loss" and torch.equal(valid.cpu(), torch.as_tensor(batch["obs_valid"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.parametrize("name,shape_name", model_table.cases())
def test_update_and_acting_step_with_obs_valid_read_nothing_on_the_host(name, shape_name):
    """As tests/agents/test_no_host_sync.py, with withheld observations: graph mode stays possible."""
    from tests.agents.test_no_host_sync import _agent, _batch, forbid_host_reads
    agent = _agent(name, shape_name)
    batch = {k: torch.as_tensor(v) for k, v in _batch(shape_name).items()}
    batch["obs_valid"] = torch.rand(batch["is_first"].shape, generator=torch.Generator().manual_seed(0)) < 0.3
    with forbid_host_reads(agent.optimizers()):
        metrics = agent._update(batch)
    assert metrics and all(torch.is_tensor(v) and torch.isfinite(v).all() for v in metrics.values())
    obs = torch.as_tensor(_batch(shape_name, B=2, T=1)["obs"][:, 0])
    with torch.no_grad(), forbid_host_reads():
        action, _ = agent._act(obs=obs, prev_action=torch.zeros(2, 2), is_first=torch.tensor([True, False]),
                               state=agent.initial_state(2), deterministic=True, obs_valid=torch.tensor([True, False]))
    assert torch.isfinite(action).all()
