"""What a sweep runs: the gin-configurable `Sweep` and the grid of runs it expands to.

A sweep file imports this module and binds `Sweep.*` (see gin/sweeps/tiny.gin). The grid is

    methods x tasks x seeds x context_lengths x grid[binding_1] x grid[binding_2] x ...

(a method listed in `Sweep.context_lengths_by_method` runs its own context lengths instead), where
`Sweep.grid = {'make_env.obs_noise_std': [0.0, 0.3]}` adds an axis over any gin binding. Each cell
is an ordinary `python -m harness.run --gin <method> --gin <overlays...> --bind ...`; a grid axis
adds its binding and `Experiment.variant = 'obs_noise_std=0.3'` (the parameter name after the
last '.', joined with ',' to any variant the method's files or `Sweep.bindings` set), so every grid
value has its own run directory and leaderboard row.
"""
import collections
import itertools
import pathlib
import re

import gin

from harness import config, rundir
from harness.run_identity import config_mismatch

# A grid value becomes part of a directory name: the characters of `Experiment.variant`.
_PATH_SAFE = re.compile(r"[A-Za-z0-9_.=,+-]+")
_BINDING_KEY = re.compile(r"[A-Za-z_][\w./]*\.[A-Za-z_]\w*")  # [scope/]configurable.parameter
# Experiment fields that are axes of their own (or the label itself): a grid over them would mislabel runs.
_OWN_AXES = {"name": "Sweep.name", "task": "Sweep.tasks", "seed": "Sweep.seeds",
             "context_length": "Sweep.context_lengths", "variant": "Sweep.bindings"}


@gin.configurable
class Sweep:
    """A grid of runs.

    Args:
      name: sweep name; also bound as `Experiment.name`, so runs land in `<results_dir>/<name>/...`.
      methods: experiment gin files, one per method (each binds Experiment.world_model and suite).
      tasks: DeepMind Control tasks, e.g. ['cartpole_swingup'].
      seeds: integers.
      context_lengths: training sequence lengths T.
      context_lengths_by_method: {method file: [T, ...]}: the context lengths of that method, in place
        of `context_lengths` (e.g. lengths only one model can afford).
      grid: {gin binding: [values]}, e.g. {'make_env.obs_noise_std': [0.0, 0.3]}: one more axis per
        binding. Values are Python literals whose text is path-safe (letters, digits, _ . = , + -).
      overlays: gin files applied after each method's file (e.g. 'gin/quick.gin').
      bindings: extra gin bindings for every run, applied after the grid's own.
      results_dir: root of the run directories.
      retries: extra attempts for a run that fails (exit status 1 or killed).
      num_cpus, num_gpus: resources of one run (Ray reserves them; num_cpus also sets
        OMP_NUM_THREADS for the run).
    """

    def __init__(self, name=gin.REQUIRED, methods=gin.REQUIRED, tasks=gin.REQUIRED, seeds=(0,),
                 context_lengths=(32,), grid=None, overlays=(), bindings=(), results_dir="results",
                 retries=1, num_cpus=1, num_gpus=0, context_lengths_by_method=None):
        self.name, self.results_dir = str(name), pathlib.Path(results_dir)
        self.methods, self.tasks = list(methods), list(tasks)
        self.seeds, self.context_lengths = [int(s) for s in seeds], [int(t) for t in context_lengths]
        self.overlays, self.bindings = list(overlays), list(bindings)
        self.retries, self.num_cpus, self.num_gpus = int(retries), float(num_cpus), float(num_gpus)
        for field in ("methods", "tasks", "seeds", "context_lengths"):
            if not getattr(self, field):
                raise config.ConfigError(f"Sweep.{field} is empty")
        if self.retries < 0 or self.num_cpus <= 0 or self.num_gpus < 0:
            raise config.ConfigError("Sweep needs retries >= 0, num_cpus > 0 and num_gpus >= 0")
        self.grid = check_grid(grid or {}, self.bindings)
        self.context_lengths_by_method = check_lengths_by_method(context_lengths_by_method or {}, self.methods)

    @property
    def directory(self) -> pathlib.Path:
        return self.results_dir / self.name

    def lengths_of(self, method) -> list[int]:
        """The context lengths `method` (a file of `methods`) runs."""
        return self.context_lengths_by_method.get(method, self.context_lengths)

    def describe(self) -> dict:
        """The sweep's axes and settings as the manifest records them."""
        return {"methods": self.methods, "tasks": self.tasks, "seeds": self.seeds,
                "context_lengths": self.context_lengths,
                "context_lengths_by_method": self.context_lengths_by_method, "grid": self.grid,
                "overlays": self.overlays, "bindings": self.bindings}


def check_lengths_by_method(lengths, methods) -> dict:
    """`Sweep.context_lengths_by_method` as {method file: [int, ...]}, or a one-line ConfigError."""
    if not isinstance(lengths, dict):
        raise config.ConfigError(f"Sweep.context_lengths_by_method must be a dict {{method file: [lengths]}}, "
                                 f"got {lengths!r}")
    checked = {}
    for method, values in lengths.items():
        where = f"Sweep.context_lengths_by_method[{method!r}]"
        if method not in methods:
            raise config.ConfigError(f"{where}: not one of Sweep.methods ({', '.join(methods)})")
        if not isinstance(values, (list, tuple)) or not values or \
                not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in values):
            raise config.ConfigError(f"{where} must be a non-empty list of integers >= 2, got {values!r}")
        checked[method] = [int(v) for v in values]
    return checked


