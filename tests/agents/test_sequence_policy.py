"""Decision Transformer / Decision Mamba: causality, acting step == parallel forward, training reduces the loss."""
import functools

import numpy as np
import pytest
import torch

from agents.return_conditioned import ReturnConditionedAgent
from agents.sequence_mixers import CausalTransformer, MambaMixer
from agents.sequence_policy import DecisionMamba, DecisionTransformer

MIXERS = {"attention": functools.partial(CausalTransformer, num_layers=2, num_heads=2),
          "mamba": functools.partial(MambaMixer, num_layers=2, d_state=4),
          "mamba+mlp": functools.partial(MambaMixer, num_layers=2, d_state=4, channel_mlp_enabled=True)}
O, A = 5, 2


def episode(length, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, length, generator=g, dtype=dtype) * 500,
            torch.randn(1, length, O, generator=g, dtype=dtype),
            torch.rand(1, length, A, generator=g, dtype=dtype) * 2 - 1,
            torch.arange(length)[None] + 3)


def make(policy_class, mixer, **kwargs):
    torch.manual_seed(0)
    policy = policy_class((O,), A, mixer=MIXERS[mixer], embed_dim=16, **kwargs).double().eval()
    policy.set_obs_normalisation(torch.rand(O), torch.rand(O) + 0.5)
    return policy


@pytest.mark.parametrize("mixer", sorted(MIXERS))
@pytest.mark.parametrize("length", [7, 13])
def test_mixer_is_causal(mixer, length):
    """Changing token j changes no output before j, and does change output j."""
    torch.manual_seed(0)
    module = MIXERS[mixer](d_model=16, dropout=0.0).double().eval()
    x = torch.randn(2, length, 16, dtype=torch.float64)
    base = module(x)
    for j in (0, length // 2, length - 1):
        changed = x.clone()
        changed[:, j] += torch.randn(2, 16, dtype=torch.float64)
        out = module(changed)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-12)
        assert (out[:, j] - base[:, j]).abs().max() > 1e-6


@pytest.mark.parametrize("policy_class, mixer", [(DecisionTransformer, "attention"),
                                                 (DecisionMamba, "mamba"), (DecisionMamba, "mamba+mlp")])
def test_policy_prediction_ignores_its_own_and_future_actions(policy_class, mixer):
    """The action at t depends on a_0..a_{t-1} but neither on a_t nor on anything later."""
    policy = make(policy_class, mixer)
    rtg, obs, actions, t = episode(9)
    base = policy(rtg, obs, actions, t)
    for j in (0, 4, 8):
        for field in ("rtg", "obs", "actions"):
            inputs = {"rtg": rtg.clone(), "obs": obs.clone(), "actions": actions.clone()}
            inputs[field][:, j] += 0.7
            out = policy(inputs["rtg"], inputs["obs"], inputs["actions"], t)
            first_changed = j + 1 if field == "actions" else j
            torch.testing.assert_close(out[:, :first_changed], base[:, :first_changed], rtol=0, atol=1e-12)
            if first_changed < 9:
                assert (out[:, first_changed] - base[:, first_changed]).abs().max() > 1e-9


def roll_out(policy, rtg, obs, t):
    """Act step by step; returns the (1, L, A) actions the policy chose."""
    state, chosen = policy.initial_state(1), []
    for i in range(rtg.shape[1]):
        action, state = policy.step(state, rtg[:, i], obs[:, i], t[:, i])
        chosen.append(action)
    return torch.stack(chosen, 1)


@pytest.mark.parametrize("mixer", ["mamba", "mamba+mlp"])
@pytest.mark.parametrize("length", [1, 6, 31])  # longer than the context: recurrent acting has no window
def test_decision_mamba_recurrent_step_equals_parallel_forward(mixer, length):
    policy = make(DecisionMamba, mixer, context_length=5)
    rtg, obs, _, t = episode(length)
    chosen = roll_out(policy, rtg, obs, t)
    torch.testing.assert_close(policy(rtg, obs, chosen, t), chosen, rtol=0, atol=1e-10)


@pytest.mark.parametrize("policy_class, mixer, kwargs", [
    (DecisionTransformer, "attention", {}), (DecisionMamba, "mamba", {"recurrent_acting": False})])
