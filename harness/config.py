"""Gin parsing for the command-line tools: one place that turns gin files + bindings into an Experiment.

Unknown configurables or parameters are errors (`skip_unknown=False`); every failure surfaces as a
`ConfigError` whose message the CLIs print as one line before exiting with status 2.

The harness keeps no list of modules to import: a gin file imports the modules whose configurables
it binds (`import models.kalmamba`), and gin imports them while parsing. So a new world model is
known to every command line as soon as a gin file that binds it is given.
"""
import pathlib

import gin


REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A user error in gin files, bindings, suite or task names."""


def parse(gin_files, bindings=()):
    """Clear gin, then parse `gin_files` (paths) and `bindings` ('Name.param = value' strings).

    Only the harness's own configurables are imported here (`Experiment`, `Schedule`, `make_env`,
    which every run binds); everything else is imported by the gin files themselves."""
    import envs  # noqa: F401
    import harness.experiment  # noqa: F401
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO_ROOT))
    for path in gin_files:
        if not pathlib.Path(path).is_file() and not (REPO_ROOT / path).is_file():
            raise ConfigError(f"gin file not found: {path}")
    try:
        gin.parse_config_files_and_bindings(
            [str(p if pathlib.Path(p).is_file() else REPO_ROOT / p) for p in gin_files],
            list(bindings), skip_unknown=False, finalize_config=False)
    except Exception as error:  # gin raises ValueError, SyntaxError, KeyError... for user mistakes
        raise ConfigError(f"invalid gin configuration: {one_line(error)}") from error


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
