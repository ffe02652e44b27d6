"""Sequence replay: agent steps stored back to back in one ring, episodes one after another.

Each slot holds one agent step with the conventions of `models/world_model.py`:

    obs[i]          observation (uint8 images stay uint8: 12 KiB per 64x64 frame)
    prev_action[i]  action that led to obs[i] (zero where is_first)
    reward[i]       reward received on arriving at obs[i] (zero where is_first)
    is_first[i]     obs[i] is the first observation of an episode
    is_terminal[i]  obs[i] is terminal
    obs_valid[i]    obs[i] was observed (False: withheld, the obs is zeros); stored only when the
                    environment provides it (the missing_state suite), from the first `add` that
                    passes one on; batches then carry it as (B, T) bool

There is no separate next-observation copy: the successor of slot i is slot i + 1. By default a
sampled window lies inside one episode, as in CoRAL's replay buffer (no `is_first` after its first
step); with `windows_within_episode = False` a window may run into the next episode and simply
carries `is_first = True` where that episode starts.
A million environment steps of 64x64 images at action repeat 2 is 500k slots, about 6 GiB.

Checkpoints are incremental: `save(directory)` writes only the steps added since the previous save,
as `chunk_<start>_<end>.npz` in the global numbering of added steps, each written atomically.
"""
import os
import pathlib
import re

import gin
import numpy as np

FIELDS = ("obs", "prev_action", "reward", "is_first", "is_terminal")
OPTIONAL_FIELDS = ("obs_valid",)
_CHUNK = re.compile(r"chunk_(\d+)_(\d+)\.npz$")


