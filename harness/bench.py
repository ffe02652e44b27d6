"""Benchmarks that print a table: `python -m harness.bench {acting,env,kalman,model-fit,models} [options]`.

Each benchmark lives in `harness/benchmarks/<name>.py` and exposes `main(argv)`.
"""
import importlib
import sys

BENCHMARKS = ("acting", "env", "kalman", "model-fit", "models")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m harness.bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"harness.benchmarks.{argv[0].replace('-', '_')}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
