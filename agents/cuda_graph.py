"""One training update, or one acting step, replayed as a CUDA graph (`LatentSAC.compile = 'graph'`).

An update of world model + SAC issues 2,000 to 35,000 small kernels (docs/benchmarks.md); launched
one by one from Python they leave the GPU idle most of the time. A CUDA graph records the launches of
one call and replays all of them with one. Capture needs, and `CapturedCall` provides:

- fixed addresses: every call copies its inputs into static buffers that the graph reads, and the
  outputs are the graph's own tensors, overwritten by the next replay (callers copy what they keep);
- no host synchronisation inside the captured function (`.item()`, `float(t)`, Python branches on
  tensor values); tests/agents/test_no_host_sync.py checks every model's update and acting step;
- optimizers that keep their step counter on the device (`set_capturable`);
- warm-up calls before the capture, on a side stream, so that state created on first use (optimizer
  moments, cuBLAS workspaces, compiled Triton kernels) exists outside the graph.

Every call runs the function exactly once on its own inputs: the warm-up calls are real calls, the
capturing call replays once after recording. So a run makes the same updates in graph and in eager
mode. Random numbers inside a graph come from the default Philox generator, whose offset each replay
advances as the same kernels would in eager mode: a replay draws fresh numbers, and with the same
seed the same ones as eager execution.

A graph holds references to the tensors it read when it was recorded: anything that replaces a
parameter or optimizer-state tensor (`load_state_dict` of an optimizer, `.to(device)`) must drop the
graphs (`LatentSAC` does), while in-place updates (`param.copy_`) keep them valid.
"""
from typing import Callable

import torch

Signature = tuple

COMPILE_MODES = ("auto", "none", "graph")  # how an agent runs its update: see `resolve_compile`


def check_compile(owner: str, compile: str) -> str:
    """`compile` if it is one of COMPILE_MODES, else a ValueError naming `owner`'s setting."""
    if compile not in COMPILE_MODES:
        raise ValueError(f"{owner}.compile must be one of {COMPILE_MODES}, got {compile!r}")
    return compile


def resolve_compile(compile: str, device: torch.device) -> str:
    """The mode in use: 'graph' (CUDA graphs) or 'none' (eager); 'auto' is 'graph' on CUDA."""
    if compile == "auto":
        return "graph" if device.type == "cuda" else "none"
    return compile


def signature(inputs: dict[str, torch.Tensor]) -> Signature:
    """What a graph is specialised to: the names, shapes, dtypes and devices of its inputs."""
    return tuple((name, tuple(x.shape), x.dtype, x.device) for name, x in sorted(inputs.items()))


class CapturedCall:
    """fn(**inputs) -> outputs (a tensor, or a tuple/dict of them), recorded once and replayed.

    The first `warmup_calls` calls run eagerly on a side stream; the next one records fn on copies of
    its inputs, then replays; later calls copy their inputs into those buffers and replay. Inputs must
    keep the signature of the recorded call. Outputs are valid until the next call.
    """

    def __init__(self, fn: Callable, warmup_calls: int = 2):
        self.fn, self.warmup_calls = fn, int(warmup_calls)
        self.calls = 0
        self.graph = None
        self.static_inputs = self.static_outputs = self.signature = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, inputs: dict[str, torch.Tensor]):
        self.calls += 1
        if self.graph is not None:
            if signature(inputs) != self.signature:
                raise ValueError(f"inputs {signature(inputs)} do not match the captured graph's {self.signature}")
            for name, value in inputs.items():
                self.static_inputs[name].copy_(value, non_blocking=True)
            self.graph.replay()
            return self.static_outputs
        if self.calls <= self.warmup_calls:
            return _on_side_stream(self.fn, inputs)
        self.static_inputs = {name: value.clone() for name, value in inputs.items()}
        self.signature = signature(self.static_inputs)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_outputs = self.fn(**self.static_inputs)
        self.graph = graph
        graph.replay()
        return self.static_outputs


def _on_side_stream(fn, inputs):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        outputs = fn(**inputs)
    torch.cuda.current_stream().wait_stream(side)
    return outputs


def set_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Switch an Adam-style optimizer between a host step counter (eager) and a device one (graphs).

    `load_state_dict` restores the flag a checkpoint was saved with, so the agent sets it again after
    every load: a checkpoint written in graph mode then resumes in eager mode on a CPU and vice versa.
    """
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = bool(capturable)
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                device = param.device if capturable else torch.device("cpu")
                step = torch.as_tensor(state["step"])
                state["step"] = step.detach().to(device=device, dtype=step.dtype if step.is_floating_point() else torch.float32)
