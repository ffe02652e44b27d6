"""Graph mode (`LatentSAC.compile = 'graph'`) against eager mode on a GPU: same updates, same acting.

Two agents start from the same weights; one runs eagerly, the other records its update and acting
step as CUDA graphs (after two eager warm-up calls each) and replays them. Both see the same batches
with the generator reseeded before each call, so they draw the same random numbers, and their
metrics agree to float32 round-off: rtol = atol = 1e-4 per update (kernels such as index-add
backward are not bitwise deterministic, and differences grow over updates). Weights are compared
after the updates to atol 1e-3: Adam moves a weight by up to its learning rate (3e-4 to 1e-3 here)
per step whatever the gradient's size, so a near-zero gradient whose sign differs by round-off moves
that weight by about 2 lr (measured: one of 51,200 decoder weights off by 1.1e-4 with the Triton
Kalman kernels, everything else within 2e-6).
"""
import copy

import numpy as np
import pytest
import torch

from agents.latent_sac import LatentSAC
from agents.sac import SAC
from tests.agents.test_no_host_sync import _batch
from tests.models import model_table

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOLERANCE = dict(rtol=1e-4, atol=1e-4)
WEIGHT_TOLERANCE = dict(rtol=1e-4, atol=1e-3)
UPDATES = 6  # two warm-up calls, the capturing call, three replays


def _twins(name, shape_name, action_dim=2):
    torch.manual_seed(0)
    model = model_table.build(name, shape_name, action_dim)
    sac = lambda **kw: SAC(hidden_dim=32, num_layers=2, **kw)
    eager = LatentSAC(model, action_dim, sac=sac, compile="none")
    if shape_name == "state":
        eager.fit_obs_normaliser(np.random.default_rng(0).normal(size=(50, *model_table.SHAPES[shape_name])))
    graph = copy.deepcopy(eager)
    graph.compile = "graph"
    return eager.to("cuda"), graph.to("cuda")


@pytest.mark.parametrize("name,shape_name", model_table.cases(learned_only=True))
def test_graph_updates_equal_eager_updates(name, shape_name):
    eager, graph = _twins(name, shape_name)
    assert graph.compile_mode == "graph" and eager.compile_mode == "none"
    for k in range(UPDATES):
        batch = _batch(shape_name, B=4, T=9)
        batch["reward"] = batch["reward"] + k  # a different batch each time
        results = []
        for agent in (eager, graph):
            torch.manual_seed(100 + k)
            results.append({key: value.item() for key, value in agent.update(batch).items()})
        assert results[0].keys() == results[1].keys()
        for key in results[0]:
            torch.testing.assert_close(results[1][key], results[0][key], **TOLERANCE, msg=f"update {k}: {key}")
    assert any(call.captured for call in graph._graphs.values())
    for (name_e, p_e), (name_g, p_g) in zip(eager.world_model.named_parameters(), graph.world_model.named_parameters()):
        torch.testing.assert_close(p_g, p_e, **WEIGHT_TOLERANCE, msg=name_e)


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("name,shape_name", model_table.cases())
def test_graph_acting_equals_eager_acting(name, shape_name, deterministic):
    eager, graph = _twins(name, shape_name)
    states = [agent.initial_state(1) for agent in (eager, graph)]
    for t in range(6):
        step = _batch(shape_name, B=1, T=2)
        obs, prev_action, is_first = step["obs"][:, 0], step["prev_action"][:, 0], [t == 0]
        actions = []
        for i, agent in enumerate((eager, graph)):
            torch.manual_seed(t)
            action, states[i] = agent.act(states[i], obs, prev_action, is_first, deterministic)
            actions.append(action)
        np.testing.assert_allclose(actions[1], actions[0], **TOLERANCE)
        for key in states[0]:
            torch.testing.assert_close(states[1][key], states[0][key], **TOLERANCE)
    # the returned belief is the agent's to keep: a later step does not overwrite it
    kept = {key: value.clone() for key, value in states[1].items()}
    graph.act(graph.initial_state(1), obs, prev_action, [True], deterministic)
    for key in kept:
        torch.testing.assert_close(states[1][key], kept[key], rtol=0, atol=0)


def test_loading_a_checkpoint_after_capture_drops_the_graphs_and_matches_eager():
    eager, graph = _twins("kalmamba", "state")
    for k in range(4):
        torch.manual_seed(k)
        graph.update(_batch("state", B=4, T=9))
    assert graph._graphs
    state = copy.deepcopy(graph.state_dict())
    assert state["model_opt"]["state"][0]["step"].device.type == "cuda"  # a device counter in graph mode
    eager.load_state_dict(copy.deepcopy(state))
    graph.load_state_dict(state)
    assert not graph._graphs
    for k in range(4):
        results = []
        for agent in (eager, graph):
            torch.manual_seed(10 + k)
            results.append({key: v.item() for key, v in agent.update(_batch("state", B=4, T=9)).items()})
        for key in results[0]:
            torch.testing.assert_close(results[1][key], results[0][key], **TOLERANCE, msg=f"update {k}: {key}")
