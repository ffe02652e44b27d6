"""The run-directory contract (results/README.md): the one module that reads and writes it.

    <run_dir>/run.json        identity, status and provenance, replaced atomically
              metrics.jsonl   one JSON object per line, appended whole and flushed
              config.gin      the operative gin config
              checkpoint/     state.pt (replaced atomically), replay chunks and the agent weights
                              kept at chosen steps (agent_step<N>.pt)
              videos/         step<N>.mp4: the first eval episode of the evaluation at env step N
              evaluations/    <stamp>.json (and .mp4) of `python -m harness.evaluate`
              wandb/          the Weights & Biases run (--wandb)
              .lock           held (flock) by the one process that writes the directory

Every write is crash-safe: a temporary file, fsync, then os.replace; a killed write leaves only a
`*.tmp` file, which the next process removes. A checkpoint records the byte length metrics.jsonl
had when it was taken, so a resumed run first truncates lines written after it, and refuses to
resume when the file is shorter than that (it was truncated or replaced by hand).

Non-finite numbers are written as JSON null and their keys listed under "nonfinite": a metrics
line is always strict JSON.
"""
import datetime
import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.gin"
CHECKPOINT_DIR = "checkpoint"
LOCK_FILE = ".lock"
TENSORBOARD_DIR = "tb"
WANDB_DIR = "wandb"
VIDEOS_DIR = "videos"
EVALUATIONS_DIR = "evaluations"
KEPT_AGENT_PREFIX = "agent_step"  # checkpoint/agent_step<N>.pt
# Everything a run writes into its directory; --overwrite removes these and nothing else.
RUN_ENTRIES = (RUN_FILE, METRICS_FILE, CONFIG_FILE, CHECKPOINT_DIR, TENSORBOARD_DIR, WANDB_DIR, VIDEOS_DIR,
               EVALUATIONS_DIR)

RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"
STATUSES = (RUNNING, DONE, FAILED, INTERRUPTED)

# The identity of a run: what it compares. Runs are grouped, resumed and deduplicated by these.
IDENTITY_FIELDS = {"experiment": str, "method": str, "suite": str, "task": str, "seed": int,
                   "context_length": int}
# Identity fields added later; records written before them read as these defaults.
CONDITION_DEFAULTS = {"variant": "", "world_model": None, "obs_noise_std": None,
                      "action_noise_std": None, "dataset_kind": None}  # dataset_kind: offline runs only


class RunDirectoryError(ValueError):
    """The directory cannot be used as asked; the message is one line for the user."""


def recorded_seconds(value) -> float | None:
    """A duration read back from a record (run.json's `gpu_seconds`, sweep.json's `gpu_seconds_held`)
    as a float, None unless it is a finite number >= 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path, text):
    """Replace `path` by `text` all at once; on failure no temporary file is left behind."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


SOURCE_DIRS = ("agents", "envs", "harness", "models", "gin")  # the code and configuration a run executes


