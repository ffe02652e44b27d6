"""What every harness command line shares: a usage error is one line on stderr and exit status 2.

    parser = CliParser(prog="python -m harness.<tool>", description=...)
    ...
    except ConfigError as error:
        return fail(error)
"""
import argparse
import sys

USER_ERROR = 2  # bad arguments, gin files or bindings: nothing was run, retrying cannot help


class CliParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(USER_ERROR, f"error: {message}\n")


def fail(error) -> int:
    """Print `error` as one line and return the user-error exit status."""
    print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
    return USER_ERROR
