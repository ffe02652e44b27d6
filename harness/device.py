"""`--device` of the command lines: 'auto', 'cpu', 'cuda' or 'cuda:N'; and the machine a run uses.

    parser.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP)
    device = resolve_device(args.device)    # raises ConfigError when CUDA (or GPU N) is missing
    machine_info(device)                    # what run.json records as `machine`
    placement_info()                        # what run.json records as `placement`

A scheduler that places runs (harness.executors' Ray executor) describes the place in environment
variables the run inherits: SSM_BENCH_NODE (the node's id), SSM_BENCH_NODE_IP and SSM_BENCH_GPUS (the
GPU ids it reserved, comma-separated; empty: none). The run records them without knowing who set them.
"""
import argparse
import os
import platform
import re

from harness import mps
from harness.config import ConfigError

PLACEMENT_NODE, PLACEMENT_NODE_IP, PLACEMENT_GPUS = "SSM_BENCH_NODE", "SSM_BENCH_NODE_IP", "SSM_BENCH_GPUS"

DEVICE_HELP = ("auto (CUDA if available, else CPU), cpu, cuda or cuda:N (GPU N of those "
               "CUDA_VISIBLE_DEVICES shows; default: auto)")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_arg(text: str) -> str:
    """argparse type: the device name, or a usage error naming the valid forms."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def resolve_device(name: str) -> str:
    """The torch device string to use; ConfigError when the named CUDA device is not there."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return name


def machine_info(device) -> dict:
    """Where this process runs: host, OS, CPU, torch and the CUDA device's name (None off CUDA)."""
    import torch
    cuda = torch.cuda.get_device_name(torch.device(device)) if str(device).startswith("cuda") else None
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda_device": cuda}


def cpu_model():
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows, else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def placement_info(environ=None) -> dict:
    """Where a scheduler placed this process (module docstring): node id, node IP, the GPU ids it
    reserved (None when no scheduler said, [] when it reserved none), CUDA_VISIBLE_DEVICES, and
    whether its environment points CUDA at an MPS daemon (`harness.sweep --mps`, harness/mps.py)."""
    environ = os.environ if environ is None else environ
    gpus = environ.get(PLACEMENT_GPUS)
    return {"node": environ.get(PLACEMENT_NODE) or None, "node_ip": environ.get(PLACEMENT_NODE_IP) or None,
            "gpus": None if gpus is None else [g for g in gpus.split(",") if g],
            "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"), "cuda_mps": mps.in_use(environ)}