def check_grid(grid, bindings=()) -> dict:
    """`Sweep.grid` as {binding: [values]}, or a one-line ConfigError saying what is wrong."""
    if not isinstance(grid, dict):
        raise config.ConfigError(f"Sweep.grid must be a dict {{binding: [values]}}, got {grid!r}")
    shorts = {}
    for key, values in grid.items():
        where = f"Sweep.grid[{key!r}]"
        if not isinstance(key, str) or not _BINDING_KEY.fullmatch(key):
            raise config.ConfigError(f"{where}: a grid key is a gin binding such as 'make_env.obs_noise_std'")
        configurable, short = key.rsplit(".", 1)
        if configurable.split("/")[-1] == "Experiment" and short in _OWN_AXES:
            raise config.ConfigError(f"{where}: Experiment.{short} is set by {_OWN_AXES[short]}, not by a grid axis")
        if short in shorts:
            raise config.ConfigError(f"{where}: its name {short!r} is also the name of {shorts[short]!r}, "
                                     "so their run directories could not be told apart")
        shorts[short] = key
        if not isinstance(values, (list, tuple)) or not values:
            raise config.ConfigError(f"{where} must be a non-empty list of values, got {values!r}")
        for value in values:
            if not _PATH_SAFE.fullmatch(label_text(value)):
                raise config.ConfigError(f"{where}: value {value!r} does not render path-safe "
                                         "(letters, digits, _ . = , + -)")
        if any(_bound_key(binding) == key for binding in bindings):
            raise config.ConfigError(f"{where}: Sweep.bindings also binds {key}; bind it in one place")
    return {key: list(values) for key, values in grid.items()}


def label_text(value) -> str:
    """How a grid value reads in `Experiment.variant`: strings as they are, anything else as a literal."""
    return value if isinstance(value, str) else repr(value)


def _bound_key(binding):
    return binding.split("=", 1)[0].strip().replace(" ", "")


def grid_cells(grid) -> list[dict]:
    """Every combination of the grid's values: [{binding: value, ...}, ...]; [{}] for no grid."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def grid_variant(cell) -> str:
    """'obs_noise_std=0.3' for {'make_env.obs_noise_std': 0.3}; several joined with ','."""
    return ",".join(f"{key.rsplit('.', 1)[1]}={label_text(value)}" for key, value in cell.items())


def load_sweep(gin_files, bindings=()) -> Sweep:
    """Parse the sweep's own gin and build the Sweep; gin is cleared again afterwards."""
    try:
        config.parse(gin_files, list(bindings))
        try:
            return Sweep()
        except config.ConfigError:
            raise
        except Exception as error:  # a missing required parameter, a wrong type
            raise config.ConfigError(f"invalid sweep configuration: {config.one_line(error)}") from error
    finally:
        gin.clear_config()


def plan(sweep: Sweep) -> list[dict]:
    """One manifest entry per grid cell, with the run directory harness.run will use."""
    runs = []
    cells = [(method, task, seed, ctx, cell) for method in sweep.methods
             for task, seed, ctx, cell in itertools.product(sweep.tasks, sweep.seeds, sweep.lengths_of(method),
                                                            grid_cells(sweep.grid))]
    for method, task, seed, ctx, cell in cells:
        bindings = [f"Experiment.name = '{sweep.name}'", f"Experiment.task = '{task}'",
                    f"Experiment.seed = {seed}", f"Experiment.context_length = {ctx}",
                    *(f"{key} = {value!r}" for key, value in cell.items()), *sweep.bindings]
        gin_files = [method, *sweep.overlays]
        if cell:  # the variant the method's files already set, extended by the grid's
            explicit = config.describe_run(gin_files, bindings, root=sweep.results_dir)[0]["variant"]
            variant = ",".join(v for v in (explicit, grid_variant(cell)) if v)
            bindings.append(f"Experiment.variant = '{variant}'")
        spec, run_dir = config.describe_run(gin_files, bindings, root=sweep.results_dir)
        key = run_dir.relative_to(sweep.directory).as_posix() if run_dir.is_relative_to(sweep.directory) \
            else run_dir.as_posix()
        runs.append({"id": key, "run_dir": key, "gin_files": gin_files, "bindings": bindings,
                     "method": spec["method"], "variant": spec["variant"], "grid": cell,
                     "suite": spec["suite"], "task": task, "seed": seed, "context_length": ctx,
                     "status": "pending", "attempts": 0, "exit_code": None, "error": None, "last_failure": None,
                     "log": f"logs/{key.replace('/', '__')}.log"})
    gin.clear_config()
    duplicates = [k for k, n in collections.Counter(r["id"] for r in runs).items() if n > 1]
    if duplicates:
        raise config.ConfigError(f"two grid cells share the run directory {duplicates[0]} "
                                 "(do two method files bind the same world model and variant?)")
    return runs


def parsed_config(run: dict) -> str:
    """The config text this sweep gives `run` now (parsed, not yet operative); gin is cleared after."""
    try:
        config.parse(run["gin_files"], run["bindings"])
        return gin.config_str()
    finally:
        gin.clear_config()


def config_drift(run: dict, run_dir) -> str | None:
    """None, or how the config this sweep would give `run` now differs from the config.gin its run
    directory recorded (a changed default, overlay or binding; harness.run's pre-build --resume
    check, `run_identity.config_mismatch(shared_only=True)`). A run directory without a config.gin
    has nothing to differ."""
    recorded = pathlib.Path(run_dir) / rundir.CONFIG_FILE
    if not recorded.is_file():
        return None
    return config_mismatch(recorded.read_text(), parsed_config(run), shared_only=True)