def test_sliding_window_step_equals_forward_over_the_last_k_steps(policy_class, mixer, kwargs):
    K, length = 5, 12
    policy = make(policy_class, mixer, context_length=K, **kwargs)
    rtg, obs, _, t = episode(length)
    chosen = roll_out(policy, rtg, obs, t)
    for i in range(length):
        window = slice(max(0, i + 1 - K), i + 1)
        predicted = policy(rtg[:, window], obs[:, window], chosen[:, window], t[:, window])[:, -1]
        torch.testing.assert_close(predicted, chosen[:, i], rtol=0, atol=1e-10)


def test_recurrent_acting_differs_from_the_window_after_k_steps():
    """A test that can fail: the two acting modes agree inside the first window only."""
    recurrent = make(DecisionMamba, "mamba", context_length=4)
    windowed = make(DecisionMamba, "mamba", context_length=4, recurrent_acting=False)
    rtg, obs, _, t = episode(8)
    a, b = roll_out(recurrent, rtg, obs, t), roll_out(windowed, rtg, obs, t)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-10)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-6


def test_image_observations_are_refused():
    with pytest.raises(ValueError, match="vector observations"):
        DecisionTransformer((3, 64, 64), A)


@pytest.mark.parametrize("policy_class, mixer", [(DecisionTransformer, "attention"), (DecisionMamba, "mamba")])
def test_agent_fits_a_return_conditioned_target(policy_class, mixer):
    """Actions that are a function of the return-to-go sign: the MSE falls well below its start."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = policy_class((O,), A, mixer=MIXERS[mixer], embed_dim=32, dropout=0.0, context_length=6)
    agent = ReturnConditionedAgent(policy, A, lr=3e-3, warmup_steps=10)
    losses = []
    for _ in range(150):
        rtg = rng.uniform(-1000, 1000, (16, 6)).astype(np.float32)
        batch = {"returns_to_go": rtg, "obs": rng.normal(size=(16, 6, O)).astype(np.float32),
                 "actions": np.repeat(np.sign(rtg)[..., None], A, -1) * 0.8,
                 "timesteps": np.tile(np.arange(6), (16, 1))}
        losses.append(float(agent.update(batch)["policy/action_mse"]))
    assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:5])
    action, state = agent.act(agent.initial_state(1), np.array([700.0]), np.zeros((1, O)), np.array([0]))
    assert action.shape == (1, A) and np.all(action > 0.5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_update_metrics_live_on_the_agents_device_and_reduce_in_one_transfer(device):
    """The runner stacks every metric of an update into one tensor: one on another device breaks that
    (the learning rate was a CPU tensor: every offline run on a GPU failed at its first train line)."""
    from harness import train_metrics
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    agent = ReturnConditionedAgent(DecisionTransformer((O,), A, mixer=MIXERS["attention"], embed_dim=16,
                                                       context_length=4), A, lr=1e-3, warmup_steps=4).to(device)
    batch = {"returns_to_go": rng.uniform(0, 100, (3, 4)).astype(np.float32),
             "obs": rng.normal(size=(3, 4, O)).astype(np.float32),
             "actions": rng.uniform(-1, 1, (3, 4, A)).astype(np.float32), "timesteps": np.tile(np.arange(4), (3, 1))}
    metrics = {}
    for _ in range(2):
        for key, value in agent.update(batch).items():
            assert value.device.type == torch.device(device).type, key
            metrics.setdefault(key, []).append(value)
    means = train_metrics.mean_on_host(metrics)
    assert means["train/policy/lr"] == pytest.approx(np.mean([1e-3 / 4, 2e-3 / 4]), rel=1e-6)


@pytest.mark.parametrize("policy_class, mixer", [(DecisionTransformer, "attention"), (DecisionMamba, "mamba")])
def test_an_update_on_device_windows_reads_nothing_on_the_host(policy_class, mixer, tmp_path):
    """The offline training step never waits for the GPU: no host read of a tensor (the optimizer's
    own step aside, as for the online agents) and no host copy of the batch, drawn on the device."""
    from harness import datasets
    from tests.agents.test_no_host_sync import forbid_host_reads
    from tests.harness.test_datasets import META, make_episodes
    datasets.write_dataset(tmp_path / "d", make_episodes(lengths=(12, 15)), META)
    windows = datasets.DeviceWindowSampler(datasets.WindowSampler(datasets.read_dataset(tmp_path / "d"), 6), "cpu")
    torch.manual_seed(0)
    agent = ReturnConditionedAgent(policy_class((O,), 1, mixer=MIXERS[mixer], embed_dim=16, context_length=6),
                                   1, lr=1e-3, warmup_steps=4)
    agent.update(windows.sample(8))
    with forbid_host_reads([agent.optimizer]):
        metrics = agent.update(windows.sample(8))
    assert all(value.dim() == 0 for value in metrics.values())


def _windows_batches(count, B=4, K=5, seed=0):
    rng = np.random.default_rng(seed)
    return [{"returns_to_go": rng.uniform(0, 300, (B, K)).astype(np.float32),
             "obs": rng.normal(size=(B, K, O)).astype(np.float32),
             "actions": rng.uniform(-1, 1, (B, K, A)).astype(np.float32),
             "timesteps": np.tile(np.arange(K), (B, 1))} for _ in range(count)]


def test_the_device_warm_up_matches_torchs_lambda_scheduler_on_a_float_rate():
    """Reference twin of the warm-up: AdamW with a Python float rate driven by LambdaLR (the DT code's
    schedule) makes the same updates as the agent's rate tensor computed on the device."""
    lr, warmup = 2e-3, 3
    make_policy = lambda: (torch.manual_seed(0), DecisionTransformer(
        (O,), A, mixer=MIXERS["attention"], embed_dim=16, dropout=0.0, context_length=5))[1]
    agent = ReturnConditionedAgent(make_policy(), A, lr=lr, warmup_steps=warmup, weight_decay=1e-2)
    reference = make_policy()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda u: min((u + 1) / warmup, 1.0))
    rates = []
    for batch in _windows_batches(5):
        rates.append(float(agent.update(batch)["policy/lr"]))
        b = {k: torch.as_tensor(v) for k, v in batch.items()}
        loss = ((reference(b["returns_to_go"], b["obs"], b["actions"], b["timesteps"]) - b["actions"]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.25)
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([lr / 3, 2 * lr / 3, lr, lr, lr], rel=1e-6)
    for mine, theirs in zip(agent.policy.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)
    assert float(agent.updates) == 5


def test_compile_mode_is_resolved_from_the_device_and_checked():
    policy = DecisionTransformer((O,), A, mixer=MIXERS["attention"], embed_dim=16)
    assert ReturnConditionedAgent(policy, A).compile_mode == "none"  # auto on a CPU: eager
    with pytest.raises(ValueError, match="compile"):
        ReturnConditionedAgent(policy, A, compile="fast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy_class, mixer", [(DecisionTransformer, "attention"), (DecisionMamba, "mamba")])
def test_graph_updates_equal_eager_updates(policy_class, mixer):
    """The recorded update (dropout on, warm-up under way) makes the updates of eager execution: the
    same rates, losses and parameters, and a checkpoint taken in graph mode resumes eagerly."""
    runs = {}
    for mode in ("none", "graph"):
        torch.manual_seed(0)
        policy = policy_class((O,), A, mixer=MIXERS[mixer], embed_dim=16, dropout=0.1, context_length=5)
        agent = ReturnConditionedAgent(policy, A, lr=1e-3, warmup_steps=4, compile=mode).to("cuda")
        metrics = [{k: float(v) for k, v in agent.update(b).items()} for b in _windows_batches(6)]
        runs[mode] = (agent, metrics)
    (eager, eager_metrics), (graph, graph_metrics) = runs["none"], runs["graph"]
    assert graph._graph is not None and graph._graph.captured
    for mine, theirs in zip(graph_metrics, eager_metrics):
        assert mine == pytest.approx(theirs, rel=1e-4)
    for mine, theirs in zip(graph.policy.parameters(), eager.policy.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
    resumed = ReturnConditionedAgent(policy_class((O,), A, mixer=MIXERS[mixer], embed_dim=16, context_length=5),
                                     A, lr=1e-3, warmup_steps=4, compile="none").to("cuda")
    resumed.load_state_dict(graph.state_dict())
    assert float(resumed.updates) == 6 and float(resumed.update(_windows_batches(1)[0])["policy/lr"]) == \
        pytest.approx(1e-3)
