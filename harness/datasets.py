"""Offline datasets in Minari's local format: the one module that writes and reads them.

A dataset directory is what Minari keeps under its datasets root for one dataset id:

    <dir>/data/metadata.json   Minari's metadata, plus our provenance under the key "harness"
    <dir>/data/main_data.hdf5  episodes: observations (T+1, ...), actions (T, A), rewards (T,),
                               terminations (T,), truncations (T,), infos/true_obs (T+1, O)

so `minari.MinariDataset(<dir>/data)` reads it, and with MINARI_DATASETS_PATH pointing at the
parent `minari.load_dataset(<dir name>)` does too when the name carries a version (`-v0`).
Observations are the ones the agent saw (noisy in the noisy-state suite); `true_obs` holds the
simulator's clean state where the data came from rollouts (the replay buffer does not keep it).

The "harness" metadata: kind (DATASET_KINDS), run (the source run directory), suite, task, seed,
method, obs_noise_std, action_noise_std, policy_env_step (the checkpoint's env step; None for
replay), return_mean / return_std over the dataset's episodes, true_obs (bool), episodes.

Errors are `DatasetError` with a one-line message. Writes are all-or-nothing: a temporary sibling
directory renamed into place.
"""
import dataclasses
import os
import pathlib
import re
import shutil

import numpy as np
import torch

DATASET_KINDS = ("replay", "expert", "medium")
META_KEY = "harness"
REQUIRED_META = ("kind", "suite", "task", "obs_noise_std", "action_noise_std")


class DatasetError(ValueError):
    """A dataset cannot be written or used as asked; the message is one line."""


@dataclasses.dataclass
class Episode:
    """One episode, Minari's layout: T + 1 observations around T transitions."""
    obs: np.ndarray  # (T + 1, *obs_shape)
    actions: np.ndarray  # (T, A) the policy's actions (before the env's action noise)
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    true_obs: np.ndarray | None = None  # (T + 1, O) clean simulator state
    seed: int | None = None

    @property
    def length(self):
        return len(self.actions)


@dataclasses.dataclass
class OfflineDataset:
    path: str
    episodes: list
    metadata: dict  # the "harness" block

    @property
    def kind(self):
        return self.metadata["kind"]

    @property
    def obs_shape(self):
        return tuple(self.episodes[0].obs.shape[1:])

    @property
    def action_dim(self):
        return int(self.episodes[0].actions.shape[1])

    @property
    def conditions(self):
        return {"obs_noise_std": self.metadata["obs_noise_std"],
                "action_noise_std": self.metadata["action_noise_std"]}

    def returns(self):
        return np.array([float(e.rewards.sum()) for e in self.episodes])


def returns_to_go(rewards):
    """R_t = sum_{t' >= t} r_t' (undiscounted), (T,) -> (T,) float64."""
    return np.cumsum(np.asarray(rewards, np.float64)[::-1])[::-1].copy()


def dataset_id(path):
    """Minari's id for a dataset directory: its name, with '-v0' added when it has no version."""
    name = pathlib.Path(path).name
    return name if re.fullmatch(r"[-_\w]+-v\d+", name) else f"{name}-v0"


