"""Withheld observations (obs_valid False) through the `WorldModel` contract, for every model of
tests/models/model_table.py (plus RSSM with its validity input and Identity with its flag feature):
a withheld observation changes nothing, observe equals successive steps and chunks, an all-valid
mask equals no mask, the Kalman models skip the update, and the loss takes no gradient from a
withheld observation."""
import pytest
import torch

from tests.models import model_table
from tests.models.test_world_models import ACTION_DIM, assert_beliefs_equal, make_sequence

FLAGS = {"rssm": {"obs_valid_input": True}, "identity": {"obs_valid_feature": True}}
CASES = [(name, shape, {}) for name, shape in model_table.cases()] + \
        [(name, shape, FLAGS[name]) for name, shape in model_table.cases() if name in FLAGS]
IDS = [f"{name}-{shape}" + ("-flag" if flags else "") for name, shape, flags in CASES]


def make_model(name, shape_name, flags, seed=0):
    torch.manual_seed(seed)
    return model_table.build(name, shape_name, ACTION_DIM, **flags)


def make_valid(B=3, T=7):
    """Missing runs mid-sequence, at step 0, and at an episode start (make_sequence resets (2, 5))."""
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[0, 2:5] = False
    valid[1, 0] = valid[1, 4] = False
    valid[2, 5:] = False
    return valid


def replace_withheld(seq, valid, seed=9):
    """obs with new values wherever valid is False."""
    g = torch.Generator().manual_seed(seed)
    obs = seq["obs"].clone()
    if obs.dtype == torch.uint8:
        other = torch.randint(0, 256, obs.shape, dtype=torch.uint8, generator=g)
    else:
        other = 5 * torch.randn(obs.shape, generator=g, dtype=obs.dtype)
    obs[~valid] = other[~valid]
    return obs


@pytest.mark.parametrize("name,shape_name,flags", CASES, ids=IDS)
def test_a_withheld_observation_changes_nothing(name, shape_name, flags):
    model = make_model(name, shape_name, flags).double().eval()
    seq, valid = make_sequence(shape_name), make_valid()
    with torch.no_grad():
        beliefs, last = model.observe(seq["obs"], seq["prev_action"], seq["is_first"], obs_valid=valid)
        other, other_last = model.observe(replace_withheld(seq, valid), seq["prev_action"], seq["is_first"],
                                          obs_valid=valid)
        valid_changed = seq["obs"].clone()
        valid_changed[0, 0] = valid_changed[0, 1]  # a valid step's observation must matter
        changed, _ = model.observe(valid_changed, seq["prev_action"], seq["is_first"], obs_valid=valid)
    assert_beliefs_equal(other, beliefs, atol=0)
    assert_beliefs_equal(other_last, last, atol=0)
    assert not torch.equal(model.features(changed)[0, 0], model.features(beliefs)[0, 0])


@pytest.mark.parametrize("name,shape_name,flags", CASES, ids=IDS)
def test_observe_with_withheld_observations_equals_steps_and_chunks(name, shape_name, flags):
    model = make_model(name, shape_name, flags).double().eval()
    seq, valid = make_sequence(shape_name), make_valid()
    obs, act, first = seq["obs"], seq["prev_action"], seq["is_first"]
    with torch.no_grad():
        whole, whole_last = model.observe(obs, act, first, obs_valid=valid)
        state, steps = model.initial_state(3), []
        for t in range(7):
            state = model.step(obs[:, t], act[:, t], first[:, t], state, obs_valid=valid[:, t])
            steps.append(state)
        head, head_last = model.observe(obs[:, :3], act[:, :3], first[:, :3], obs_valid=valid[:, :3])
        tail, _ = model.observe(obs[:, 3:], act[:, 3:], first[:, 3:], state=head_last, obs_valid=valid[:, 3:])
    assert_beliefs_equal({k: torch.stack([s[k] for s in steps], 1) for k in whole}, whole, atol=1e-10)
    assert_beliefs_equal(state, whole_last, atol=1e-10)
    assert_beliefs_equal({k: torch.cat([head[k], tail[k]], 1) for k in whole}, whole, atol=1e-12)


