"""The `WorldModel` contract, checked the same way for every model of tests/models/model_table.py
on a state shape (5,) and on (3, 64, 64) uint8 images: observe == successive steps, resets,
checkpoint round trips, one LatentSAC update, features, and clear errors for bad input."""
import functools
import io
import math

import numpy as np
import pytest
import torch

from agents.latent_sac import LatentSAC
from agents.sac import SAC
from tests.models import model_table
from tests.models.model_table import SHAPES

ACTION_DIM = 2


def make_model(name, shape_name, seed=0, **overrides):
    torch.manual_seed(seed)
    return model_table.build(name, shape_name, ACTION_DIM, **overrides)


ALL = model_table.cases()
LEARNED = model_table.cases(learned_only=True)
NAMES = list(model_table.MODELS)


def make_sequence(shape_name, B=3, T=7, dtype=torch.float64, seed=0, resets=((1, 3), (2, 5))):
    """obs, prev_action (zero at starts), reward, is_first with resets mid-sequence."""
    g = torch.Generator().manual_seed(seed)
    if shape_name == "image":
        obs = torch.randint(0, 256, (B, T, *SHAPES["image"]), dtype=torch.uint8, generator=g)
    else:
        obs = torch.randn(B, T, *SHAPES["state"], generator=g, dtype=torch.float64).to(dtype)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    for b, t in resets:
        is_first[b, t] = True
    prev_action = (2 * torch.rand(B, T, ACTION_DIM, generator=g, dtype=torch.float64) - 1).to(dtype)
    prev_action[is_first] = 0
    reward = torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype)
    reward[is_first] = 0
    return {"obs": obs, "prev_action": prev_action, "is_first": is_first, "reward": reward,
            "is_terminal": torch.zeros(B, T, dtype=torch.bool)}


def assert_beliefs_equal(actual, expected, atol, keys=None):
    keys = keys or expected.keys()
    for key in keys:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=atol, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("split", [1, 3, 5])
@pytest.mark.parametrize("name", NAMES)
def test_observe_continues_from_a_state_exactly(name, split):
    """Two chunks, the second starting from the first's last state, equal one pass; the batch mixes
    a row that restarts exactly at the split (split 3, 5) with rows that continue across it."""
    model = make_model(name, "state").double().eval()
    seq = make_sequence("state")
    obs, act, first = seq["obs"], seq["prev_action"], seq["is_first"]
    with torch.no_grad():
        whole, whole_last = model.observe(obs, act, first)
        head, head_last = model.observe(obs[:, :split], act[:, :split], first[:, :split])
        tail, tail_last = model.observe(obs[:, split:], act[:, split:], first[:, split:], state=head_last)
    assert_beliefs_equal({k: torch.cat([head[k], tail[k]], 1) for k in whole}, whole, atol=1e-12)
    assert_beliefs_equal(tail_last, whole_last, atol=1e-12)


