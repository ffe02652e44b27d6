"""Where a run's metric lines go, behind one interface: metrics.jsonl always, TensorBoard and
Weights & Biases on request.

    logger = open_loggers(run_dir, tensorboard=True, wandb=WandbOptions("my-project"))
    logger.write({"kind": "eval", "env_step": 3000, "return_mean": 168.8, ...})   # one metrics line
    logger.close()

metrics.jsonl (written through harness.rundir, the run directory's one owner) is the record that
aggregation and resuming read; the other loggers are mirrors of its numbers (`scalars(record)`),
keyed by env step. The W&B run gets the run's identity, provenance and operative gin bindings as its
config, lives in <run>/wandb/ and keeps one id per run directory, so a resumed run continues it;
`WANDB_MODE=offline` keeps it on disk (`wandb sync` uploads it later).
"""
import abc
import dataclasses
import hashlib
import importlib.util
import math
import os

from harness import rundir
from harness.config import ConfigError


class Logger(abc.ABC):
    @abc.abstractmethod
    def write(self, record: dict) -> None:
        """One metrics line: {"kind": "eval" | "train", "env_step": int, ...} (results/README.md)."""

    def close(self) -> None:
        pass


def scalars(record: dict) -> dict:
    """The numbers of a metrics line the mirrors plot: eval/return(_std), belief/*, train/*, perf/*."""
    if record["kind"] == "eval":
        values = {"eval/return": record["return_mean"], "eval/return_std": record["return_std"]}
        values.update({k: v for k, v in record.items() if k.startswith("belief/")})
    else:
        values = {k: v for k, v in record.items() if k.startswith("train/")}
        values.update({f"perf/{k}": record.get(k) for k in ("env_steps_per_s", "interval_env_steps_per_s")})
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


class JsonlLogger(Logger):
    def __init__(self, run_dir: rundir.RunDirectory):
        self.run_dir = run_dir

    def write(self, record):
        self.run_dir.append_metrics(record)


class TensorBoardLogger(Logger):
    def __init__(self, run_dir: rundir.RunDirectory):
        from harness.tensorboard import TensorBoardWriter
        self._writer = TensorBoardWriter(run_dir.tensorboard)

    def write(self, record):
        self._writer.write(record["env_step"], scalars(record))

    def close(self):
        self._writer.close()


@dataclasses.dataclass(frozen=True)
class WandbOptions:
    project: str = "ssm-bench"
    entity: str | None = None


def check_wandb_available():
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("--wandb needs the wandb package: pip install 'ssm-bench[wandb]' (or pip install wandb)")


class WandbLogger(Logger):
    """A W&B run whose config is the run's identity, provenance and operative gin bindings."""

    def __init__(self, run_dir: rundir.RunDirectory, options: WandbOptions):
        check_wandb_available()
        # wandb takes our `agents` package for an LLM-agents library and advertises its tracer
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        import wandb
        from harness.run_identity import config_bindings
        info = run_dir.read_info() or {}
        identity = rundir.identity(info)
        config = {**identity, **{k: info.get(k) for k in ("git_commit", "versions", "device", "bindings")},
                  "run_dir": str(run_dir.path), "gin": config_bindings(run_dir.config.read_text())
                  if run_dir.config.is_file() else {}}
        label = identity["method"] + (f"+{identity['variant']}" if identity["variant"] else "")
        run_dir.wandb.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=options.project, entity=options.entity, dir=str(run_dir.path), id=self.run_id(run_dir, info),
            resume="allow", config=config, group=identity["experiment"], job_type=identity["suite"],
            name=f"{label}/{identity['task']}/ctx{identity['context_length']}/seed{identity['seed']}",
            tags=[identity["method"], identity["suite"], identity["task"]],
            settings=wandb.Settings(console="off", silent=True))
        self._run.define_metric("env_step")
        self._run.define_metric("*", step_metric="env_step")  # resumed runs rewrite steps: no monotonic _step

    @staticmethod
    def run_id(run_dir, info) -> str:
        """One id per run directory and start (run.json's started_at survives resumes)."""
        key = f"{run_dir.path.resolve()}|{info.get('started_at', '')}"
        return hashlib.sha1(key.encode()).hexdigest()[:16]

    def write(self, record):
        self._run.log({"env_step": record["env_step"], **scalars(record)})

    def close(self):
        self._run.finish()


class Loggers(Logger):
    """Every line to each logger, metrics.jsonl first."""

    def __init__(self, loggers):
        self.loggers = list(loggers)

    def write(self, record):
        for logger in self.loggers:
            logger.write(record)

    def close(self):
        for logger in reversed(self.loggers):
            logger.close()


def open_loggers(run_dir, tensorboard=False, wandb: WandbOptions | None = None) -> Loggers:
    """metrics.jsonl plus the mirrors asked for (call once the run directory and run.json exist)."""
    loggers = [JsonlLogger(run_dir)]
    if tensorboard:
        loggers.append(TensorBoardLogger(run_dir))
    if wandb is not None:
        loggers.append(WandbLogger(run_dir, wandb))
    return Loggers(loggers)


def check_available(tensorboard=False, wandb: WandbOptions | None = None):
    """Raise ConfigError, naming the package, when a requested mirror cannot be opened."""
    if tensorboard:
        from harness.tensorboard import TensorBoardWriter
        TensorBoardWriter.check_available()
    if wandb is not None:
        check_wandb_available()
