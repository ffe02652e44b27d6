"""Gin parsing for the command-line tools: one place that turns gin files + bindings into an Experiment.

Unknown configurables or parameters are errors (`skip_unknown=False`); every failure surfaces as a
`ConfigError` whose message the CLIs print as one line before exiting with status 2.

The harness keeps no list of modules to import: a gin file imports the modules whose configurables
it binds (`import models.kalmamba`), and gin imports them while parsing. So a new world model is
known to every command line as soon as a gin file that binds it is given.
"""
import contextlib
import importlib.util  # noqa: F401  (gin's package-path probe uses it without importing it)
import logging
import pathlib

import gin


REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent  # a clone's root, holding gin/
# An installed wheel carries the gin tree as harness/gin (setup.py): its parent plays the clone's part.
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent
GIN_ROOTS = tuple(root for root in (REPO_ROOT, PACKAGE_ROOT) if (root / "gin").is_dir())


class ConfigError(ValueError):
    """A user error in gin files, bindings, suite or task names."""


def parse(gin_files, bindings=()):
    """Clear gin, then parse `gin_files` (paths) and `bindings` ('Name.param = value' strings).

    Only the harness's own configurables are imported here (`Experiment`, `Schedule`, `make_env`,
    which every run binds, the eval videos' `ModelStrip` and the evaluation's `BeliefMetrics`,
    which every run's config.gin records); everything else is imported by the gin files themselves."""
    import envs  # noqa: F401
    import harness.belief_metrics  # noqa: F401
    import harness.experiment  # noqa: F401
    import harness.video_strip  # noqa: F401
    gin.clear_config()
    for root in GIN_ROOTS:
        if str(root) not in _search_paths:  # gin keeps every prefix it is given, duplicates included
            gin.add_config_file_search_path(str(root))
            _search_paths.add(str(root))
    paths = [str(find_gin_file(p)) for p in gin_files]
    try:
        with _quiet_gin_probes():
            gin.parse_config_files_and_bindings(paths, list(bindings), skip_unknown=False, finalize_config=False)
    except Exception as error:  # gin raises ValueError, SyntaxError, KeyError... for user mistakes
        raise ConfigError(f"invalid gin configuration: {one_line(error)}") from error


_search_paths = set()


def _drop_probe_misses(record):
    return not (record.name == "root" and record.getMessage().startswith("Path not found: "))


@contextlib.contextmanager
def _quiet_gin_probes():
    """gin resolves an `include` by trying the working directory first, then each search path, and
    logs every miss of the first try as an error ('Path not found: gin/models/rssm.gin') even when
    a search path then holds the file; a file found nowhere still fails, with gin's own message."""
    root = logging.getLogger()
    root.addFilter(_drop_probe_misses)
    try:
        yield
    finally:
        root.removeFilter(_drop_probe_misses)


def find_gin_file(path) -> pathlib.Path:
    """`path` as given (relative to the working directory), else under the clone, else under the
    installed package's gin tree; ConfigError naming where it looked when none holds it."""
    for candidate in (pathlib.Path(path), *(root / path for root in GIN_ROOTS)):
        if candidate.is_file():
            return candidate
    where = ", ".join(str(root) for root in GIN_ROOTS) or "no gin directory found"
    raise ConfigError(f"gin file not found: {path} (looked in the working directory and {where})")


def make_experiment():
    """Build the `Experiment` from the parsed config, turning a missing binding into a ConfigError."""
    from envs import suites
    from harness.experiment import Experiment
    try:
        experiment = Experiment()
    except Exception as error:
        raise ConfigError(f"invalid gin configuration: {one_line(error)}") from error
    try:  # checked here, cheaply, so sweeps reject a misspelt task before starting any run
        suites.check_suite(experiment.suite)
        suites.task_spec(experiment.task)
    except ValueError as error:
        raise ConfigError(one_line(error)) from error
    return experiment


def describe_run(gin_files, bindings=(), root="results"):
    """Parse a run's config and return (spec dict, run directory) without building anything heavy."""
    parse(gin_files, bindings)
    experiment = make_experiment()
    return experiment.spec(), experiment.run_dir(root)


def one_line(error):
    """gin's messages span several lines (the offending binding, its location): fold them into one,
    dropping the 'In call to configurable' notes gin appends to errors raised inside a configurable."""
    lines = [line.strip() for line in str(error).splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("In call to configurable"))
    return text or type(error).__name__
