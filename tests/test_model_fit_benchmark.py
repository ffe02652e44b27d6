"""`python -m harness.bench model-fit` end to end at plumbing size: one table row per variant, the
regulariser-off row as the reference, and a clear error for a bad binding."""
import re

import gin
import pytest

from harness import bench


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


@pytest.mark.slow
def test_prints_one_row_per_variant(capsys):
    status = bench.main(["model-fit", "--gin", "gin/quick.gin", "--updates", "2", "--train-episodes", "1",
                         "--heldout-episodes", "1", "--variants", "no_regulariser", "sum_reduction",
                         "--trace-every", "1"])
    out = capsys.readouterr().out
    assert status == 0
    rows = [line for line in out.splitlines() if re.match(r"\| (no_regulariser|sum_reduction) \| -", line)]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "+0.00"
    assert float(rows[1].split("|")[2]) < 0  # an ELBO per step in nats
    trace = [line.split("|")[1:4] for line in out.splitlines() if re.match(r"\| \w+ \| \d+ \|", line)]
    assert [(name.strip(), int(updates)) for name, updates, _ in trace] == [
        ("no_regulariser", 1), ("no_regulariser", 2), ("sum_reduction", 1), ("sum_reduction", 2)]
    assert all(float(elbo) < 0 for _, _, elbo in trace)


def test_bad_binding_is_one_line_and_status_2(capsys):
    assert bench.main(["model-fit", "--bind", "KalMamba.no_such_thing = 1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