@pytest.mark.parametrize("name,shape_name,flags", CASES, ids=IDS)
def test_all_valid_equals_no_mask(name, shape_name, flags):
    model = make_model(name, shape_name, flags).double()
    seq = make_sequence(shape_name)
    all_valid = torch.ones_like(seq["is_first"])
    model.eval()
    with torch.no_grad():
        plain, _ = model.observe(seq["obs"], seq["prev_action"], seq["is_first"])
        masked, _ = model.observe(seq["obs"], seq["prev_action"], seq["is_first"], obs_valid=all_valid)
    assert_beliefs_equal(masked, plain, atol=1e-12)
    model.train()
    torch.manual_seed(5)
    plain_loss = model.loss(seq)[0]
    torch.manual_seed(5)
    masked_loss = model.loss(dict(seq, obs_valid=all_valid))[0]
    torch.testing.assert_close(masked_loss, plain_loss, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["kalmamba", "vrkn"])
def test_kalman_models_skip_the_update_where_the_observation_is_withheld(name):
    model = make_model(name, "state", {}).double().eval()
    seq, valid = make_sequence("state"), make_valid()
    with torch.no_grad():
        filtered = model._infer(seq["obs"], seq["prev_action"], seq["is_first"], None, valid).filtered
    for predicted, posterior in ((filtered.predicted_mean, filtered.filtered_mean),
                                 (filtered.predicted_var, filtered.filtered_var)):
        torch.testing.assert_close(posterior[~valid], predicted[~valid], rtol=0, atol=1e-12)  # float64, parallel scan
        assert (posterior[valid] != predicted[valid]).all()
    assert (filtered.filtered_var[valid] < filtered.predicted_var[valid]).all()


@pytest.mark.parametrize("name,flags", [(name, {}) for name in ("kalmamba", "vrkn", "rssm")] + [("rssm", FLAGS["rssm"])])
def test_the_loss_takes_no_gradient_from_a_withheld_observation(name, flags):
    model = make_model(name, "state", flags).double().train()
    seq, valid = make_sequence("state"), make_valid()
    obs = seq["obs"].clone().requires_grad_(True)
    loss, metrics, _ = model.loss(dict(seq, obs=obs, obs_valid=valid))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in metrics.values())
    assert torch.equal(obs.grad[~valid], torch.zeros_like(obs.grad[~valid]))
    assert (obs.grad[valid].abs().sum(-1) > 0).all()


def test_validity_inputs_of_rssm_and_identity():
    rssm = make_model("rssm", "state", {})
    flagged = make_model("rssm", "state", FLAGS["rssm"])
    first_layer = lambda m: m.posterior_head.net[0].in_features  # noqa: E731
    assert first_layer(flagged) == first_layer(rssm) + 1  # the default keeps the old parameter shapes
    identity = make_model("identity", "state", FLAGS["identity"])
    obs = torch.arange(10, dtype=torch.float32).reshape(2, 5) + 1
    belief = identity.step(obs, torch.zeros(2, ACTION_DIM), torch.ones(2, dtype=torch.bool), None,
                           obs_valid=torch.tensor([True, False]))
    assert identity.feature_dim == 6
    torch.testing.assert_close(identity.features(belief), torch.tensor([[1, 2, 3, 4, 5, 1.0], [0, 0, 0, 0, 0, 0]]))


@pytest.mark.parametrize("name", ["kalmamba", "vrkn", "rssm"])
def test_bad_obs_valid_gives_one_clear_error(name):
    model = make_model(name, "state", {})
    seq = make_sequence("state", dtype=torch.float32)
    for bad in (torch.ones(3, 6, dtype=torch.bool), torch.ones(3, 7), [[True] * 7] * 3):
        with pytest.raises(ValueError, match="obs_valid must be a bool tensor"):
            model.observe(seq["obs"], seq["prev_action"], seq["is_first"], obs_valid=bad)
