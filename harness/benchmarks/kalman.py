"""`python -m harness.bench kalman`: sequential vs parallel vs fused Triton Kalman filter + smoother, and Mamba.

Prints one markdown table per device. Every time is the median wall clock of forward + backward
(a scalar loss over all outputs, gradients for all inputs), after warm-up, with the device
synchronised before the clock stops. Columns:

    T              sequence length (batch B, latent size D)
    sequential_ms  kalman_filter + kalman_smoother with backend='sequential'
    parallel_ms    the same with backend='scan' (associative scan);  speedup = sequential / parallel
    triton_ms      the same with backend='triton' (fused kernels, models/kalman_triton.py); CUDA
                   only: '-' on CPU, or everywhere when triton does not import (a note says which)
    triton_graph_ms  the same fwd+bwd captured once in a CUDA graph and replayed: the device time a
                   graph-captured training update spends on it, without the host's launch overhead
    mamba_*_ms     one Mamba block on (B, T, d_model): `fallback` is the pure-PyTorch scan,
                   `kernel` our block on mamba_ssm's kernel, `kernel_resets` the same with 1% of
                   steps starting an episode, `mamba_ssm` mamba_ssm's own module (CUDA only)

`--check` (CUDA + mamba_ssm) prints float32 relative errors ||a - b|| / ||b|| of the block output
and of the input gradient: fallback vs mamba_ssm's module, and kernel path vs fallback.
"""
import argparse
import datetime
import functools
import math
import sys

import torch

from harness.benchmarks.timing import graph_median_ms, median_ms
from harness.cli import CliParser
from models.kalman import kalman_filter, kalman_smoother, triton_available
from models.mamba import Mamba, mamba_ssm_available


