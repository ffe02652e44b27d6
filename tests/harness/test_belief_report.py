"""Belief metrics of the final eval line: read by harness.records, aggregated like returns
(harness.belief_aggregate) and tabulated by harness.report."""
import json

import numpy as np
import pytest

from harness import aggregate, belief_aggregate, records, report
from tests.harness.test_records import write_run

pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")
TASKS = ("cartpole_swingup", "cheetah_run")
SEEDS = (0, 1)
OFFSETS = np.array([[-0.01, 0.0], [0.0, 0.01]])  # (seed, task): 4 values whose IQM is their mean
BASE = {  # kalmamba's beliefs are constructed better than sac's on every metric; sac has no open loop
    "kalmamba": {"belief/ridge_r2": 0.8, "belief/mlp_r2": 0.9, "belief/mlp_nll": -1.0,
                 "belief/mlp_coverage_1sigma": 0.68, "belief/mlp_coverage_2sigma": 0.95,
                 "belief/open_loop_mse_k1": 0.1, "belief/open_loop_mse_k5": 0.2,
                 "belief/open_loop_mse_k10": 0.3, "belief/open_loop_mse_k25": 0.5},
    "sac": {"belief/ridge_r2": 0.4, "belief/mlp_r2": 0.5, "belief/mlp_nll": 1.0,
            "belief/mlp_coverage_1sigma": 0.5, "belief/mlp_coverage_2sigma": 0.8},
}
COLUMNS = ("Method", "Ridge R²", "MLP R²", "MLP NLL", "MLP 1σ coverage", "MLP 2σ coverage",
           "Open-loop MSE k=1", "Open-loop MSE k=5", "Open-loop MSE k=10", "Open-loop MSE k=25")


def add_belief(run_dir, values):
    """Put `values` (and a list-valued and a null key, both to be skipped) on every eval line; earlier
    eval lines get other numbers, so only the final one may count."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if line["kind"] == "eval"]
    for i, line in enumerate(evals):
        final = i == len(evals) - 1
        line.update({key: value if final else value + 100.0 for key, value in values.items()})
        line.update({"belief/mlp_r2_dims": [0.1, 0.2], "belief/ridge_alpha": None, "nonfinite": ["belief/ridge_alpha"]})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def constructed(method, key):
    """(seeds, tasks) values written for `method`'s `key`."""
    return BASE[method][key] + OFFSETS


def write_results(root):
    for method, returns in (("kalmamba", (300.0, 800.0)), ("sac", (200.0, 500.0))):
        for i, seed in enumerate(SEEDS):
            for j, task in enumerate(TASKS):
                for ctx in (32, 64):  # ctx64: the same runs without belief metrics
                    run_dir = write_run(root, method=method, task=task, seed=seed, context_length=ctx,
                                        suite="missing_state", returns=returns)
                    if ctx == 32:
                        add_belief(run_dir, {k: v + OFFSETS[i, j] for k, v in BASE[method].items()})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_results(root)
    assert report.main([str(root), "--reps", "50", "--out", str(root / "report_a")]) == 0
    assert report.main([str(root), "--reps", "50", "--out", str(root / "report_b")]) == 0
    return root


def test_records_read_the_final_eval_lines_belief_scalars(tmp_path):
    write_results(tmp_path)
    found, excluded = records.load_results(tmp_path)
    assert excluded == []
    with_belief = {(r.method, r.context_length): r.belief for r in found if r.seed == 0 and r.task == TASKS[0]}
    assert with_belief[("sac", 32)] == pytest.approx({k: v - 0.01 for k, v in BASE["sac"].items()})
    assert with_belief[("kalmamba", 32)] == pytest.approx({k: v - 0.01 for k, v in BASE["kalmamba"].items()})
    assert with_belief[("kalmamba", 64)] == {}


def test_belief_iqm_matches_numpy_and_missing_metrics_have_no_estimate(tmp_path):
    write_results(tmp_path)
    result = aggregate.aggregate(tmp_path, reps=50, seed=3)
    groups = {g["context_length"]: g for g in result["groups"]}
    assert "belief" not in groups[64]
    belief = groups[32]["belief"]
    assert belief["metrics"] == [key for key, _ in belief_aggregate.BELIEF_METRICS]
    for key in belief["metrics"]:
        for method in ("kalmamba", "sac"):
            estimate = belief["iqm"][key][method]
            if key not in BASE[method]:
                assert estimate is None
                continue
            values = constructed(method, key)
            direct = np.sort(values.ravel())[1:3].mean()  # IQM of 4 values: the middle two
            assert estimate["point"] == pytest.approx(direct) == pytest.approx(values.mean())
            assert values.min() - 1e-12 <= estimate["low"] <= estimate["point"] <= estimate["high"] <= values.max() + 1e-12
    assert belief["iqm"]["belief/mlp_r2"]["kalmamba"]["low"] > belief["iqm"]["belief/mlp_r2"]["sac"]["high"]


def _belief_table(text):
    lines = text.splitlines()
    start = lines.index("| " + " | ".join(COLUMNS) + " |")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return start, rows, lines


def test_report_has_a_belief_table_with_methods_columns_and_dashes(built):
    text = (built / "report_a" / "leaderboard.md").read_text()
    assert text.count("| " + " | ".join(COLUMNS) + " |") == 1  # ctx32 only: ctx64 has no belief keys
    start, rows, lines = _belief_table(text)
    ctx32, ctx64 = text.index("## exp: missing_state/ctx32"), text.index("## exp: missing_state/ctx64")
    assert ctx32 < text.index("| " + " | ".join(COLUMNS)) < ctx64
    assert [row[0] for row in rows] == ["kalmamba", "sac"]  # leaderboard order: kalmamba's returns are higher
    assert all(len(row) == len(COLUMNS) for row in rows)
    cells = {row[0]: dict(zip(COLUMNS[1:], row[1:])) for row in rows}
    for method in ("kalmamba", "sac"):
        for (key, column) in belief_aggregate.BELIEF_METRICS:
            if key in BASE[method]:
                assert cells[method][column].startswith(f"{constructed(method, key).mean():.3f} [")
            else:
                assert cells[method][column] == "-"
    assert lines[start + 2 + len(rows) + 1] == belief_aggregate.NOTE
    assert "0.683" in belief_aggregate.NOTE and "0.954" in belief_aggregate.NOTE
    assert "MLP 1σ coverage" in (built / "report_a" / "index.html").read_text()


def test_report_bytes_are_identical_for_the_same_records(built):
    for name in ("leaderboard.md", "index.html"):
        assert (built / "report_a" / name).read_bytes() == (built / "report_b" / name).read_bytes()
    assert ((built / "report_a" / "aggregate" / "aggregate.json").read_bytes()
            == (built / "report_b" / "aggregate" / "aggregate.json").read_bytes())
