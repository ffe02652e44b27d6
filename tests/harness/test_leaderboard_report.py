"""The leaderboard report (`make leaderboard`): from synthetic records of known answer, run twice,
byte-identical; failed and diverged runs listed with their reason; the paper-claim verdicts; GPU
hours, machines, wall clock, planned-run coverage, context lengths side by side; --into and
--allow-empty."""
import json
import pathlib
import re

import pytest

from harness import report
from tests.harness.test_records import write_run

pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")  # arch, via rliable
TASKS = ("cartpole_swingup", "walker_walk")
H100 = {"hostname": "h1", "platform": "Linux", "cpu_model": "AMD EPYC", "cpu_count": 16, "torch": "2.11.0",
        "cuda_device": "NVIDIA H100 80GB HBM3"}
DOC = "# My leaderboard\n\nHand-written text.\n\n<!-- report:begin -->\nstale tables\n<!-- report:end -->\n\nTail.\n"


def claim(id_, x, y, expect, experiment="noisy", x_ctx=32, y_ctx=32, margin=None):
    return {"id": id_, "claim": f"claim {id_}", "source": "test", "experiment": experiment, "suite": "noisy_state",
            "x": {"method": x, "context_length": x_ctx}, "y": {"method": y, "context_length": y_ctx},
            "expect": expect, **({"margin": margin} if margin is not None else {})}


# id -> the verdict the records below are built to give
CLAIMS = {
    "kalmamba-above-rssm": (claim("kalmamba-above-rssm", "kalmamba", "rssm", "x_better"), "agree"),
    "rssm-above-kalmamba": (claim("rssm-above-kalmamba", "rssm", "kalmamba", "x_better"), "disagree"),
    "vrkn-below-rssm": (claim("vrkn-below-rssm", "vrkn", "rssm", "x_worse"), "disagree"),
    "kalmamba-close-to-vrkn": (claim("kalmamba-close-to-vrkn", "kalmamba", "vrkn", "similar", margin=0.1), "agree"),
    "kalmamba-above-vrkn": (claim("kalmamba-above-vrkn", "kalmamba", "vrkn", "x_better"), "inconclusive"),
    "kalmamba-close-to-rssm": (claim("kalmamba-close-to-rssm", "kalmamba", "rssm", "similar", margin=0.1), "disagree"),
    "kalmamba-holds": (claim("kalmamba-holds", "kalmamba", "kalmamba", "x_not_worse", "ctx", 256, 32, 0.05), "agree"),
    "rssm-degrades": (claim("rssm-degrades", "rssm", "rssm", "x_worse", "ctx", 256, 32), "agree"),
    "sac-above-rssm": (claim("sac-above-rssm", "sac", "rssm", "x_better"), "not yet measured"),
}


def write_records(root):
    """experiment 'noisy' (ctx 32): kalmamba and vrkn equal and high, rssm low, 0.5 GPU hours each on
    an H100, plus a diverged rssm run; experiment 'ctx': kalmamba gains from 32 to 256, rssm loses."""
    gpu = {"gpu_seconds": 1800.0, "machine": H100, "machines": [H100]}
    for seed in range(3):
        for j, task in enumerate(TASKS):
            for method, base in (("kalmamba", 800.0), ("vrkn", 800.0), ("rssm", 100.0)):
                write_run(root, method=method, task=task, seed=seed, experiment="noisy", extra_info=gpu,
                          returns=(0.0, base / 2, base + 20.0 * seed + 5.0 * j), loop_speeds=(100.0, 100.0),
                          speeds=(50.0, 40.0), wall_clock_s=200.0)
        for method, at32, at256 in (("kalmamba", 500.0, 700.0), ("rssm", 600.0, 200.0)):
            for ctx, final in ((32, at32), (256, at256)):
                write_run(root, method=method, task="walker_walk", seed=seed, experiment="ctx", context_length=ctx,
                          returns=(0.0, final / 2, final + 10.0 * seed), wall_clock_s=100.0 * ctx / 32,
                          loop_speeds=(32_000.0 / ctx, 32_000.0 / ctx))
    write_run(root, method="rssm", task="reacher_easy", seed=0, experiment="noisy", status="failed",
              error="Traceback (most recent call last):\nRuntimeError: train/model/loss is not finite at env step 3000",
              extra_info={"gpu_seconds": 900.0, "machines": [H100]})
    # the sweep that ran 'noisy' shared its GPU: 9.25 run-hours in 1.5 hours of the GPU
    (root / "noisy" / "sweep.json").write_text(json.dumps({"runs": [], "gpu_seconds_held": 5400.0}))


