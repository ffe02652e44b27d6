"""What CUDA-graph capture needs of every model, checked on the CPU: an update and an acting step
that never read a tensor's value on the host.

A captured function may not synchronise with the host: `.item()`, `float(t)`, `bool(t)` (a Python
`if` on a tensor), `.tolist()`, `.numpy()`, `.cpu()`. `forbid_host_reads` makes each of those raise
while an update or acting step runs, so a model that would fail capture on a GPU fails here first.
Inside the optimizers' `step` the reads are allowed: Adam reads its step counter on the host only
when it is not `capturable`, which it is in graph mode and cannot be on a CPU.
"""
import contextlib
import copy

import numpy as np
import pytest
import torch

from agents.cuda_graph import set_capturable
from agents.latent_sac import LatentSAC
from agents.sac import SAC
from tests.models import model_table

HOST_READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu")


class HostRead(RuntimeError):
    pass


@contextlib.contextmanager
def forbid_host_reads(optimizers=()):
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}
    allowed = [0]

    def refuse(name):
        def method(self, *args, **kwargs):
            if allowed[0]:
                return originals[name](self, *args, **kwargs)
            raise HostRead(f"Tensor.{name} read a tensor's value on the host")
        return method

    def allowing(step):
        def method(*args, **kwargs):
            allowed[0] += 1
            try:
                return step(*args, **kwargs)
            finally:
                allowed[0] -= 1
        return method

    for optimizer in optimizers:
        optimizer.step = allowing(optimizer.step)
    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
        for optimizer in optimizers:
            del optimizer.step


def test_the_guard_catches_a_python_branch_on_a_tensor():
    x = torch.ones(3)
    with forbid_host_reads(), pytest.raises(HostRead):
        if x.sum() > 0:
            pass
    assert bool(x.sum() > 0)  # restored afterwards


def _agent(name, shape_name, action_dim=2):
    torch.manual_seed(0)
    model = model_table.build(name, shape_name, action_dim)
    sac = lambda **kw: SAC(hidden_dim=16, num_layers=2, **kw)
    agent = LatentSAC(model, action_dim, sac=sac, compile="none")
    shape = model_table.SHAPES[shape_name]
    if shape_name == "state":
        agent.fit_obs_normaliser(np.random.default_rng(0).normal(size=(50, *shape)))
    return agent


def _batch(shape_name, B=3, T=5, action_dim=2):
    rng = np.random.default_rng(1)
    shape = model_table.SHAPES[shape_name]
    obs = (rng.integers(0, 256, size=(B, T, *shape), dtype=np.uint8) if shape_name == "image"
           else rng.normal(size=(B, T, *shape)).astype(np.float32))
    is_first = np.zeros((B, T), bool)
    is_first[:, 0] = True
    is_first[0, T // 2] = True  # an episode start mid-window
    return {"obs": obs, "prev_action": rng.uniform(-1, 1, (B, T, action_dim)).astype(np.float32),
            "reward": rng.normal(size=(B, T)).astype(np.float32), "is_first": is_first,
            "is_terminal": np.zeros((B, T), bool)}


@pytest.mark.parametrize("name,shape_name", model_table.cases())
def test_update_and_acting_step_read_nothing_on_the_host(name, shape_name):
    agent = _agent(name, shape_name)
    batch = {k: torch.as_tensor(v) for k, v in _batch(shape_name).items()}
    with forbid_host_reads(agent.optimizers()):
        metrics = agent._update(batch)
    assert metrics and all(torch.is_tensor(v) and torch.isfinite(v).all() for v in metrics.values())

    state = agent.initial_state(2)
    obs = torch.as_tensor(_batch(shape_name, B=2, T=1)["obs"][:, 0])
    prev_action, is_first = torch.zeros(2, 2), torch.tensor([True, False])
    for deterministic in (False, True):
        with torch.no_grad(), forbid_host_reads():
            action, next_state = agent._act(obs=obs, prev_action=prev_action, is_first=is_first,
                                            state=state, deterministic=deterministic)
        assert action.shape == (2, 2) and torch.isfinite(action).all()
        assert next_state.keys() == state.keys() or name == "identity"


def test_compile_mode_is_resolved_from_the_device_and_checked():
    agent = _agent("kalmamba", "state")
    assert agent.compile_mode == "none"
    auto = LatentSAC(model_table.build("kalmamba", "state", 2), 2,
                     sac=lambda **kw: SAC(hidden_dim=8, num_layers=1, **kw))
    assert auto.compile == "auto" and auto.compile_mode == "none"  # CPU: eager
    with pytest.raises(ValueError, match="compile"):
        LatentSAC(model_table.build("kalmamba", "state", 2), 2, compile="fast")


def test_a_checkpoint_written_with_device_step_counters_loads_for_eager_updates():
    """Graph mode keeps Adam's step on the device; loading that state into an eager agent (e.g. a
    resume on a CPU) goes back to host counters, and the next update is the same as from a
    checkpoint that never left eager mode."""
    source = _agent("kalmamba", "state")
    source.update(_batch("state"))
    state_eager = copy.deepcopy(source.state_dict())  # (loading aliases the optimizer moments)
    for optimizer in source.optimizers():
        set_capturable(optimizer, True)  # as in graph mode (the device is the CPU here)
    state_graph = copy.deepcopy(source.state_dict())
    assert state_graph["model_opt"]["param_groups"][0]["capturable"] is True

    results = []
    for state in (state_eager, state_graph):
        agent = _agent("kalmamba", "state")
        agent.load_state_dict(state)
        assert all(not group["capturable"] for opt in agent.optimizers() for group in opt.param_groups)
        torch.manual_seed(3)
        results.append(agent.update(_batch("state")))
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=0, atol=0)
