"""What every harness command line shares: a usage error is one line on stderr and exit status 2,
naming the option it belongs to, and `--help` shows the module's own usage text.

    parser = CliParser(prog="python -m harness.<tool>", doc=__doc__)
    parser.add_argument("--reps", type=positive_int, ...)
    ...
    except ConfigError as error:
        return fail(error)
"""
import argparse
import sys

USER_ERROR = 2  # bad arguments, gin files or bindings: nothing was run, retrying cannot help


class CliParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2.

    doc: the tool's module docstring; its first paragraph becomes the description and the rest the
    epilog of `--help`, line breaks kept.
    """

    def __init__(self, *args, doc=None, **kwargs):
        if doc is not None:
            first, _, rest = doc.strip().partition("\n\n")
            kwargs.setdefault("description", " ".join(first.split()))
            kwargs.setdefault("epilog", rest.strip("\n").rstrip() or None)
            kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(USER_ERROR, f"error: {message}\n")


def positive_int(text):
    """argparse type: an integer >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def open_unit_interval(text):
    """argparse type: a number strictly between 0 and 1 (a confidence level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def fail(error) -> int:
    """Print `error` as one line and return the user-error exit status."""
    print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
    return USER_ERROR


def gpu_list(text):
    """argparse type: '0,1' -> ['0', '1'] (distinct non-negative integers)."""
    gpus = text.split(",")
    if not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"expected distinct GPU numbers separated by commas, got {text!r}")
    return gpus


def gpu_fraction(text):
    """argparse type: GPUs per run, a number in (0, 1] (runs share a GPU) or a whole number >= 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or a whole number, got {text!r}") from None
    if not (0 < value <= 1 or 1 < value < float("inf") and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or a whole number, got {text!r}")
    return value


def name_list(text):
    """argparse type: 'a,b' -> ['a', 'b'] (distinct, non-empty names separated by commas)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated names, got {text!r}")
    return names
