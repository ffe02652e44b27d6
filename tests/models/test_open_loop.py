"""`reconstruct` and `predict` (models.world_model) for every model of tests/models/model_table.py:
shapes, the decoder of the features' latent, one predicted step against the model's own transition
code, and no random numbers drawn in eval mode. Float64, tolerance 1e-10."""
import pytest
import torch

from models import networks
from models.kalman import kalman_predict
from tests.models import model_table
from tests.models.model_table import SHAPES
from tests.models.test_world_models import ACTION_DIM, make_model, make_sequence

LEARNED = model_table.cases(learned_only=True)
ATOL = 1e-10


def filtered(model, shape_name, T=6):
    """(beliefs (B, T, ...), last state (B, ...)) of an eval-mode float64 model, resets mid-sequence."""
    seq = make_sequence(shape_name, T=T)
    return model.observe(seq["obs"], seq["prev_action"], seq["is_first"])


def actions(B, K, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(B, K, ACTION_DIM, generator=g, dtype=torch.float64) - 1


@pytest.mark.parametrize("name,shape_name", LEARNED)
def test_shapes(name, shape_name):
    model = make_model(name, shape_name).double().eval()
    beliefs, last = filtered(model, shape_name, T=6)
    obs_shape = SHAPES[shape_name]
    assert model.reconstruct(beliefs).shape == (3, 6, *obs_shape)
    assert model.reconstruct(last).shape == (3, *obs_shape)
    assert model.predict(last, actions(3, 5)).shape == (3, 5, *obs_shape)


@pytest.mark.parametrize("name,shape_name", LEARNED)
def test_reconstruct_is_the_decoder_of_the_features(name, shape_name):
    """Every model's features hold the latent its decoder reads (Kalman: the filtered mean; RSSM:
    concat(deter, posterior mean)), so reconstruct == decoder(features)."""
    model = make_model(name, shape_name).double().eval()
    beliefs, _ = filtered(model, shape_name)
    torch.testing.assert_close(model.reconstruct(beliefs), model.decoder(model.features(beliefs)),
                               rtol=0, atol=ATOL)


def one_step_prior_latent(model, state, action):
    """The latent the model's own transition code predicts for the next step, without `predict`."""
    if model.name == "rssm":
        # `step` computes the prior before it looks at the observation: any observation will do
        obs = torch.zeros(state["deter"].shape[0], *model.obs_shape, dtype=torch.float64)
        if len(model.obs_shape) == 3:
            obs = obs.to(torch.uint8)
        after = model.step(obs, action, torch.zeros(obs.shape[0], dtype=torch.bool), state)
        return torch.cat([after["deter"], after["prior_mean"]], dim=-1)
    source = state["m"] if model.name == "kalmamba" else state["mean"]  # VRKN's GRU reads the mean
    mean, _ = kalman_predict(state["mean"], state["var"], *model.transition(source, action))
    return mean


@pytest.mark.parametrize("name,shape_name", LEARNED)
def test_one_step_prediction_decodes_the_models_prior(name, shape_name):
    model = make_model(name, shape_name).double().eval()
    _, last = filtered(model, shape_name)
    a = actions(3, 1)
    expected = model.decoder(one_step_prior_latent(model, last, a[:, 0]))
    torch.testing.assert_close(model.predict(last, a)[:, 0], expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name,shape_name", [c for c in LEARNED if c[1] == "state"])
def test_prediction_is_causal_in_the_actions(name, shape_name):
    """Step k depends on actions up to k only: a longer horizon extends a shorter one."""
    model = make_model(name, shape_name).double().eval()
    _, last = filtered(model, shape_name)
    a = actions(3, 5)
    changed = a.clone()
    changed[:, 3:] = -changed[:, 3:]
    long, other = model.predict(last, a), model.predict(last, changed)
    torch.testing.assert_close(model.predict(last, a[:, :3]), long[:, :3], rtol=0, atol=ATOL)
    torch.testing.assert_close(other[:, :3], long[:, :3], rtol=0, atol=ATOL)
    assert not torch.allclose(other[:, 4], long[:, 4]), "the actions did not reach the prediction"


@pytest.mark.parametrize("name,shape_name", LEARNED)
def test_eval_mode_draws_no_random_numbers(name, shape_name):
    """RSSM samples its carried latent when acting by default: predict and reconstruct must not,
    or filming an eval episode would change the episodes after it."""
    model = make_model(name, shape_name, **({"sample_when_acting": True} if name == "rssm" else {}))
    model = model.double().eval()
    beliefs, last = filtered(model, shape_name)
    rng = torch.get_rng_state()
    first = model.predict(last, actions(3, 4)), model.reconstruct(beliefs)
    second = model.predict(last, actions(3, 4)), model.reconstruct(beliefs)
    assert torch.equal(torch.get_rng_state(), rng)
    for x, y in zip(first, second):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", ["kalmamba", "vrkn"])
def test_predict_needs_a_filtered_state_and_actions_of_the_right_shape(name):
    model = make_model(name, "state").double().eval()
    _, last = filtered(model, "state")
    with pytest.raises(ValueError, match="initial state"):
        model.predict(model.initial_state(3), actions(3, 2))
    with pytest.raises(ValueError, match="actions must have shape"):
        model.predict(last, actions(3, 2)[:, :, :1])
    with pytest.raises(ValueError, match="actions must have shape"):
        model.predict(last, actions(3, 0))


def test_identity_has_no_observation_model():
    model = make_model("identity", "state")
    _, last = filtered(model, "state")
    assert model.reconstruct(last) is None and model.predict(last, actions(3, 2)) is None


def test_image_to_uint8_inverts_the_preprocessing():
    images = torch.arange(256, dtype=torch.int64).to(torch.uint8).reshape(4, 64)
    assert torch.equal(networks.image_to_uint8(networks.preprocess_obs(images)), images)
    assert torch.equal(networks.image_to_uint8(torch.tensor([-0.9, 0.9])), torch.tensor([0, 255], dtype=torch.uint8))