def snapshot(*paths):
    """{path: bytes} of the given files and of every file under the given directories."""
    files = {}
    for path in map(pathlib.Path, paths):
        for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            files[str(f)] = f.read_bytes()
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leaderboard")
    root, out, doc, claims = tmp / "results", tmp / "out", tmp / "docs" / "leaderboard.md", tmp / "claims.json"
    write_records(root)
    doc.parent.mkdir()
    doc.write_text(DOC)
    claims.write_text(json.dumps({"claims": [c for c, _ in CLAIMS.values()]}))
    sweep = tmp / "noisy_sweep.gin"
    sweep.write_text("import harness.sweep_plan\nSweep.name = 'noisy'\n"
                     "Sweep.methods = ['gin/kalmamba_noisy.gin', 'gin/rssm_noisy.gin']\n"
                     "Sweep.tasks = ['cartpole_swingup', 'walker_walk', 'reacher_easy']\nSweep.seeds = [0, 1, 2]\n"
                     f"Sweep.results_dir = '{root}'\n")
    argv = [str(root), "--reps", "200", "--out", str(out), "--claims", str(claims), "--into", str(doc),
            "--sweep", str(sweep)]
    assert report.main(argv) == 0
    first = snapshot(doc, out)
    assert report.main(argv) == 0
    return {"root": root, "out": out, "doc": doc, "first": first, "second": snapshot(doc, out),
            "markdown": (out / "leaderboard.md").read_text(), "page": (out / "index.html").read_text(),
            "aggregate": json.loads((out / "aggregate" / "aggregate.json").read_text())}


def test_regenerating_from_the_same_records_gives_the_same_bytes(built):
    assert built["first"].keys() == built["second"].keys()
    assert len([p for p in built["first"] if p.endswith(".svg")]) > 5
    changed = [path for path in built["first"] if built["first"][path] != built["second"][path]]
    assert changed == []
    assert "2025-01-01T00:01:00+00:00" in built["markdown"]  # the records' date, not the clock's


def test_the_document_keeps_its_own_text_and_gets_the_tables_with_links_relative_to_it(built):
    text = built["doc"].read_text()
    assert text.startswith("# My leaderboard\n\nHand-written text.\n\n<!-- report:begin -->\n")
    assert text.endswith("<!-- report:end -->\n\nTail.\n") and "stale tables" not in text
    assert "# Leaderboard:" not in text  # the document has its own title
    assert "## noisy: noisy_state/ctx32 (2 tasks)" in text
    assert "Provenance" not in text and "Runs:" not in text  # those stay in the HTML report
    figures = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert figures and all((built["doc"].parent / link).is_file() for link in figures)
    assert all(link.startswith("../out/figures/") for link in figures)


def test_failed_and_diverged_runs_are_listed_with_their_reason(built):
    for text in (built["markdown"], built["page"], built["doc"].read_text()):
        assert "noisy/rssm/noisy_state/reacher_easy/ctx32/seed0" in text
        assert "train/model/loss is not finite at env step 3000" in text


def test_paper_claims_get_the_verdicts_the_records_were_built_for(built):
    got = {c["id"]: c["verdict"] for c in built["aggregate"]["claims"]}
    assert got == {id_: verdict for id_, (_, verdict) in CLAIMS.items()}
    above = next(c for c in built["aggregate"]["claims"] if c["id"] == "kalmamba-above-rssm")["measured"]
    assert above["probability_of_improvement"] == {"point": 1.0, "low": 1.0, "high": 1.0}
    assert above["iqm_difference"]["low"] > 0.6 and (above["runs_x"], above["runs_y"]) == (3, 3)
    rows = [line for line in built["markdown"].splitlines() if line.startswith("| claim ")]
    assert len(rows) == len(CLAIMS)
    assert all(row.endswith(f"| {CLAIMS[row.split(' | ')[0][8:]][1]} |") for row in rows)
    assert "| claim sac-above-rssm | test | sac vs rssm (noisy: noisy_state/ctx32) | x > y | - | - | - |" in built["markdown"]
    assert "| claim kalmamba-holds | test | kalmamba ctx256 vs kalmamba ctx32 (ctx: noisy_state) | x >= y - 0.05 |" \
        in built["markdown"]


def test_gpu_hours_and_machines_come_from_every_run_json(built):
    markdown = built["markdown"]
    # 18 runs x 0.5 h + the failed run's 0.25 h; the 12 'ctx' runs recorded no gpu_seconds
    assert "GPU hours spent: 9.25 in total over 31 run(s) (12 without a record)" in markdown
    assert "the sweeps that ran them held their GPUs for 1.50 hours (1 sweep(s)" in markdown
    assert built["aggregate"]["resources"]["gpu"]["sweeps"] == [{"sweep": "noisy/sweep.json", "gpu_hours_held": 1.5}]
    assert "| noisy | rssm | 7 | 3.25 | 0 |" in markdown and "| noisy | all | 19 | 9.25 | 0 |" in markdown
    assert "| ctx | all | 12 | 0.00 | 12 |" in markdown
    assert "| NVIDIA H100 80GB HBM3 | AMD EPYC | 16 | 2.11.0 | Linux | 1 | 19 | noisy |" in markdown
    assert "| - | - | - | - | - | 0 | 12 | ctx |" in markdown  # older records: only their device


