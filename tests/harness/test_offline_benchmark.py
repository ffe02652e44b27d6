"""`python -m harness.bench offline` prints one row per policy, way of drawing windows and execution
mode (CUDA graphs only on CUDA)."""
from harness import bench

TINY = ["--overlay", "gin/offline/quick.gin", "--updates", "3", "--episodes", "3", "--episode-length", "30",
        "--obs-dim", "5", "--action-dim", "1", "--device", "cpu"]


def test_offline_benchmark_table(capsys):
    assert bench.main(["offline", *TINY]) == 0
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| decision")]
    assert [row[:3] for row in rows] == [[policy, windows, "none"] for policy in ("decision_transformer", "decision_mamba")
                                         for windows in ("host (numpy)", "device")]
    assert all(row[3:5] == ["8", "20"] for row in rows)  # quick.gin's batch, base.gin's K
    assert all(float(row[5]) > 0 and float(row[6]) > 0 for row in rows)


def test_offline_benchmark_bad_gin_exits_2(capsys):
    assert bench.main(["offline", "--gin", "gin/offline/no_such.gin"]) == 2
    assert "no_such" in capsys.readouterr().err
