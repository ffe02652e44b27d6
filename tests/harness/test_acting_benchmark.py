"""`python -m harness.bench acting` prints one row per policy gin file."""
from harness import bench


def test_acting_benchmark_table(capsys):
    assert bench.main(["acting", "--overlay", "gin/offline/quick.gin", "--steps", "30", "--device", "cpu"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| decision")]
    assert [row.split("|")[1].strip() for row in rows] == ["decision_transformer", "decision_mamba"]
    assert all(float(cell) > 0 for row in rows for cell in row.split("|")[3:6])


def test_acting_benchmark_bad_gin_exits_2(capsys):
    assert bench.main(["acting", "--gin", "gin/offline/no_such.gin"]) == 2
    assert "no_such" in capsys.readouterr().err
