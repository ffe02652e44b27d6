"""One binding swaps the world model, and the run knows it (path, run.json, sizes of the model file)."""
import json
import pathlib

import gin
import pytest

from harness import config
from harness import run as run_module
from harness.config import REPO_ROOT
from harness.run_identity import config_bindings

EXPERIMENTS = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "gin").glob("*_noisy.gin"))


def built(gin_files, bindings=()):
    """(experiment, world model built for noisy cartpole, operative bindings but Experiment's)."""
    config.parse(gin_files, bindings)
    experiment = config.make_experiment()
    model = experiment.world_model(obs_shape=(5,), action_dim=1)
    operative = {k: v for k, v in config_bindings(gin.operative_config_str()).items()
                 if not k.startswith("Experiment.")}
    return experiment, model, operative


def shapes(model):
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


@pytest.mark.parametrize("target", EXPERIMENTS)
@pytest.mark.parametrize("source", EXPERIMENTS)
def test_binding_another_model_builds_it_with_its_own_sizes(source, target):
    reference, reference_model, reference_config = built([target])
    factory = type(reference_model).__name__
    swapped, swapped_model, swapped_config = built([source], [f"Experiment.world_model = @{factory}"])
    assert swapped_config == reference_config  # every parameter the model was built with
    assert swapped.method == reference.method == type(reference_model).name
    assert swapped.spec()["world_model"] == reference.spec()["world_model"]
    assert f"/{reference.method}/" in swapped.run_dir().as_posix()
    assert shapes(swapped_model) == shapes(reference_model)


def test_the_readme_command_writes_and_labels_the_swapped_model(tmp_path, capsys):
    status = run_module.main(["--gin", "gin/kalmamba_noisy.gin", "--gin", "gin/quick.gin", "--no-progress",
                              "--bind", "Experiment.world_model = @VRKN", "--bind", "Schedule.total_env_steps = 2000",
                              "--root", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    (run_json,) = pathlib.Path(tmp_path).rglob("run.json")
    assert run_json.relative_to(tmp_path).parts[:2] == ("default", "vrkn")
    info = json.loads(run_json.read_text())
    assert (info["method"], info["world_model"]) == ("vrkn", "models.vrkn.VRKN")
    assert "VRKN.latent_dim = 32" in (run_json.parent / "config.gin").read_text()  # quick.gin's VRKN size
