"""The paper's ablations as gin overlays: each file under gin/ablations/ is one world-model binding
plus `Experiment.variant = '<file name>'`, so a sweep runs it as its own leaderboard row; and the
authors' protocol choices the model gin files bind reach the built models."""
import re

import gin
import pytest

from harness import config

ABLATIONS = sorted((config.REPO_ROOT / "gin" / "ablations").glob("*.gin"))
BINDING = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=", re.MULTILINE)


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_the_papers_three_ablations_are_shipped():
    assert {"no_mamba", "no_regulariser", "no_mc_dropout"} <= {p.stem for p in ABLATIONS}


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.stem)
def test_ablation_is_one_binding_and_its_variant_label(path):
    bindings = BINDING.findall(path.read_text())
    assert len(bindings) == 2 and "Experiment.variant" in bindings, bindings
    config.parse(["gin/kalmamba_noisy.gin", path.relative_to(config.REPO_ROOT).as_posix(), "gin/quick.gin"])
    experiment = config.make_experiment()
    assert experiment.variant == path.stem and experiment.label == f"kalmamba+{path.stem}"
    baseline = _bound_kalmamba(["gin/kalmamba_noisy.gin", "gin/quick.gin"])
    ablated = _bound_kalmamba(["gin/kalmamba_noisy.gin", path.relative_to(config.REPO_ROOT).as_posix(), "gin/quick.gin"])
    changed = {key for key in ablated if ablated[key] != baseline.get(key)}
    assert len(changed) == 1, changed  # exactly one model setting differs from the full model


def _bound_kalmamba(files):
    config.parse(files)
    return {key: value for (scope, name), values in gin.config._CONFIG.items() if name.endswith("KalMamba")
            for key, value in values.items()}


def test_model_files_bind_the_authors_protocol():
    from models.kalmamba import KalMamba
    from models.rssm import RSSM
    from models.vrkn import VRKN
    config.parse(["gin/vrkn_noisy.gin", "gin/quick.gin"])
    vrkn, rssm, kalmamba = VRKN((5,), 1), RSSM((5,), 1), KalMamba((5,), 1)
    assert (vrkn.start_kl_weight, vrkn.learning_rate, vrkn.grad_clip) == (0.0, 6e-4, 100.0)
    assert "initial_mean" not in dict(vrkn.named_parameters())
    assert (rssm.sample_when_acting, rssm.learning_rate, rssm.grad_clip) == (True, 3e-4, 10.0)
    assert (kalmamba.regulariser_reduction, kalmamba.detach_backbone_input, kalmamba.belief_features) == (
        "mean", False, "mean")