def main(argv=None):
    args = _parse(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        print("error: --devices cuda was asked for but CUDA is not available", file=sys.stderr)
        return 2
    print(f"command: python -m harness.bench kalman {' '.join(argv or [])}".rstrip())
    print(f"date: {datetime.date.today().isoformat()}; torch {torch.__version__}; "
          f"mamba_ssm kernel: {'yes' if mamba_ssm_available() else 'no'}; "
          f"triton: {'yes' if triton_available() else 'no (triton_ms skipped)'}")
    if args.check:
        return _check(args)
    for device in devices:
        _table(args, torch.device(device))
    return 0


def _parse(argv):
    parser = CliParser(prog="python -m harness.bench kalman", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=230, help="latent size D of the Kalman filter")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None,
                        help="default: cpu, and cuda when available")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--mamba-d-model", type=int, default=128)
    parser.add_argument("--mamba-d-state", type=int, default=16)
    parser.add_argument("--mamba-cpu-max-length", type=int, default=128,
                        help="longest T for the Mamba fallback on CPU (its scan holds (B, T, 2 d_model, d_state))")
    parser.add_argument("--no-mamba", action="store_true")
    parser.add_argument("--check", action="store_true",
                        help="print fallback vs mamba_ssm relative errors (needs CUDA and mamba_ssm)")
    parser.add_argument("--check-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.lengths) < 1 or args.batch < 1 or args.dim < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("lengths, batch, dim and repeats must be positive, warmup non-negative")
    return args


def _table(args, device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    print(f"\n### {name} ({device.type}{threads}); Kalman B={args.batch}, D={args.dim}; "
          f"Mamba d_model={args.mamba_d_model}, d_state={args.mamba_d_state}; float32, fwd+bwd, median ms\n")
    mamba_columns = [] if args.no_mamba else _mamba_variants(device)
    header = (["T", "sequential_ms", "parallel_ms", "speedup", "triton_ms", "triton_graph_ms"]
              + [f"mamba_{c}_ms" for c in mamba_columns])
    run_triton = device.type == "cuda" and triton_available()
    if not run_triton:
        reason = "no CUDA device (the kernels run on CUDA only)" if triton_available() else "triton does not import"
        print(f"triton_ms, triton_graph_ms: {reason}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for length in args.lengths:
        problem = _kalman_problem(args.batch, length, args.dim, device)
        ms = {backend: median_ms(functools.partial(_kalman_fwd_bwd, problem, backend), device, args.warmup,
                                 args.repeats)
              for backend in ("sequential", "scan") + (("triton",) if run_triton else ())}
        graph = (graph_median_ms(functools.partial(_kalman_fwd_bwd, problem, "triton"), device, args.warmup,
                                 args.repeats) if run_triton else None)
        row = [str(length), f"{ms['sequential']:.2f}", f"{ms['scan']:.2f}", f"{ms['sequential'] / ms['scan']:.1f}x",
               f"{ms['triton']:.2f}" if run_triton else "-", f"{graph:.3f}" if run_triton else "-"]
        for variant in mamba_columns:
            too_long = device.type == "cpu" and length > args.mamba_cpu_max_length
            row.append("-" if too_long else f"{_time_mamba(args, device, length, variant):.2f}")
        print("| " + " | ".join(row) + " |", flush=True)


def _kalman_problem(batch, length, dim, device):
    """A in [0.4, 0.99], variances log-uniform in [1e-3, 1]; every input requires grad."""
    def log_uniform(*shape):
        return torch.empty(*shape, device=device).uniform_(math.log(1e-3), 0).exp()

    tensors = dict(A=torch.empty(batch, length, dim, device=device).uniform_(0.4, 0.99),
                   b=torch.randn(batch, length, dim, device=device), Q=log_uniform(batch, length, dim),
                   y=torch.randn(batch, length, dim, device=device), R=log_uniform(batch, length, dim),
                   mean0=torch.zeros(batch, dim, device=device), var0=torch.ones(batch, dim, device=device))
    return {k: v.requires_grad_() for k, v in tensors.items()}


def _kalman_fwd_bwd(p, backend):
    filtered = kalman_filter(**p, backend=backend)
    smoothed = kalman_smoother(filtered, p["A"], p["b"], p["Q"], backend=backend)
    loss = sum(x.sum() for x in (*filtered, *smoothed))
    torch.autograd.grad(loss, list(p.values()))


def _mamba_variants(device):
    if device.type != "cuda" or not mamba_ssm_available():
        return ["fallback"]
    return ["fallback", "kernel", "kernel_resets", "mamba_ssm"]


def _make_block(args, device, variant):
    if variant == "mamba_ssm":
        from mamba_ssm.modules.mamba_simple import Mamba as UpstreamMamba
        return UpstreamMamba(args.mamba_d_model, d_state=args.mamba_d_state).to(device)
    return Mamba(args.mamba_d_model, d_state=args.mamba_d_state, use_kernel=variant != "fallback").to(device)


def _time_mamba(args, device, length, variant):
    block = _make_block(args, device, variant)
    x = torch.randn(args.batch, length, args.mamba_d_model, device=device, requires_grad=True)
    is_first = torch.rand(args.batch, length, device=device) < 0.01 if variant == "kernel_resets" else None

    def fwd_bwd():
        out = block(x) if is_first is None else block(x, is_first)
        torch.autograd.grad(out.square().sum(), [x, *block.parameters()])

    return median_ms(fwd_bwd, device, args.warmup, args.repeats)


def _check(args):
    if not (torch.cuda.is_available() and mamba_ssm_available()):
        print("error: --check needs CUDA and mamba_ssm's CUDA extension", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    print(f"\n### {torch.cuda.get_device_name(device)}: Mamba float32 relative errors, "
          f"B={args.batch}, T={args.check_length}, d_model={args.mamba_d_model}\n")
    blocks = {v: _make_block(args, device, v) for v in ("fallback", "kernel", "mamba_ssm")}
    state = blocks["fallback"].state_dict()
    for block in blocks.values():
        block.load_state_dict(state)
    x = torch.randn(args.batch, args.check_length, args.mamba_d_model, device=device)
    is_first = torch.rand(args.batch, args.check_length, device=device) < 0.01
    results = {}
    for variant, block in blocks.items():
        for resets in (False, True):
            if resets and variant == "mamba_ssm":
                continue
            leaf = x.clone().requires_grad_()
            out = block(leaf, is_first) if resets else block(leaf)
            (grad,) = torch.autograd.grad(out.square().sum(), leaf)
            results[variant, resets] = out.detach(), grad
    print("| comparison | output rel. error | input-gradient rel. error |")
    print("|---|---:|---:|")
    for (a, b, resets) in (("fallback", "mamba_ssm", False), ("kernel", "mamba_ssm", False),
                           ("kernel", "fallback", False), ("kernel", "fallback", True)):
        errors = [_relative_error(u, v) for u, v in zip(results[a, resets], results[b, resets])]
        label = f"{a} vs {b}" + (" (1% resets)" if resets else "")
        print(f"| {label} | {errors[0]:.2e} | {errors[1]:.2e} |")
    return 0


def _relative_error(got, want):
    return ((got.float() - want.float()).norm() / want.float().norm()).item()