@pytest.mark.parametrize("name,shape_name", ALL)
def test_observe_equals_successive_steps(name, shape_name):
    model = make_model(name, shape_name).double().eval()
    seq = make_sequence(shape_name)
    with torch.no_grad():
        beliefs, last = model.observe(seq["obs"], seq["prev_action"], seq["is_first"])
        state, steps = model.initial_state(3), []
        for t in range(7):
            state = model.step(seq["obs"][:, t], seq["prev_action"][:, t], seq["is_first"][:, t], state)
            steps.append(state)
    stepped = {key: torch.stack([s[key] for s in steps], 1) for key in beliefs}
    assert_beliefs_equal(stepped, beliefs, atol=1e-10)
    assert_beliefs_equal(state, last, atol=1e-10)
    features = model.features(beliefs)
    assert features.shape == (3, 7, model.feature_dim) and torch.isfinite(features).all()
    torch.testing.assert_close(model.features(state), features[:, -1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,shape_name", ALL)
def test_mid_sequence_is_first_restarts_the_belief(name, shape_name):
    model = make_model(name, shape_name).double().eval()
    seq = make_sequence(shape_name, resets=((0, 4), (1, 4), (2, 4)))
    with torch.no_grad():
        beliefs, _ = model.observe(seq["obs"], seq["prev_action"], seq["is_first"])
        fresh, _ = model.observe(seq["obs"][:, 4:], seq["prev_action"][:, 4:], seq["is_first"][:, 4:])
        no_reset = seq["is_first"].clone()
        no_reset[:, 4] = False
        carried, _ = model.observe(seq["obs"], seq["prev_action"], no_reset)
    tail = {key: value[:, 4:] for key, value in beliefs.items()}
    assert_beliefs_equal(tail, fresh, atol=1e-12)
    if model_table.MODELS[name].learned:  # the history must matter without the flag, or this test proves nothing
        assert not torch.allclose(model.features(carried)[:, 4:], model.features(fresh), atol=1e-6)


@pytest.mark.parametrize("name,shape_name", ALL)
def test_state_dict_round_trip_reproduces_outputs_exactly(name, shape_name):
    original = make_model(name, shape_name, seed=0)
    restored = make_model(name, shape_name, seed=1)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    seq = make_sequence(shape_name, dtype=torch.float32)
    outputs = []
    for model in (original, restored):
        model.eval()
        with torch.no_grad():
            beliefs, _ = model.observe(seq["obs"], seq["prev_action"], seq["is_first"])
        model.train()
        torch.manual_seed(123)  # same dropout masks and reparameterisation noise
        loss, metrics, _ = model.loss(seq)
        outputs.append((model.features(beliefs), loss.detach(), metrics))
    (f1, l1, m1), (f2, l2, m2) = outputs
    assert torch.equal(f1, f2) and torch.equal(l1, l2)
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    if model_table.MODELS[name].learned:
        other = make_model(name, shape_name, seed=2).eval()
        with torch.no_grad():
            for parameter in other.parameters():  # also a model whose initial weights are not random
                parameter.add_(0.1 * torch.randn_like(parameter))
            beliefs, _ = other.observe(seq["obs"], seq["prev_action"], seq["is_first"])
        assert not torch.equal(other.features(beliefs), f1)  # different weights do change outputs


@pytest.mark.parametrize("name,shape_name", ALL)
def test_one_latent_sac_update_gives_finite_losses_and_gradients(name, shape_name):
    model = make_model(name, shape_name)
    agent = LatentSAC(model, ACTION_DIM, sac=functools.partial(SAC, hidden_dim=32, num_layers=2))
    seq = make_sequence(shape_name, B=4, T=6, dtype=torch.float32, seed=3)
    batch = {key: value.numpy() for key, value in seq.items()}
    before = [p.detach().clone() for p in model.parameters()]
    metrics = agent.update(batch)
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values()), metrics
    assert any(key.startswith("sac/") for key in metrics)
    for module in (model, agent.sac):
        for param_name, param in module.named_parameters():
            if param.grad is not None:
                assert torch.isfinite(param.grad).all(), param_name
    if model_table.MODELS[name].learned:
        assert {"model/loss", "model/grad_norm"} <= metrics.keys()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads)  # every parameter takes part in the loss
        assert float(metrics["model/grad_norm"]) > 0
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    # and the agent acts with the updated model
    state = agent.initial_state(2)
    obs = batch["obs"][:2, 0]
    action, state = agent.act(state, obs, np.zeros((2, ACTION_DIM), np.float32), [True, True])
    assert action.shape == (2, ACTION_DIM) and np.all(np.abs(action) <= 1)


@pytest.mark.parametrize("name,shape_name", LEARNED)
def test_loss_is_finite_scalar_with_namespaced_metrics(name, shape_name):
    model = make_model(name, shape_name)
    seq = make_sequence(shape_name, dtype=torch.float32)
    loss, metrics, beliefs = model.loss(seq)
    assert loss.shape == () and torch.isfinite(loss)
    assert all(key.startswith("model/") and value.shape == () for key, value in metrics.items())
    assert model.features(beliefs).shape == (3, 7, model.feature_dim)


@pytest.mark.parametrize("name,shape_name", LEARNED)
def test_mismatched_inputs_give_one_clear_error(name, shape_name):
    model = make_model(name, shape_name)
    seq = make_sequence(shape_name, dtype=torch.float32)
    with pytest.raises(ValueError, match="obs must have shape"):
        model.observe(seq["obs"][:, :, :1], seq["prev_action"], seq["is_first"])
    with pytest.raises(ValueError, match="prev_action must have shape"):
        model.observe(seq["obs"], seq["prev_action"][..., :1], seq["is_first"])
    with pytest.raises(ValueError, match="batch keys"):
        model.loss({"obs": seq["obs"]})
