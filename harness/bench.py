"""Benchmarks that print a table: `python -m harness.bench {acting,e2e,env,kalman,model-fit,models,offline} [options]`.

    python -m harness.bench env      env steps/s per suite, with and without rendering
    python -m harness.bench kalman   sequential vs parallel vs Triton Kalman filter+smoother, Mamba scans
    python -m harness.bench models   one world-model + SAC update per model and context length
    python -m harness.bench model-fit  full-size KalMamba fitted to prefill data: held-out ELBO, clip rate
    python -m harness.bench acting   per-step acting latency of the offline sequence policies
    python -m harness.bench e2e      env steps/s of the real training loop; --concurrent: N runs per GPU
    python -m harness.bench offline  updates/s of the offline training step, windows drawn on the host or device

`python -m harness.bench NAME --help` lists a benchmark's own options. Each benchmark lives in
`harness/benchmarks/<name>.py` and exposes `main(argv)`.
"""
import argparse
import importlib
import sys

from harness.cli import CliParser

BENCHMARKS = ("acting", "e2e", "env", "kalman", "model-fit", "models", "offline")


def main(argv=None):
    parser = CliParser(prog="python -m harness.bench", doc=__doc__)
    parser.add_argument("benchmark", choices=BENCHMARKS, help="which benchmark to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options (see NAME --help)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(f"harness.benchmarks.{args.benchmark.replace('-', '_')}")
    return module.main(args.options) or 0


if __name__ == "__main__":
    sys.exit(main())
