"""Every shipped gin file parses together with gin/quick.gin: experiments (top-level files that
include gin/base.gin) build their Experiment, world model and agent; overlays (the other top-level
files) apply on top of an experiment; fragments (base.gin and the files in subfolders) parse.
Nothing here reads a model from a file name (model names may hold underscores): the method is the
`name` of the world model the experiment builds."""
import subprocess
import sys

import gin
import pytest
import torch

from harness import config
from models.world_model import WorldModel

GIN_DIR = config.REPO_ROOT / "gin"
TOP_LEVEL = sorted(p for p in GIN_DIR.glob("*.gin") if p.name != "base.gin")
EXPERIMENT_FILES = [p.relative_to(config.REPO_ROOT).as_posix() for p in TOP_LEVEL
                    if "include 'gin/base.gin'" in p.read_text()]
OVERLAYS = [p.relative_to(config.REPO_ROOT).as_posix() for p in TOP_LEVEL
            if "include 'gin/base.gin'" not in p.read_text()]
FRAGMENTS = sorted(p.relative_to(config.REPO_ROOT).as_posix() for p in GIN_DIR.rglob("*.gin")
                   if p.parent != GIN_DIR or p.name == "base.gin")
ALL_FILES = sorted(p.relative_to(config.REPO_ROOT).as_posix() for p in GIN_DIR.rglob("*.gin"))
MODEL_EXPERIMENTS = [f"gin/{model}_{suite}.gin" for model in ("kalmamba", "rssm", "vrkn")
                     for suite in ("noisy", "image", "missing_state", "occluded_image")]
# SAC's Identity takes vector observations only: it has no image-suite experiments.
SAC_EXPERIMENTS = ["gin/sac_noisy.gin", "gin/sac_missing_state.gin"]
# Shapes of the suites' cartpole observations, without building an environment.
OBS_SHAPE = {"noisy_state": (5,), "missing_state": (5,), "image": (3, 64, 64), "occluded_image": (3, 64, 64)}
IMAGE_SUITES = ("image", "occluded_image")


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_the_model_experiments_are_shipped():
    assert set(MODEL_EXPERIMENTS + SAC_EXPERIMENTS) <= set(EXPERIMENT_FILES)
    assert "gin/quick.gin" in OVERLAYS


@pytest.mark.parametrize("path", EXPERIMENT_FILES)
def test_experiment_file_parses_with_quick_and_builds_its_experiment(path):
    config.parse([path, "gin/quick.gin"])
    experiment = config.make_experiment()
    spec = experiment.spec()
    assert spec["method"] == experiment.world_model.name  # declared by the bound class
    assert spec["suite"] in OBS_SHAPE and spec["context_length"] == 32


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_applies_on_top_of_an_experiment(overlay):
    config.parse(["gin/kalmamba_noisy.gin", overlay, "gin/quick.gin"])
    assert config.make_experiment().method == "kalmamba"


@pytest.mark.parametrize("path", FRAGMENTS)
def test_fragment_parses_with_quick(path):
    """Fragments (base, suites, models) are not complete experiments: they only have to parse."""
    config.parse([path, "gin/quick.gin"])


@pytest.mark.parametrize("path", EXPERIMENT_FILES)
def test_experiment_builds_the_bound_world_model_with_the_suite_networks(path):
    config.parse([path, "gin/quick.gin"])
    experiment = config.make_experiment()
    obs_shape = OBS_SHAPE[experiment.suite]
    model = experiment.world_model(obs_shape=obs_shape, action_dim=1)
    assert isinstance(model, WorldModel)
    assert model.name == experiment.method  # the run is labelled by what was built
    if hasattr(model, "encoder"):  # models that learn a representation use the suite's networks
        expected_encoder = "ImageEncoder" if experiment.suite in IMAGE_SUITES else "StateEncoder"
        assert type(model.encoder).__name__ == expected_encoder
    agent = experiment.agent(world_model=model, action_dim=1)
    state = agent.initial_state(1)
    obs = torch.zeros(1, *obs_shape, dtype=torch.uint8 if experiment.suite in IMAGE_SUITES else torch.float32)
    action, _ = agent.act(state, obs.numpy(), torch.zeros(1, 1).numpy(), [True])
    assert action.shape == (1, 1)
    if experiment.suite == "missing_state":  # the flag reaches the model as it acts
        _, state = agent.act(state, obs.numpy(), action, [False], obs_valid=[False])
        assert torch.isfinite(model.features(state)).all()


@pytest.mark.parametrize("model", ["kalmamba", "vrkn", "rssm"])
def test_quick_overlay_shrinks_the_world_model(model):
    """The model's own parameters (not the shared encoder, decoder and reward head) shrink."""
    config.parse([f"gin/{model}_noisy.gin"])
    full = config.make_experiment().world_model(obs_shape=(5,), action_dim=1)
    config.parse([f"gin/{model}_noisy.gin", "gin/quick.gin"])
    quick = config.make_experiment().world_model(obs_shape=(5,), action_dim=1)

    def own_size(m):
        shared = ("encoder.", "decoder.", "reward_head.")
        return sum(p.numel() for name, p in m.named_parameters() if not name.startswith(shared))

    assert own_size(quick) < own_size(full) / 4


def test_switching_the_model_is_one_binding():
    config.parse(["gin/kalmamba_noisy.gin", "gin/quick.gin"], ["Experiment.world_model = @VRKN"])
    model = config.make_experiment().world_model(obs_shape=(5,), action_dim=1)
    assert type(model).__name__ == "VRKN"


# quick.gin binds SAC.* but relies on the experiment file before it for `import agents.sac`.
@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_FILES)
def test_gin_file_imports_what_it_binds(path):
    """In a fresh interpreter, with only the harness's own configurables registered: the harness keeps
    no list of model modules, so a file that binds a configurable must import its module."""
    code = f"from harness import config\nconfig.parse([{path!r}])\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=config.REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
