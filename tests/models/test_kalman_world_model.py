"""What KalMamba and VRKN share through `KalmanWorldModel`: keyword-only hyperparameters, the
features SAC sees, the start-step KL weight, the fixed or learned initial mean, and the optimiser
settings each model declares for the agent."""
import functools

import pytest
import torch

from agents.latent_sac import LatentSAC
from agents.sac import SAC
from models import networks
from models.kalmamba import KalMamba
from models.tight_elbo import tight_kl
from models.vrkn import VRKN

SMALL = dict(latent_dim=5, hidden_dim=9,
             encoder_fn=functools.partial(networks.StateEncoder, hidden_dim=12, num_layers=2),
             decoder_fn=functools.partial(networks.StateDecoder, hidden_dim=12, num_layers=1))
KALMAN_MODELS = [KalMamba, VRKN]


def make(cls, seed=0, **overrides):
    torch.manual_seed(seed)
    return cls((4,), 2, **dict(SMALL, **overrides))


def batch(B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[1, 4] = True
    prev_action = 2 * torch.rand(B, T, 2, generator=g, dtype=torch.float64) - 1
    prev_action[is_first] = 0
    return {"obs": torch.randn(B, T, 4, generator=g, dtype=torch.float64), "prev_action": prev_action,
            "reward": torch.randn(B, T, generator=g, dtype=torch.float64), "is_first": is_first}


@pytest.mark.parametrize("cls", KALMAN_MODELS)
def test_hyperparameters_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls((4,), 2, None, None, 5)  # encoder_fn, decoder_fn, latent_dim positionally
    assert make(cls).latent_dim == 5


@pytest.mark.parametrize("cls", KALMAN_MODELS)
def test_features_are_the_filtered_mean_by_default_or_mean_and_log_variance(cls):
    data = batch()
    for choice, dim in (("mean", 5), ("mean_and_log_var", 10)):
        model = make(cls, belief_features=choice).double().eval()
        with torch.no_grad():
            beliefs, _ = model.observe(data["obs"], data["prev_action"], data["is_first"])
        expected = beliefs["mean"] if choice == "mean" else torch.cat([beliefs["mean"], beliefs["var"].log()], -1)
        assert model.feature_dim == dim
        assert torch.equal(model.features(beliefs), expected)
    assert make(cls).belief_features == "mean"
    with pytest.raises(ValueError, match="belief_features"):
        make(cls, belief_features="var")


@pytest.mark.parametrize("cls", KALMAN_MODELS)
def test_start_kl_weight_scales_the_kl_of_restarting_steps_only(cls):
    data = batch()
    losses = {}
    for weight in (1.0, 0.0):
        model = make(cls, free_nats=0.0, start_kl_weight=weight).double().eval()
        losses[weight], metrics, _ = model.loss(data)
    inference = model._infer(data["obs"], data["prev_action"], data["is_first"], None)
    from models.kalman import kalman_smoother
    smoothed = kalman_smoother(inference.filtered, inference.A, inference.b, inference.Q)
    mean0, var0 = model.initial_belief()
    kl = tight_kl(inference.filtered.filtered_var, smoothed.smoothed_mean, smoothed.smoothed_var,
                  inference.A, inference.b, inference.Q, mean0, var0, inference.restart)
    start_kl = (kl * inference.restart).sum() / kl.numel()
    assert start_kl > 0.01
    torch.testing.assert_close(losses[1.0] - losses[0.0], start_kl.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(metrics["model/kl"], kl.mean().detach(), rtol=1e-12, atol=0)  # the bound counts it


@pytest.mark.parametrize("cls", KALMAN_MODELS)
def test_initial_mean_learned_or_a_fixed_zero_buffer(cls):
    fixed = make(cls, learn_initial_mean=False)
    assert "initial_mean" not in dict(fixed.named_parameters()) and "initial_mean" in fixed.state_dict()
    assert torch.equal(fixed.initial_belief()[0], torch.zeros(5))
    learned = make(cls)
    assert dict(learned.named_parameters())["initial_mean"].requires_grad


def test_each_model_brings_its_optimiser_settings_to_the_agent():
    sac = functools.partial(SAC, hidden_dim=8, num_layers=1)
    model = make(VRKN, learning_rate=6e-4, grad_clip=100.0)
    agent = LatentSAC(model, 2, sac=sac)
    assert agent.model_opt.param_groups[0]["lr"] == 6e-4 and agent.model_grad_clip == 100.0
    default = LatentSAC(make(KalMamba), 2, sac=sac)
    assert default.model_opt.param_groups[0]["lr"] == 3e-4 and default.model_grad_clip == 100.0
    override = LatentSAC(make(VRKN, learning_rate=6e-4), 2, sac=sac, model_lr=1e-3, model_grad_clip=5.0)
    assert override.model_opt.param_groups[0]["lr"] == 1e-3 and override.model_grad_clip == 5.0


def test_grad_clipped_metric_is_a_tensor_that_says_whether_the_clip_fired():
    sac = functools.partial(SAC, hidden_dim=8, num_layers=1)
    data = {k: v.float() if v.is_floating_point() else v for k, v in batch().items()}
    for clip, fired in ((1e-6, 1.0), (1e9, 0.0)):
        agent = LatentSAC(make(KalMamba), 2, sac=sac, model_grad_clip=clip)
        metrics, _ = agent.update_world_model(data)
        assert torch.is_tensor(metrics["model/grad_clipped"]) and metrics["model/grad_clipped"].shape == ()
        assert metrics["model/grad_clipped"].item() == fired


@pytest.mark.parametrize("cls", KALMAN_MODELS)
def test_gin_knows_every_inherited_keyword_and_refuses_a_misspelt_one(cls):
    import gin
    name = cls.__name__
    try:
        gin.parse_config(f"{name}.latent_dim = 7\n{name}.start_kl_weight = 0.5")
        model = cls((4,), 2, encoder_fn=SMALL["encoder_fn"], decoder_fn=SMALL["decoder_fn"], hidden_dim=9)
        assert (model.latent_dim, model.start_kl_weight) == (7, 0.5)
        with pytest.raises(ValueError, match="allowlist"):
            gin.parse_config(f"{name}.latent_dims = 7")
    finally:
        gin.clear_config()


@pytest.mark.parametrize("cls", KALMAN_MODELS)
def test_kalman_backend_auto_is_the_scan_on_cpu_and_a_wrong_name_is_refused(cls):
    model = make(cls)
    assert model.kalman_backend == "auto" and model._kalman_backend(torch.zeros(1)) == "scan"
    assert make(cls, kalman_backend="sequential")._kalman_backend(torch.zeros(1)) == "sequential"
    with pytest.raises(ValueError, match="kalman_backend"):
        make(cls, kalman_backend="parallel")
