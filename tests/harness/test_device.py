"""`--device auto|cpu|cuda|cuda:N`: parsed by every entry point, checked against the visible GPUs."""
import argparse

import pytest
import torch

from harness import run
from harness.config import ConfigError
from harness.device import device_arg, resolve_device


@pytest.mark.parametrize("text", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12"])
def test_valid_names_parse(text):
    assert device_arg(text) == text
    assert run.parse_args(["--gin", "gin/quick.gin", "--device", text]).device == text


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cuda1", "CPU", "mps"])
def test_other_names_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="cuda:N"):
        device_arg(text)


def test_cuda_n_is_checked_against_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("auto") == "cuda"
    with pytest.raises(ConfigError, match=r"--device cuda:2: only 2 CUDA device\(s\) visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cuda:1: no CUDA device is available"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == "cpu"
