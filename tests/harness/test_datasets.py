"""Minari round trip, return-to-go, window sampling and the dataset errors."""
import json

import numpy as np
import pytest
import torch

from harness import datasets
from harness.datasets import DatasetError, Episode

META = {"kind": "expert", "run": "results/x", "suite": "noisy_state", "task": "cartpole_swingup",
        "obs_noise_std": 0.3, "action_noise_std": 0.3, "method": "sac", "policy_env_step": 3000}


def make_episodes(lengths=(9, 13), obs_dim=5, action_dim=1, seed=0, true_obs=True):
    rng = np.random.default_rng(seed)
    return [Episode(obs=rng.normal(size=(T + 1, obs_dim)).astype(np.float32),
                    actions=rng.uniform(-1, 1, (T, action_dim)).astype(np.float32),
                    rewards=rng.uniform(0, 8, T), terminations=np.zeros(T, bool),
                    truncations=np.arange(T) == T - 1,
                    true_obs=rng.normal(size=(T + 1, obs_dim)).astype(np.float32) if true_obs else None,
                    seed=100 + i) for i, T in enumerate(lengths)]


def test_returns_to_go_matches_a_brute_force_loop():
    rewards = np.random.default_rng(1).normal(size=37)
    brute = np.array([sum(rewards[t:]) for t in range(len(rewards))])
    np.testing.assert_allclose(datasets.returns_to_go(rewards), brute, rtol=0, atol=1e-12)
    assert datasets.returns_to_go([]).shape == (0,)


@pytest.mark.parametrize("true_obs", [True, False])
def test_minari_round_trip_keeps_every_array(tmp_path, true_obs):
    episodes = make_episodes(true_obs=true_obs)
    datasets.write_dataset(tmp_path / "cart-expert", episodes, META)
    loaded = datasets.read_dataset(tmp_path / "cart-expert")
    assert len(loaded.episodes) == 2 and loaded.kind == "expert" and loaded.obs_shape == (5,)
    for a, b in zip(episodes, loaded.episodes):
        for field in ("obs", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert getattr(b, field).dtype == np.asarray(getattr(a, field)).dtype
        if true_obs:
            np.testing.assert_array_equal(a.true_obs, b.true_obs)
        else:
            assert b.true_obs is None
        assert b.seed is not None
    assert loaded.metadata["return_mean"] == pytest.approx(np.mean([e.rewards.sum() for e in episodes]))
    assert loaded.metadata["true_obs"] is true_obs and loaded.metadata["run"] == "results/x"


def test_a_relative_path_writes_and_reads_as_an_absolute_one(tmp_path, monkeypatch):
    """`--out datasets/<name>` from the repository root: Minari joins the path it is given twice."""
    monkeypatch.chdir(tmp_path)
    episodes = make_episodes()
    written = datasets.write_dataset("datasets/cart-expert-v0", episodes, META)
    assert str(written) == "datasets/cart-expert-v0" and not list((tmp_path / "datasets").glob(".*"))
    loaded = datasets.read_dataset("datasets/cart-expert-v0")
    np.testing.assert_array_equal(loaded.episodes[1].obs, episodes[1].obs)


def test_minari_itself_reads_the_dataset_by_id(tmp_path, monkeypatch):
    import minari
    datasets.write_dataset(tmp_path / "cart-expert-v0", make_episodes(), META)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = minari.load_dataset("cart-expert-v0")
    assert dataset.total_episodes == 2 and dataset.total_steps == 22


def test_write_refuses_an_existing_path_and_an_unknown_kind(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(DatasetError, match="exists"):
        datasets.write_dataset(tmp_path / "taken", make_episodes(), META)
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        datasets.write_dataset(tmp_path / "new", make_episodes(), {**META, "kind": "random"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_read_errors_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match="no Minari dataset"):
        datasets.read_dataset(tmp_path / "missing")
    datasets.write_dataset(tmp_path / "d", make_episodes(), META)
    meta_file = tmp_path / "d" / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["harness"]["kind"] = "random"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="unknown kind 'random'"):
        datasets.read_dataset(tmp_path / "d")
    (tmp_path / "d" / "data" / "main_data.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="cannot read") as error:
        datasets.read_dataset(tmp_path / "d")
    assert "\n" not in str(error.value)
    meta_file.write_text("{broken")
    with pytest.raises(DatasetError, match="cannot read"):
        datasets.read_dataset(tmp_path / "d")


def test_windows_stay_inside_one_episode_and_carry_its_returns_to_go(tmp_path):
    episodes = make_episodes(lengths=(4, 9, 13))  # the first is shorter than K and is skipped
    datasets.write_dataset(tmp_path / "d", episodes, META)
    sampler = datasets.WindowSampler(datasets.read_dataset(tmp_path / "d"), 6)
    assert len(sampler.starts) == (9 - 6 + 1) + (13 - 6 + 1)
    batch = sampler.sample(64, np.random.default_rng(0))
    assert batch["obs"].shape == (64, 6, 5) and batch["actions"].shape == (64, 6, 1)
    for b in range(64):
        t0 = int(batch["timesteps"][b, 0])
        np.testing.assert_array_equal(batch["timesteps"][b], np.arange(t0, t0 + 6))
        episode = next(e for e in episodes[1:] if np.array_equal(e.obs[t0], batch["obs"][b, 0]))
        np.testing.assert_allclose(batch["returns_to_go"][b],
                                   datasets.returns_to_go(episode.rewards)[t0:t0 + 6], rtol=1e-6)
        np.testing.assert_array_equal(batch["actions"][b], episode.actions[t0:t0 + 6])
    with pytest.raises(DatasetError, match="shorter than the context length"):
        datasets.WindowSampler(datasets.read_dataset(tmp_path / "d"), 14)


def test_device_sampler_draws_the_reference_samplers_windows(tmp_path):
    """DeviceWindowSampler (tensors, drawn by torch) against WindowSampler (numpy): the same windows
    for the same starts, and every start it draws is one of the reference's valid starts."""
    datasets.write_dataset(tmp_path / "d", make_episodes(lengths=(4, 9, 13)), META)
    reference = datasets.WindowSampler(datasets.read_dataset(tmp_path / "d"), 6)
    fast = datasets.DeviceWindowSampler(reference, "cpu")
    starts = np.random.default_rng(0).choice(reference.starts, size=50)
    expected, got = reference.windows(starts), fast.windows(torch.as_tensor(starts))
    for name in ("returns_to_go", "obs", "actions", "timesteps"):
        np.testing.assert_array_equal(got[name].numpy(), expected[name])
        assert got[name].dtype == torch.as_tensor(expected[name]).dtype
    torch.manual_seed(0)
    batch = fast.sample(4000)
    first_obs = batch["obs"][:, 0].numpy()
    drawn = {int(np.flatnonzero((reference.obs == row).all(1))[0]) for row in first_obs}
    assert drawn == set(reference.starts.tolist())  # every valid start, and nothing else, is drawn
