"""`python -m harness.bench models` on tiny sizes: the table has one row per T, a column per model,
ratios to KalMamba and the growth line; user errors exit with status 2 and one line."""
import re

import gin
import pytest

from harness import bench


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_table_has_every_model_and_length_side_by_side(capsys):
    status = bench.main(["models", "--devices", "cpu", "--lengths", "5", "3", "--batch", "2", "--gin",
                         "gin/quick.gin", "--repeats", "1", "--warmup", "0", "--threads", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "| T | kalmamba ms | rssm ms | vrkn ms | rssm / kalmamba | vrkn / kalmamba |" in out
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["3", "5"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(float(ms) > 0 for ms in cells[1:4])
        assert all(re.fullmatch(r"\d+\.\dx", ratio) for ratio in cells[4:])
    assert re.search(r"growth from T=3 to T=5: kalmamba [\d.]+x, rssm [\d.]+x, vrkn [\d.]+x", out)


def test_max_ms_skips_longer_lengths_of_a_slow_model(capsys):
    status = bench.main(["models", "--devices", "cpu", "--models", "vrkn", "--lengths", "3", "4", "--batch", "1",
                         "--gin", "gin/quick.gin", "--repeats", "1", "--warmup", "0", "--max-ms", "0.001"])
    out = capsys.readouterr().out
    assert status == 0
    assert re.search(r"\| 4 \| - \|", out) and "vrkn -" in out


@pytest.mark.parametrize("argv,message", [
    (["--gin", "gin/does_not_exist.gin"], "gin file not found"),
    (["--bind", "KalMamba.no_such_parameter = 1"], "no_such_parameter"),
    (["--task", "cartpole_fly"], "cartpole_fly"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, message):
    assert bench.main(["models", "--devices", "cpu", "--lengths", "3", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_model_only_times_the_world_model_half(capsys):
    status = bench.main(["models", "--devices", "cpu", "--models", "kalmamba", "--lengths", "3", "--batch", "1",
                         "--gin", "gin/quick.gin", "--repeats", "1", "--warmup", "0", "--model-only"])
    out = capsys.readouterr().out
    assert status == 0 and "ms per world-model update only" in out
    assert re.search(r"\| 3 \| [\d.]+ \|", out)


def test_model_update_steps_the_world_model_and_leaves_sac_alone():
    import torch

    from harness.benchmarks import models as benchmark

    args = benchmark._parse(["--gin", "gin/quick.gin", "--lengths", "4", "--batch", "2"])
    shapes = ((5,), False, 1)
    agent = benchmark._build_agent(args, "noisy_state", shapes, torch.device("cpu"), "vrkn")
    batch = benchmark.random_batch(2, 4, shapes, torch.device("cpu"), torch.Generator().manual_seed(0))
    model_before = [p.detach().clone() for p in agent.world_model.parameters()]
    sac_before = [p.detach().clone() for p in agent.sac.parameters()]
    agent.update_world_model(batch)
    assert any(not torch.equal(a, b) for a, b in zip(model_before, agent.world_model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(sac_before, agent.sac.parameters()))
