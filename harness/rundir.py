"""The files of one run directory (contract: results/README.md), each written so a crash corrupts nothing.

- run.json and checkpoint/state.pt are replaced atomically (write a temporary file, then os.replace);
- metrics.jsonl is appended one whole line at a time and flushed; a checkpoint records its byte
  length so that a resumed run first truncates lines written after that checkpoint.
"""
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess

import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path, text):
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions():
    versions = {"python": platform.python_version()}
    for name in ("torch", "numpy", "mujoco", "dm-control", "gin-config", "mamba-ssm"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.gin"
CHECKPOINT_DIR = "checkpoint"

RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"
STATUSES = (RUNNING, DONE, FAILED, INTERRUPTED)


class RunDirectory:
    """Paths and writers of `<run_dir>/{run.json, metrics.jsonl, config.gin, checkpoint/}`."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.run_json = self.path / RUN_FILE
        self.metrics = self.path / METRICS_FILE
        self.config = self.path / CONFIG_FILE
        self.checkpoint = self.path / CHECKPOINT_DIR
        self.state_file = self.checkpoint / "state.pt"
        self.replay_dir = self.checkpoint / "replay"

    def exists(self):
        return self.path.exists() and any(self.path.iterdir())

    def read_info(self):
        return json.loads(self.run_json.read_text()) if self.run_json.exists() else None

    def status(self):
        """run.json's status, or None when there is no readable run.json."""
        try:
            info = self.read_info()
        except (OSError, ValueError):
            return None
        return info.get("status") if isinstance(info, dict) else None

    def write_info(self, info):
        self.path.mkdir(parents=True, exist_ok=True)
        info = dict(info, updated_at=now_iso())
        atomic_write_text(self.run_json, json.dumps(info, indent=2, sort_keys=True) + "\n")
        return info

    def append_metrics(self, record):
        line = json.dumps(record, sort_keys=True, allow_nan=True)
        with open(self.metrics, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics_size(self):
        return self.metrics.stat().st_size if self.metrics.exists() else 0

    def truncate_metrics(self, size):
        """Drop whatever was appended after a checkpoint taken when the file had `size` bytes."""
        if self.metrics.exists() and self.metrics.stat().st_size > size:
            with open(self.metrics, "r+b") as f:
                f.truncate(size)

    def save_state(self, state):
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name("state.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_file)

    def load_state(self, map_location):
        if not self.state_file.exists():
            return None
        return torch.load(self.state_file, map_location=map_location, weights_only=False)