def write_dataset(path, episodes, metadata):
    """Write `episodes` (list of Episode) with `metadata` (the "harness" block) to the new directory `path`."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    path = pathlib.Path(path)
    if path.exists():
        raise DatasetError(f"{path} exists; choose another --out or remove it")
    if not episodes:
        raise DatasetError("no episodes to write")
    if metadata.get("kind") not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {metadata.get('kind')!r}; known: {', '.join(DATASET_KINDS)}")
    first = episodes[0]
    obs_space = (gym.spaces.Box(0, 255, first.obs.shape[1:], np.uint8) if first.obs.dtype == np.uint8
                 else gym.spaces.Box(-np.inf, np.inf, first.obs.shape[1:], np.float32))
    action_space = gym.spaces.Box(-1.0, 1.0, first.actions.shape[1:], np.float32)
    has_true_obs = all(e.true_obs is not None for e in episodes)
    returns = np.array([float(e.rewards.sum()) for e in episodes])
    metadata = {**metadata, "true_obs": has_true_obs, "episodes": len(episodes),
                "return_mean": float(returns.mean()), "return_std": float(returns.std())}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.absolute().with_name(f".{path.name}.tmp{os.getpid()}")  # Minari sizes files by a path it joins
    try:
        tmp.mkdir()
        storage = MinariStorage.new(tmp / "data", observation_space=obs_space, action_space=action_space,
                                    data_format="hdf5", jpeg_encoding=False)
        storage.update_metadata({"dataset_id": dataset_id(path), "minari_version": minari.__version__,
                                 "algorithm_name": str(metadata.get("method") or metadata["kind"]),
                                 "description": f"{metadata['kind']} data of {metadata['task']} "
                                                f"({metadata['suite']}) collected by harness.collect",
                                 META_KEY: metadata})
        storage.update_episodes([EpisodeBuffer(
            id=i, seed=e.seed, observations=e.obs, actions=e.actions.astype(np.float32),
            rewards=np.asarray(e.rewards, np.float64), terminations=np.asarray(e.terminations, bool),
            truncations=np.asarray(e.truncations, bool),
            infos={"true_obs": e.true_obs} if has_true_obs else {}) for i, e in enumerate(episodes)])
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_dataset(path) -> OfflineDataset:
    """Load a dataset written by `write_dataset`; DatasetError when missing, malformed or of an unknown kind."""
    path = pathlib.Path(path)
    data = path / "data"
    if not (data / "metadata.json").is_file():
        raise DatasetError(f"no Minari dataset at {path} (missing {data / 'metadata.json'})")
    try:
        import minari
        dataset = minari.MinariDataset(data)
        metadata = dataset.storage.metadata.get(META_KEY)
        raw = list(dataset.iterate_episodes())
    except Exception as error:  # corrupt JSON or HDF5, missing fields: Minari raises many kinds
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"cannot read the dataset {path}: {message[:200]}") from None
    if not isinstance(metadata, dict) or any(key not in metadata for key in REQUIRED_META):
        raise DatasetError(f"dataset {path} lacks the '{META_KEY}' metadata ({', '.join(REQUIRED_META)}); "
                           "write it with python -m harness.collect")
    if metadata["kind"] not in DATASET_KINDS:
        raise DatasetError(f"dataset {path} has an unknown kind {metadata['kind']!r}; "
                           f"known: {', '.join(DATASET_KINDS)}")
    if not raw:
        raise DatasetError(f"dataset {path} holds no episodes")
    episodes = []
    for e in raw:
        obs, actions = np.asarray(e.observations), np.asarray(e.actions, np.float32)
        if actions.ndim != 2 or len(obs) != len(actions) + 1 or len(e.rewards) != len(actions):
            raise DatasetError(f"dataset {path}: episode {e.id} has {len(obs)} observations, "
                               f"{len(actions)} actions and {len(e.rewards)} rewards")
        true_obs = e.infos.get("true_obs") if isinstance(e.infos, dict) else None
        episodes.append(Episode(obs, actions, np.asarray(e.rewards, np.float64),
                                np.asarray(e.terminations, bool), np.asarray(e.truncations, bool),
                                None if true_obs is None else np.asarray(true_obs), e.id))
    if len({(ep.obs.shape[1:], ep.actions.shape[1]) for ep in episodes}) != 1:
        raise DatasetError(f"dataset {path}: episodes differ in observation or action shape")
    return OfflineDataset(str(path), episodes, metadata)


class WindowSampler:
    """Uniform windows of K consecutive steps inside one episode, as (B, K) numpy arrays.

    Every start s with s + K <= T of every episode is equally likely (so longer episodes are drawn
    more often, as in the DT code's length-weighted sampling). Unlike that code, windows never run
    past an episode's end, so no padding or attention mask is needed.
    """

    def __init__(self, dataset: OfflineDataset, length):
        short = [e.length for e in dataset.episodes if e.length < length]
        if len(short) == len(dataset.episodes):
            raise DatasetError(f"every episode of {dataset.path} is shorter than the context length {length}")
        episodes = [e for e in dataset.episodes if e.length >= length]
        self.length = length
        self.obs = np.concatenate([e.obs[:-1] for e in episodes]).astype(np.float32)
        self.actions = np.concatenate([e.actions for e in episodes]).astype(np.float32)
        self.returns_to_go = np.concatenate([returns_to_go(e.rewards) for e in episodes]).astype(np.float32)
        self.timesteps = np.concatenate([np.arange(e.length) for e in episodes])
        offsets = np.cumsum([0] + [e.length for e in episodes])
        self.starts = np.concatenate([offsets[i] + np.arange(e.length - length + 1)
                                      for i, e in enumerate(episodes)])

    def sample(self, batch_size, rng: np.random.Generator):
        return self.windows(rng.choice(self.starts, size=batch_size))

    def windows(self, starts):
        """The windows that begin at the flat indices `starts` (B,), as (B, K, ...) arrays."""
        index = np.asarray(starts)[:, None] + np.arange(self.length)
        return {"returns_to_go": self.returns_to_go[index], "obs": self.obs[index],
                "actions": self.actions[index], "timesteps": self.timesteps[index]}


class DeviceWindowSampler:
    """`WindowSampler`'s arrays held on a torch device and sampled there.

    A training step then copies nothing from the host: a blocking host-to-device copy of each
    sampled field would make the step wait for the GPU to finish the work queued before it. Starts
    are drawn by torch's generator of that device (captured in checkpoints by harness.rng_state).
    `windows` is `WindowSampler.windows` on tensors (tested equal).
    """

    def __init__(self, sampler: WindowSampler, device):
        self.length = sampler.length
        self.fields = {name: torch.as_tensor(getattr(sampler, name), device=device)
                       for name in ("returns_to_go", "obs", "actions", "timesteps")}
        self.starts = torch.as_tensor(sampler.starts, device=device)
        self._offsets = torch.arange(sampler.length, device=device)

    def sample(self, batch_size):
        pick = torch.randint(len(self.starts), (batch_size,), device=self.starts.device)
        return self.windows(self.starts[pick])

    def windows(self, starts):
        index = starts[:, None] + self._offsets
        return {name: values[index] for name, values in self.fields.items()}