@gin.configurable
class ReplayBuffer:
    """Ring buffer of `capacity` agent steps; `sample` returns (B, T, ...) numpy arrays."""

    # Rejection rounds before `sample` falls back to listing every valid start (exact, O(size)).
    _REJECTION_ROUNDS = 20

    def __init__(self, capacity, obs_shape, obs_dtype, action_dim, windows_within_episode=True):
        self.capacity = int(capacity)
        self.windows_within_episode = bool(windows_within_episode)
        self.data = {
            "obs": np.zeros((self.capacity, *obs_shape), dtype=obs_dtype),
            "prev_action": np.zeros((self.capacity, action_dim), dtype=np.float32),
            "reward": np.zeros((self.capacity,), dtype=np.float32),
            "is_first": np.zeros((self.capacity,), dtype=bool),
            "is_terminal": np.zeros((self.capacity,), dtype=bool),
        }
        self.total_added = 0  # steps ever added; the write position is total_added % capacity
        self._saved_until = 0

    def __len__(self):
        return min(self.total_added, self.capacity)

    def add(self, obs, prev_action, reward, is_first, is_terminal=False, obs_valid=None):
        i = self.total_added % self.capacity
        self.data["obs"][i] = obs
        self.data["prev_action"][i] = 0.0 if is_first else prev_action
        self.data["reward"][i] = 0.0 if is_first else reward
        self.data["is_first"][i] = is_first
        self.data["is_terminal"][i] = is_terminal
        if obs_valid is not None or "obs_valid" in self.data:
            self._obs_valid()[i] = True if obs_valid is None else obs_valid
        self.total_added += 1

    def _obs_valid(self):
        """The obs_valid column, created on first use with every step so far valid."""
        if "obs_valid" not in self.data:
            self.data["obs_valid"] = np.ones((self.capacity,), dtype=bool)
        return self.data["obs_valid"]

    def valid_observations(self):
        """The stored observations (N, *obs_shape) in slot order, without the withheld ones."""
        obs = self.data["obs"][:len(self)]
        return obs[self.data["obs_valid"][:len(self)]] if "obs_valid" in self.data else obs

    def sample(self, batch_size, length, rng: np.random.Generator):
        """`batch_size` windows of `length` consecutive stored steps, uniformly over valid starts.

        A window never wraps across the write position, so it is always a contiguous piece of the
        collected stream. With `windows_within_episode` it also lies inside one episode: starts are
        drawn uniformly and redrawn where an episode begins after the window's first step, which
        is uniform over the valid starts; after a few rounds the remaining ones are drawn from the
        explicit list of valid starts, and a clear error says when there is none (every episode
        stored is shorter than `length`).
        """
        size = len(self)
        if size < length:
            raise ValueError(f"replay holds {size} steps, fewer than the sequence length {length}")
        oldest = self.total_added - size
        starts = oldest + rng.integers(0, size - length + 1, size=batch_size)
        if self.windows_within_episode and length > 1:
            for _ in range(self._REJECTION_ROUNDS):
                bad = self._crosses_episode(starts, length)
                if not bad.any():
                    break
                starts[bad] = oldest + rng.integers(0, size - length + 1, size=int(bad.sum()))
            bad = self._crosses_episode(starts, length)
            if bad.any():
                starts[bad] = rng.choice(self._valid_starts(length), size=int(bad.sum()))
        index = (starts[:, None] + np.arange(length)[None, :]) % self.capacity
        return {key: value[index] for key, value in self.data.items()}

    def _crosses_episode(self, starts, length):
        """(B,) bool: an episode starts after the first step of the window at `starts`."""
        index = (starts[:, None] + np.arange(1, length)[None, :]) % self.capacity
        return self.data["is_first"][index].any(axis=1)

    def _valid_starts(self, length):
        """Every start (in the global numbering of added steps) of a window inside one episode."""
        size = len(self)
        oldest = self.total_added - size
        is_first = self.data["is_first"][np.arange(oldest, self.total_added) % self.capacity]
        count = np.concatenate([[0], np.cumsum(is_first)])  # count[i] = episode starts before stored step i
        starts = np.arange(size - length + 1)
        valid = count[starts + length] - count[starts + 1] == 0
        if not valid.any():
            raise ValueError(f"no stored episode holds a window of {length} steps; sample across episodes "
                             "with ReplayBuffer.windows_within_episode = False")
        return oldest + starts[valid]

    # -- checkpointing -----------------------------------------------------------------------
    def save(self, directory):
        """Write the steps added since the last save; prune chunks that fell out of the ring.

        Pruning keeps what the previous save still needs, because its checkpoint stays the one to
        resume from until the caller's next state file is in place.
        """
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        previous = self._saved_until
        start = max(previous, self.total_added - self.capacity)
        if self.total_added > start:
            index = np.arange(start, self.total_added) % self.capacity
            path = directory / f"chunk_{start}_{self.total_added}.npz"
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                np.savez(f, **{key: value[index] for key, value in self.data.items()})
            os.replace(tmp, path)
        self._saved_until = self.total_added
        for path, (_, end) in _chunks(directory):
            if end <= previous - self.capacity:
                path.unlink()

    def load(self, directory, total_added):
        """Restore the state a `save` left when `total_added` steps had been added.

        Chunks written after that save (by a run killed before it checkpointed) are deleted.
        """
        directory = pathlib.Path(directory)
        oldest = max(0, total_added - self.capacity)
        covered = oldest
        for path, (start, end) in _chunks(directory):
            if start >= total_added:
                path.unlink()
                continue
            if end <= oldest:
                continue
            with np.load(path) as chunk:
                steps = np.arange(start, min(end, total_added))
                keep = steps >= oldest
                if "obs_valid" in chunk.files:
                    self._obs_valid()
                for key in FIELDS + tuple(k for k in OPTIONAL_FIELDS if k in self.data):
                    values = chunk[key] if key in chunk.files else np.ones(end - start, bool)  # older chunks: all valid
                    self.data[key][steps[keep] % self.capacity] = values[: len(steps)][keep]
            covered = max(covered, min(end, total_added)) if start <= covered else covered
        if covered != total_added:
            raise RuntimeError(f"replay chunks in {directory} cover steps up to {covered}, "
                               f"the checkpoint needs {total_added}")
        self.total_added = self._saved_until = total_added


def _chunks(directory):
    found = []
    for path in pathlib.Path(directory).glob("chunk_*.npz"):
        match = _CHUNK.search(path.name)
        if match:
            found.append((path, (int(match.group(1)), int(match.group(2)))))
    return sorted(found, key=lambda item: item[1])