def test_wall_clock_has_train_loop_and_end_to_end_hours_per_million_env_steps(built):
    # train loop: median interval speed 100 env steps/s -> 2.78 h; end to end: 2000 steps in 200 s -> 27.78 h
    assert "| noisy | kalmamba | noisy_state | 32 | cpu | 6 | 2.78 | 27.78 | 200.0 | 10.0 |" in built["markdown"]


def test_context_lengths_side_by_side(built):
    markdown = built["markdown"]
    assert "## ctx: noisy_state, context lengths side by side" in markdown
    section = markdown.split("## ctx: noisy_state, context lengths side by side")[1].split("## ")[0]
    assert "| Method | ctx 32 | ctx 256 |" in section
    assert re.search(r"\| kalmamba \| 0\.5\d\d \[[\d.]+, [\d.]+\] \| 0\.7\d\d \[", section)
    assert "| rssm | 0.28 | 2.22 |" in section  # 32000 / T env steps per s -> hours per 1M


def test_probability_of_improvement_matrix(built):
    section = built["markdown"].split("## noisy: noisy_state/ctx32")[1].split("## ")[0]
    assert "| P(row > column) | kalmamba | vrkn | rssm |" in section
    assert "| kalmamba | - | 0.500 [" in section and "| rssm | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.000] | - |" in section


def test_coverage_counts_planned_runs_by_state(built):
    markdown = built["markdown"]
    assert "| noisy | kalmamba | noisy_state | 32 | 9 | 6 | 0 | 0 | 3 | reacher_easy (0/3) |" in markdown
    assert "| noisy | rssm | noisy_state | 32 | 9 | 6 | 1 | 0 | 2 | reacher_easy (0/3) |" in markdown


def test_a_document_without_markers_is_refused_before_anything_is_written(tmp_path, capsys):
    write_run(tmp_path / "results", seed=0)
    doc = tmp_path / "doc.md"
    doc.write_text("# no markers\n")
    assert report.main([str(tmp_path / "results"), "--reps", "20", "--into", str(doc)]) == 2
    assert "report:begin" in capsys.readouterr().err
    assert doc.read_text() == "# no markers\n" and not (tmp_path / "results" / "report").exists()


def test_allow_empty_reports_that_nothing_has_run_yet(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps({"claims": [CLAIMS["kalmamba-above-rssm"][0]]}))
    results = tmp_path / "not_run_yet"
    assert report.main([str(results), "--allow-empty", "--claims", str(claims), "--into", str(doc)]) == 0
    text = doc.read_text()
    assert f"No finished run under {results} yet: nothing is ranked." in text
    assert "| claim kalmamba-above-rssm |" in text and text.count("| not yet measured |") == 1
    assert "1 not yet measured." in text
    assert "GPU hours spent: 0.00 in total over 0 run(s)" in text


@pytest.mark.parametrize("content, words", [
    ("{", "not valid JSON"),
    ('{"claims": {}}', "a list 'claims'"),
    ('{"claims": [{"id": "a"}]}', "'claim' must be a non-empty string"),
])
def test_a_bad_claims_file_is_one_line_and_exit_2(tmp_path, capsys, content, words):
    write_run(tmp_path / "results", seed=0)
    (tmp_path / "claims.json").write_text(content)
    assert report.main([str(tmp_path / "results"), "--claims", str(tmp_path / "claims.json")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: ") and words in line


def test_runs_a_manifest_plans_but_never_started_are_counted_not_listed(tmp_path):
    done = write_run(tmp_path, seed=0)
    pending = {"run_dir": "sac/noisy_state/cartpole_swingup/ctx32/seed1", "status": "pending", "method": "sac",
               "task": "cartpole_swingup", "seed": 1}
    failed = dict(pending, run_dir="sac/noisy_state/cartpole_swingup/ctx32/seed2", seed=2, status="failed",
                  exit_code=2, error="gin file not found")
    (tmp_path / "exp" / "sweep.json").write_text(json.dumps({"runs": [
        {"run_dir": str(done), "status": "done"}, pending, failed]}))
    assert report.main([str(tmp_path), "--reps", "20"]) == 0
    markdown = (tmp_path / "report" / "leaderboard.md").read_text()
    assert "| exp/sac/noisy_state/cartpole_swingup/ctx32/seed2 | failed | sweep status 'failed' (exit code 2)" in markdown
    assert "seed1" not in markdown.split("## Excluded, incomplete and failed runs")[1].split("Not started")[0]
    assert "Not started yet: 1 run(s) that a sweep manifest (sweep.json) plans" in markdown
    rows = (tmp_path / "aggregate" / "excluded.csv").read_text()
    assert "seed1,not started," in rows
