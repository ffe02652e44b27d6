"""`python -m harness.bench models` on tiny sizes: the table has one row per T, a column per experiment
file, ratios to the first column and the growth line; user errors exit with status 2 and one line."""
import re

import gin
import pytest

from harness import bench
from harness.benchmarks import models as benchmark

QUICK = ["--overlay", "gin/quick.gin", "--repeats", "1", "--warmup", "0", "--threads", "1"]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_table_has_every_experiment_and_length_side_by_side(capsys):
    status = bench.main(["models", "--devices", "cpu", "--lengths", "5", "3", "--batch", "2", "--gin",
                         "gin/vrkn_noisy.gin", "gin/kalmamba_noisy.gin", "--gin", "gin/rssm_noisy.gin", *QUICK])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "| T | vrkn ms | kalmamba ms | rssm ms | kalmamba / vrkn | rssm / vrkn |" in out
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["3", "5"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(float(ms) > 0 for ms in cells[1:4])
        assert all(re.fullmatch(r"\d+\.\dx", ratio) for ratio in cells[4:])
    assert re.search(r"growth from T=3 to T=5: vrkn [\d.]+x, kalmamba [\d.]+x, rssm [\d.]+x", out)


def test_a_column_is_named_by_the_run_label_of_what_was_built(capsys):
    """One binding swaps the model: the column says what was timed, not the file name."""
    status = bench.main(["models", "--devices", "cpu", "--lengths", "3", "--batch", "1", "--gin",
                         "gin/sac_noisy.gin", *QUICK, "--bind", "Experiment.variant = 'x'"])
    assert status == 0
    assert "| T | sac+x ms |" in capsys.readouterr().out


def test_default_experiments_are_the_suites_experiment_files_read_from_gin():
    noisy = benchmark.default_experiments(["noisy_state"])
    assert {"gin/kalmamba_noisy.gin", "gin/rssm_noisy.gin", "gin/vrkn_noisy.gin", "gin/sac_noisy.gin"} <= set(noisy)
    assert "gin/quick.gin" not in noisy and not any("image" in path for path in noisy)
    image = benchmark.default_experiments(["image"])
    assert image and all(path.endswith("_image.gin") for path in image)


def test_max_ms_skips_longer_lengths_of_a_slow_model(capsys):
    status = bench.main(["models", "--devices", "cpu", "--gin", "gin/vrkn_noisy.gin", "--lengths", "3", "4",
                         "--batch", "1", *QUICK, "--max-ms", "0.001"])
    out = capsys.readouterr().out
    assert status == 0
    assert re.search(r"\| 4 \| - \|", out) and "vrkn -" in out


@pytest.mark.parametrize("argv,message", [
    (["--overlay", "gin/does_not_exist.gin"], "gin file not found"),
    (["--gin", "gin/does_not_exist.gin"], "gin file not found"),
    (["--gin", "gin/quick.gin"], "gin/quick.gin does not build an experiment"),
    (["--gin", "gin/sac_noisy.gin", "gin/sac_noisy.gin"], "two experiment files are labelled 'sac'"),
    (["--suites", "pixels"], "no experiment file in gin/ has a suite among ['pixels']"),
    (["--bind", "KalMamba.no_such_parameter = 1"], "no_such_parameter"),
    (["--task", "cartpole_fly"], "cartpole_fly"),
    (["--lengths", "1"], "lengths must be >= 2"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, message):
    try:
        status = bench.main(["models", "--devices", "cpu", "--lengths", "3", *argv])
    except SystemExit as exit:  # argparse's own checks
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_model_only_times_the_world_model_half(capsys):
    status = bench.main(["models", "--devices", "cpu", "--gin", "gin/kalmamba_noisy.gin", "--lengths", "3",
                         "--batch", "1", *QUICK, "--model-only"])
    out = capsys.readouterr().out
    assert status == 0 and "ms per world-model update only" in out
    assert re.search(r"\| 3 \| [\d.]+ \|", out)


def test_model_update_steps_the_world_model_and_leaves_sac_alone():
    import torch

    args = benchmark._parse(["--overlay", "gin/quick.gin", "--lengths", "4", "--batch", "2"])
    shapes = ((5,), False, 1)
    agent = benchmark.Column("gin/vrkn_noisy.gin", args.overlay, args.bind).build_agent(shapes, torch.device("cpu"))
    batch = benchmark.random_batch(2, 4, shapes, torch.device("cpu"), torch.Generator().manual_seed(0))
    model_before = [p.detach().clone() for p in agent.world_model.parameters()]
    sac_before = [p.detach().clone() for p in agent.sac.parameters()]
    agent.update_world_model(batch)
    assert any(not torch.equal(a, b) for a, b in zip(model_before, agent.world_model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(sac_before, agent.sac.parameters()))
