import numpy as np
import pytest

from agents.replay import ReplayBuffer


def fill(buffer, episode_lengths, obs_dim=2):
    """Episodes back to back; obs = [global step, step within episode]; action = global step."""
    step = buffer.total_added
    for length in episode_lengths:
        for t in range(length):
            buffer.add(np.array([step, t], np.float32)[:obs_dim], np.full(1, step, np.float32),
                       reward=float(step), is_first=(t == 0))
            step += 1
    return step


def test_sequences_are_contiguous_and_flag_episode_starts():
    buffer = ReplayBuffer(100, (2,), np.float32, 1, windows_within_episode=False)
    fill(buffer, [7, 5, 9])
    batch = buffer.sample(64, 6, np.random.default_rng(0))
    assert batch["obs"].shape == (64, 6, 2) and batch["prev_action"].shape == (64, 6, 1)
    steps = batch["obs"][..., 0]
    np.testing.assert_array_equal(np.diff(steps, axis=1), 1)
    episode_starts = {0, 7, 12}
    np.testing.assert_array_equal(batch["is_first"], np.isin(steps, list(episode_starts)))
    np.testing.assert_array_equal(batch["is_first"], batch["obs"][..., 1] == 0)
    # no action or reward crosses into an episode start
    assert np.all(batch["prev_action"][batch["is_first"]] == 0)
    assert np.all(batch["reward"][batch["is_first"]] == 0)
    assert np.all(batch["reward"][~batch["is_first"]] == steps[~batch["is_first"]])


def test_every_valid_start_is_sampled_and_nothing_else():
    buffer = ReplayBuffer(100, (2,), np.float32, 1)
    fill(buffer, [10])
    starts = buffer.sample(5000, 4, np.random.default_rng(1))["obs"][:, 0, 0]
    assert set(starts.astype(int)) == set(range(7))


def test_windows_never_cross_an_episode_start_by_default():
    """CoRAL samples inside one episode; the 12 valid starts of 4-step windows in episodes of 7, 5
    and 9 steps are all drawn, about equally often, and no window holds an episode start after t = 0."""
    buffer = ReplayBuffer(100, (2,), np.float32, 1)
    fill(buffer, [7, 5, 9])
    batch = buffer.sample(12_000, 4, np.random.default_rng(0))
    assert not batch["is_first"][:, 1:].any()
    np.testing.assert_array_equal(np.diff(batch["obs"][..., 1], axis=1), 1)  # step within the episode
    starts, counts = np.unique(batch["obs"][:, 0, 0].astype(int), return_counts=True)
    np.testing.assert_array_equal(starts, [0, 1, 2, 3, 7, 8, 12, 13, 14, 15, 16, 17])
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected each (binomial std 30)


def test_windows_inside_rare_long_episodes_come_from_the_exact_fallback():
    """200 two-step episodes and one of 5: rejection rarely finds a 4-step window, the fallback must."""
    buffer = ReplayBuffer(1000, (2,), np.float32, 1)
    fill(buffer, [2] * 200 + [5])
    batch = buffer.sample(64, 4, np.random.default_rng(0))
    assert not batch["is_first"][:, 1:].any()
    assert set(batch["obs"][:, 0, 0].astype(int)) == {400, 401}


def test_no_episode_long_enough_is_a_clear_error():
    buffer = ReplayBuffer(100, (2,), np.float32, 1)
    fill(buffer, [3, 3, 3])
    with pytest.raises(ValueError, match="windows_within_episode = False"):
        buffer.sample(2, 4, np.random.default_rng(0))


def test_wraparound_never_crosses_the_write_position():
    buffer = ReplayBuffer(16, (2,), np.float32, 1, windows_within_episode=False)
    total = fill(buffer, [10, 10, 5])  # 25 steps into 16 slots: steps 9..24 remain
    batch = buffer.sample(2000, 5, np.random.default_rng(2))
    steps = batch["obs"][..., 0]
    np.testing.assert_array_equal(np.diff(steps, axis=1), 1)
    assert steps.min() == total - 16 and steps.max() == total - 1


def test_images_stay_uint8():
    buffer = ReplayBuffer(8, (3, 64, 64), np.uint8, 2)
    buffer.add(np.full((3, 64, 64), 255, np.uint8), None, 0.0, is_first=True)
    buffer.add(np.full((3, 64, 64), 7, np.uint8), np.ones(2), 1.0, is_first=False)
    batch = buffer.sample(1, 2, np.random.default_rng(0))
    assert batch["obs"].dtype == np.uint8 and batch["obs"][0, 1, 0, 0, 0] == 7
    assert buffer.data["obs"].nbytes == 8 * 3 * 64 * 64


def test_too_short_replay_is_a_clear_error():
    buffer = ReplayBuffer(8, (2,), np.float32, 1)
    fill(buffer, [3])
    with pytest.raises(ValueError, match="fewer than the sequence length"):
        buffer.sample(1, 4, np.random.default_rng(0))


@pytest.mark.parametrize("capacity", [16, 1000])
def test_incremental_save_and_load_restore_the_buffer(tmp_path, capacity):
    buffer = ReplayBuffer(capacity, (2,), np.float32, 1)
    fill(buffer, [10])
    buffer.save(tmp_path)
    fill(buffer, [12, 3])
    buffer.save(tmp_path)
    saved_total = buffer.total_added
    fill(buffer, [4])
    buffer.save(tmp_path)  # written after the checkpoint we restore: must be discarded
    restored = ReplayBuffer(capacity, (2,), np.float32, 1)
    restored.load(tmp_path, saved_total)
    reference = ReplayBuffer(capacity, (2,), np.float32, 1)
    fill(reference, [10, 12, 3])
    assert restored.total_added == reference.total_added == saved_total
    for key in reference.data:
        np.testing.assert_array_equal(restored.data[key], reference.data[key])
    assert all(int(p.stem.split("_")[1]) < saved_total for p in tmp_path.glob("chunk_*.npz"))


def test_save_prunes_chunks_that_left_the_ring(tmp_path):
    buffer = ReplayBuffer(8, (2,), np.float32, 1)
    for _ in range(5):
        fill(buffer, [4])
        buffer.save(tmp_path)
    ends = sorted(int(p.stem.split("_")[2]) for p in tmp_path.glob("chunk_*.npz"))
    assert ends == [12, 16, 20]  # 12: still needed by the previous save (steps 8..15)


def test_load_with_missing_chunks_fails_loudly(tmp_path):
    buffer = ReplayBuffer(100, (2,), np.float32, 1)
    fill(buffer, [10])
    buffer.save(tmp_path)
    fill(buffer, [10])
    buffer.save(tmp_path)
    next(tmp_path.glob("chunk_0_*.npz")).unlink()
    with pytest.raises(RuntimeError, match="cover steps"):
        ReplayBuffer(100, (2,), np.float32, 1).load(tmp_path, 20)