def source_digest(root=REPO_ROOT):
    """First 16 hex digits of a sha256 over every .py and .gin file under SOURCE_DIRS (relative path
    and bytes, in sorted order): the code a run executed, recorded beside `git_commit`, which reads
    the .git directory and so names the wrong commit when a working tree is copied with a stale one."""
    digest = hashlib.sha256()
    root = pathlib.Path(root)
    files = sorted(p for d in SOURCE_DIRS for p in (root / d).rglob("*") if p.suffix in (".py", ".gin") and p.is_file())
    for path in files:
        relative = path.relative_to(root).as_posix().encode()
        digest.update(len(relative).to_bytes(4, "little") + relative)
        content = path.read_bytes()
        digest.update(len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()[:16]


def package_versions():
    versions = {"python": platform.python_version()}
    for name in ("torch", "numpy", "mujoco", "dm-control", "gin-config", "mamba-ssm"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def json_safe(record):
    """(record with non-finite floats replaced by None, sorted list of the keys replaced)."""
    clean, bad = {}, []
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key] = None
            bad.append(key)
        elif isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            clean[key] = [v if not isinstance(v, float) or math.isfinite(v) else None for v in value]
            bad.append(key)
        else:
            clean[key] = value
    return clean, sorted(bad)


def validate_info(info):
    """(run.json dict with the condition defaults filled in, None) or (None, one-line reason)."""
    if not isinstance(info, dict):
        return None, f"{RUN_FILE} is not a JSON object"
    for field, kind in IDENTITY_FIELDS.items():
        value = info.get(field)
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            return None, f"{RUN_FILE}: field '{field}' missing or not a {kind.__name__}"
    if info.get("status") not in STATUSES:
        return None, f"{RUN_FILE}: status {info.get('status')!r} is not one of {', '.join(STATUSES)}"
    return {**CONDITION_DEFAULTS, **info}, None


def identity(info) -> dict:
    """The fields of run.json that say what was run (not how far, where or when)."""
    return {field: info.get(field, CONDITION_DEFAULTS.get(field))
            for field in (*IDENTITY_FIELDS, *CONDITION_DEFAULTS)}


class RunDirectory:
    """Paths, readers and writers of one run directory (module docstring)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.run_json = self.path / RUN_FILE
        self.metrics = self.path / METRICS_FILE
        self.config = self.path / CONFIG_FILE
        self.checkpoint = self.path / CHECKPOINT_DIR
        self.state_file = self.checkpoint / "state.pt"
        self.replay_dir = self.checkpoint / "replay"
        self.tensorboard = self.path / TENSORBOARD_DIR
        self.wandb = self.path / WANDB_DIR
        self.videos = self.path / VIDEOS_DIR
        self.evaluations = self.path / EVALUATIONS_DIR
        self._lock = None
        self._gpu_clock = None  # (seconds recorded by earlier processes, monotonic start, on a GPU)

    # -- what is there -------------------------------------------------------------------------
    def entries(self):
        """Names in the directory other than the lock file (empty when it does not exist)."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK_FILE)

    def exists(self):
        return bool(self.entries())

    def is_run(self):
        return self.run_json.is_file()

    def read_info(self):
        """run.json as a dict, None when absent; raises RunDirectoryError when unreadable or corrupt."""
        if not self.run_json.exists():
            return None
        try:
            info = json.loads(self.run_json.read_text())
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"cannot read {self.run_json}: {str(error).splitlines()[0]}") from error
        if not isinstance(info, dict):
            raise RunDirectoryError(f"cannot read {self.run_json}: not a JSON object")
        return info

    def status(self):
        """run.json's status, or None when there is no readable run.json."""
        try:
            info = self.read_info()
        except RunDirectoryError:
            return None
        return info.get("status") if info else None

    # -- ownership -------------------------------------------------------------------------------
    def lock(self):
        """Hold the directory for this process (released at exit); RunDirectoryError if another holds it."""
        if self._lock is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_FILE, "a")
        except OSError as error:
            raise RunDirectoryError(f"cannot create the run directory {self.path}: "
                                    f"{error.strerror or error}") from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RunDirectoryError(f"another process is writing {self.path} (its {LOCK_FILE} is held)") from None
        self._lock = handle

    def unlock(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def remove_run_files(self):
        """--overwrite: delete what a run wrote, nothing else; refuse a directory that is no run."""
        if not self.is_run():
            raise RunDirectoryError(f"--overwrite refused: {self.path} is not a run directory "
                                    f"(it has no {RUN_FILE}); remove it yourself or choose another --out")
        for name in RUN_ENTRIES:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self):
        """`*.tmp` files of writes that a killed process left half done (call under the lock)."""
        for directory in (self.path, self.checkpoint, self.replay_dir, self.videos, self.evaluations):
            if directory.is_dir():
                for tmp in directory.glob("*.tmp"):
                    tmp.unlink(missing_ok=True)

    def lost_checkpoint(self):
        """run.json records a checkpoint that is not here (records copied without their checkpoint/,
        for example from another machine): the run cannot continue, only start again."""
        try:
            info = self.read_info()
        except RunDirectoryError:
            return False
        return bool(info) and info.get("status") != DONE and info.get("checkpoint_env_step") is not None \
            and not self.state_file.exists()

    # -- run.json ----------------------------------------------------------------------------------
    def count_gpu_time(self, recorded_s, since, on_gpu):
        """From now on every write of run.json records `gpu_seconds`: `recorded_s` (what earlier
        processes recorded) plus, when `on_gpu`, this process's time.monotonic() seconds since `since`.
        Written at every checkpoint and at the end, so a process killed by SIGKILL loses only the time
        since its last checkpoint."""
        self._gpu_clock = (recorded_seconds(recorded_s) or 0.0, float(since), bool(on_gpu))

    def write_info(self, info):
        self.path.mkdir(parents=True, exist_ok=True)
        info = dict(info, updated_at=now_iso())
        if self._gpu_clock is not None:
            recorded, since, on_gpu = self._gpu_clock
            info["gpu_seconds"] = round(recorded + (time.monotonic() - since if on_gpu else 0.0), 3)
        atomic_write_text(self.run_json, json.dumps(info, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return info

    def update_info(self, **fields):
        """Rewrite run.json with `fields` changed (the rest as on disk)."""
        return self.write_info(dict(self.read_info() or {}, **fields))

    # -- metrics.jsonl -----------------------------------------------------------------------------
    def append_metrics(self, record):
        record, nonfinite = json_safe(record)
        if nonfinite:
            record["nonfinite"] = nonfinite
        line = json.dumps(record, sort_keys=True, allow_nan=False)
        with open(self.metrics, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics_size(self):
        return self.metrics.stat().st_size if self.metrics.exists() else 0

    def check_metrics_reach(self, size):
        """Refuse to resume when metrics.jsonl no longer holds the `size` bytes a checkpoint recorded."""
        have = self.metrics_size()
        if have < size:
            raise RunDirectoryError(
                f"cannot resume {self.path}: {METRICS_FILE} has {have} bytes but the checkpoint "
                f"recorded {size} (the file was truncated or replaced); --overwrite starts again")
        if size:
            with open(self.metrics, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    raise RunDirectoryError(
                        f"cannot resume {self.path}: {METRICS_FILE} was changed before byte {size}, "
                        "where the checkpoint's last line ended; --overwrite starts again")

    def truncate_metrics(self, size):
        """Drop whatever was appended after a checkpoint taken when the file had `size` bytes."""
        if self.metrics.exists() and self.metrics.stat().st_size > size:
            with open(self.metrics, "r+b") as f:
                f.truncate(size)

    # -- checkpoint ----------------------------------------------------------------------------------
    def save_state(self, state):
        import torch
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name("state.pt.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.state_file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_state(self, map_location):
        """The checkpoint, or None when none was taken; RunDirectoryError when it cannot be read."""
        import torch
        if not self.state_file.exists():
            return None
        try:
            return torch.load(self.state_file, map_location=map_location, weights_only=False)
        except Exception as error:  # truncated zip, pickle errors, ...
            raise RunDirectoryError(f"cannot read the checkpoint {self.state_file} "
                                    f"({type(error).__name__}); --overwrite starts the run again") from error

    def kept_agent_file(self, env_step):
        return self.checkpoint / f"{KEPT_AGENT_PREFIX}{env_step}.pt"

    def save_kept_agent(self, env_step, agent_state):
        """Keep the agent's weights of the checkpoint at `env_step` (Schedule.keep_checkpoints_at)."""
        import torch
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        target = self.kept_agent_file(env_step)
        tmp = target.with_name(target.name + ".tmp")
        try:
            torch.save({"env_step": env_step, "agent": agent_state}, tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def kept_agent_steps(self):
        """Env steps of the kept agent weights, ascending."""
        steps = []
        for path in self.checkpoint.glob(f"{KEPT_AGENT_PREFIX}*.pt") if self.checkpoint.is_dir() else ():
            number = path.stem[len(KEPT_AGENT_PREFIX):]
            if number.isdigit():
                steps.append(int(number))
        return sorted(steps)

    def remove_kept_agents_after(self, env_step):
        """A resumed run drops weights kept after the checkpoint it continues from: they belong to
        the interrupted future, and the run keeps them again at its own steps."""
        for step in self.kept_agent_steps():
            if step > env_step:
                self.kept_agent_file(step).unlink(missing_ok=True)

    def load_agent(self, env_step, map_location):
        """(env step, agent state dict) of the latest checkpoint (env_step None) or of the weights
        kept at `env_step`; RunDirectoryError, naming what there is, when there is no such checkpoint."""
        import torch
        state = self.load_state(map_location)
        latest = None if state is None else state["counters"]["env_step"]
        if env_step is None or env_step == latest:
            if state is None:
                raise RunDirectoryError(f"{self.path} has no checkpoint ({self.state_file} is missing)")
            return latest, state["agent"]
        if env_step not in self.kept_agent_steps():
            have = [str(s) for s in self.kept_agent_steps()] + ([f"{latest} (latest)"] if latest is not None else [])
            raise RunDirectoryError(f"--checkpoint {env_step}: {self.path} has no checkpoint at env step {env_step} "
                                    f"(it has: {', '.join(have) or 'none'}; Schedule.keep_checkpoints_at keeps more)")
        path = self.kept_agent_file(env_step)
        try:
            return env_step, torch.load(path, map_location=map_location, weights_only=False)["agent"]
        except Exception as error:
            raise RunDirectoryError(f"cannot read the checkpoint {path} ({type(error).__name__})") from error

    # -- videos and evaluations -----------------------------------------------------------------------
    def video_file(self, env_step):
        """videos/step<N>.mp4, zero-padded so that names sort by env step."""
        return self.videos / f"step{env_step:09d}.mp4"

    def new_evaluation_stamp(self, env_step):
        """A name for one `harness.evaluate` result: '<UTC time>_step<N>', unique in evaluations/."""
        base = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"_step{env_step}"
        stamp, n = base, 1
        while (self.evaluations / f"{stamp}.json").exists():
            n += 1
            stamp = f"{base}_{n}"
        return stamp

    def evaluation_file(self, stamp, suffix=".json"):
        return self.evaluations / f"{stamp}{suffix}"

    def write_evaluation(self, stamp, record):
        self.evaluations.mkdir(parents=True, exist_ok=True)
        record, nonfinite = json_safe(record)
        if nonfinite:
            record["nonfinite"] = nonfinite
        path = self.evaluation_file(stamp)
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return path
