"""harness.report: leaderboard.md, a self-contained index.html whose figures decode, checked in Chromium."""
import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from harness import report, report_figures, report_tables
from tests.harness.test_aggregate import write_grid
from tests.harness.test_records import write_run

pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
TASKS = ("cartpole_swingup", "cheetah_run")
BLUE = np.array([1, 115, 178])  # first colour of seaborn's colorblind palette: the first method
# per group: per-task curves, intervals, profiles, improvement, efficiency; + wall-clock
NUM_FIGURES = 2 * 5 + 1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A results dir with 2 methods x 2 tasks x 3 seeds at ctx 32 and 64, a failed and a corrupt run."""
    root = tmp_path_factory.mktemp("results")
    written = write_grid(root, methods=("kalmamba", "sac"), tasks=TASKS, seeds=range(3))
    write_grid(root, methods=("kalmamba", "sac"), tasks=TASKS, seeds=range(3), context_length=64)
    write_run(root, method="sac", task="reacher_easy", seed=5, status="failed")
    write_run(root, method="sac", task=TASKS[0], seed=7, extra_lines=("{oops\n",))
    assert report.main([str(root), "--reps", "50"]) == 0
    return root, written


def test_leaderboard_markdown_has_ranked_tables_and_per_task_returns(built):
    root, written = built
    text = (root / "report" / "leaderboard.md").read_text()
    assert "## exp: noisy_state/ctx32 (2 tasks)" in text and "## exp: noisy_state/ctx64 (2 tasks)" in text
    assert "| Method | IQM | Median | Mean | Optimality gap | Runs/task |" in text
    final = written["sac"][:, :, -1]
    cell = f"{final[:, 0].mean():.1f} ± {final[:, 0].std(ddof=1):.1f} (3)"
    assert f"| sac | {cell} |" in text
    ranked = [line.split(" | ")[0][2:] for line in text.splitlines() if re.match(r"\| \w+ \| \d\.\d{3} \[", line)]
    iqm = {m: np.mean(np.sort((written[m][:, :, -1] / 1000).ravel())[1:5]) for m in written}
    assert ranked[:2] == sorted(iqm, key=lambda m: -iqm[m])  # best IQM first
    for figure in ("exp_noisy_state_ctx32_intervals.png", "exp_noisy_state_ctx64_sample_efficiency.png",
                   "exp_noisy_state_ctx32_per_task_curves.png", "wall_clock_vs_context_length.png"):
        assert f"(figures/{figure})" in text and (root / "report" / "figures" / figure).is_file()
        svg = (root / "report" / "figures" / figure.replace(".png", ".svg")).read_text()
        assert "<svg" in svg[:1000] and "</svg>" in svg[-100:]
    assert (root / "aggregate" / "aggregate.json").is_file()


def test_report_lists_failed_and_corrupt_runs_with_reason(built):
    root, _ = built
    for text in ((root / "report" / "leaderboard.md").read_text(),
                 (root / "report" / "index.html").read_text()):
        assert "exp/sac/noisy_state/reacher_easy/ctx32/seed5" in text and "loss is nan" in text
        assert "exp/sac/noisy_state/cartpole_swingup/ctx32/seed7" in text
        assert "metrics.jsonl line 6: corrupt JSON" in text


def test_html_embeds_every_figure_and_its_links_lead_to_files_that_exist(built):
    root, _ = built
    page = (root / "report" / "index.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == NUM_FIGURES
    assert not re.search(r'src="(?!data:)', page), "figures must be embedded: the page reads alone"
    links = re.findall(r'href="([^"]+)"', page)
    assert len([link for link in links if link.endswith(".svg")]) == NUM_FIGURES
    assert len([link for link in links if re.search(r"/seed\d+$", link)]) == 2 * 2 * 2 * 3  # every run
    for link in links:
        assert (root / "report" / link).exists(), link
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True)))
        image.load()
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64)
        assert min(image.size) > 100 and pixels.std() > 10, "figure is blank"


def test_a_cell_with_fewer_than_three_seeds_is_warned_about_and_marked(tmp_path):
    write_grid(tmp_path, methods=("kalmamba",), tasks=TASKS, seeds=range(3))
    write_grid(tmp_path, methods=("sac",), tasks=TASKS, seeds=range(1))
    assert report.main([str(tmp_path), "--reps", "20"]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    warnings = re.findall(r'<div class="warning">warning: ([^<]*)</div>', page)
    assert warnings == [f"exp: noisy_state/ctx32: sac has 1 seed(s) on {task}, fewer than 3: its intervals "
                        "and mean are not meaningful" for task in TASKS]
    markdown = (tmp_path / "report" / "leaderboard.md").read_text()
    sac_row = next(line for line in markdown.splitlines() if line.startswith("| sac | ") and "±" in line)
    kalmamba_row = next(line for line in markdown.splitlines() if line.startswith("| kalmamba | ") and "±" in line)
    assert sac_row.count("(1) ⚠") == 2 and "⚠" not in kalmamba_row
    assert "> warning: exp: noisy_state/ctx32: sac has 1 seed(s) on cheetah_run" in markdown


def test_provenance_table_reads_run_json(built):
    root, _ = built
    text = (root / "report" / "leaderboard.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| sac | 6 | ")]
    assert len(rows) == 2  # one per context length: 2 tasks x 3 seeds
    assert rows[0].startswith("| sac | 6 | abc | - | python 3.11 | cpu | - | [exp/sac/noisy_state/cartpole_swingup")


def test_one_method_order_in_tables_and_figures(built):
    root, _ = built
    result = json.loads((root / "aggregate" / "aggregate.json").read_text())
    group = result["groups"][0]
    order = report_figures.method_order(group)
    assert [m for m, *_ in report.leaderboard_rows(group, ["IQM"])] == order
    assert [m for m, _ in report.per_task_rows(group)] == order
    colors = report_figures.method_colors(result)
    for draw in (report_figures.per_task_curves_figure, report_figures.profiles_figure,
                 report_figures.sample_efficiency_figure):
        figure = draw(group, colors)
        labels = figure.axes[0].get_legend_handles_labels()[1]
        assert [label.split(" (")[0] for label in labels] == order, draw.__name__
    intervals = report_figures.intervals_figure(group, colors, ["IQM"])
    assert [t.get_text() for t in intervals.axes[0].get_yticklabels()][::-1] == order  # best on top


def test_per_task_curves_draw_every_seed_thin_and_the_mean_thick(built):
    root, written = built
    group = json.loads((root / "aggregate" / "aggregate.json").read_text())["groups"][0]
    figure = report_figures.per_task_curves_figure(group, report_figures.method_colors({"groups": [group],
                                                   "wall_clock": {"by_context_length": []}}))
    first_task = figure.axes[0]
    assert first_task.get_title() == TASKS[0]
    thin = [line for line in first_task.get_lines() if line.get_linewidth() < 1]
    thick = [line for line in first_task.get_lines() if line.get_linewidth() > 2]
    assert len(thin) == 2 * 3 and len(thick) == 2
    sac_mean = thick[report_figures.method_order(group).index("sac")]
    np.testing.assert_allclose(sac_mean.get_ydata(), written["sac"][:, 0].mean(axis=0))


def test_profile_axis_ends_near_the_best_score():
    group = {"methods": ["a", "b"], "scores": {"a": [[0.12, 0.05]], "b": [[0.2, 0.31]]}}
    assert report_figures.profile_axis_limit(group) == pytest.approx(0.4)
    group["scores"]["b"] = [[0.99, 0.5]]
    assert report_figures.profile_axis_limit(group) == 1.0
    group["scores"] = {"a": [[0.0]], "b": [[0.01]]}
    assert report_figures.profile_axis_limit(group) == pytest.approx(0.1)


def test_wall_clock_with_one_context_length_is_a_labelled_bar_chart():
    rows = [{"experiment": "exp", "method": m, "suite": "noisy_state", "context_length": 32, "device": "cpu",
             "median_hours_per_1M_env_steps": hours} for m, hours in (("sac", 2.0), ("kalmamba", 5.5))]
    colors = {"sac": (0, 0, 1), "kalmamba": (1, 0, 0)}
    ax = report_figures.wall_clock_figure(rows, colors).axes[0]
    assert [round(bar.get_height(), 3) for bar in ax.patches] == [5.5, 2.0]  # the table's order
    assert ax.get_xscale() == "linear" and ax.get_ylim()[0] == 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["kalmamba (noisy_state)", "sac (noisy_state)"]
    several = rows + [dict(r, context_length=64, median_hours_per_1M_env_steps=9.0) for r in rows]
    assert report_figures.wall_clock_figure(several, colors).axes[0].get_xscale() == "log"


def test_wall_clock_lines_plot_the_training_loop_of_series_measured_at_several_lengths():
    row = lambda experiment, method, t, end_to_end, train_loop: {
        "experiment": experiment, "method": method, "suite": "noisy_state", "context_length": t, "device": "cpu",
        "median_hours_per_1M_env_steps": end_to_end, "median_train_loop_hours_per_1M_env_steps": train_loop}
    rows = [row("context", "kalmamba", 32, 2.3, 1.5), row("context", "kalmamba", 128, 3.1, 1.6),
            row("context", "rssm", 32, 3.0, 3.0), row("noisy100k", "sac", 32, 0.7, 0.6)]
    ax = report_figures.wall_clock_figure(rows, {"kalmamba": "r", "rssm": "g", "sac": "b"}).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["kalmamba (noisy_state)"]
    assert list(ax.get_lines()[0].get_ydata()) == [1.5, 1.6]
    assert "training loop" in ax.get_ylabel()
    rows[2]["median_train_loop_hours_per_1M_env_steps"] = None  # one row without: end to end for all
    ax = report_figures.wall_clock_figure(rows[:3], {"kalmamba": "r", "rssm": "g"}).axes[0]
    assert list(ax.get_lines()[0].get_ydata()) == [2.3, 3.1] and "end to end" in ax.get_ylabel()
    lonely = [row("a", "kalmamba", 32, 2.0, 1.0), row("a", "rssm", 64, 4.0, 3.0)]  # no series has two
    ax = report_figures.wall_clock_figure(lonely, {"kalmamba": "r", "rssm": "g"}).axes[0]
    assert len(ax.get_lines()) == 2


def test_wall_clock_series_of_different_devices_are_separate_lines_named_by_device():
    row = lambda t, device, hours: {"experiment": "context", "method": "kalmamba", "suite": "noisy_state",
                                    "context_length": t, "device": device, "median_hours_per_1M_env_steps": hours,
                                    "median_train_loop_hours_per_1M_env_steps": hours}
    rows = [row(32, "NVIDIA H100 80GB HBM3", 1.5), row(64, "NVIDIA H100 80GB HBM3", 1.6),
            row(256, "NVIDIA H200", 1.0), row(512, "NVIDIA H200", 1.2)]
    ax = report_figures.wall_clock_figure(rows, {"kalmamba": "r"}).axes[0]
    assert [(line.get_label(), list(line.get_ydata())) for line in ax.get_lines()] == [
        ("kalmamba (noisy_state), H100 80GB HBM3", [1.5, 1.6]), ("kalmamba (noisy_state), H200", [1.0, 1.2])]
    same = [dict(r, device="NVIDIA H100 80GB HBM3") for r in rows]
    ax = report_figures.wall_clock_figure(same, {"kalmamba": "r"}).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["kalmamba (noisy_state)"]


def test_context_hours_name_the_device_where_a_study_ran_on_several():
    group = lambda t: {"experiment": "context", "suite": "noisy_state", "context_length": t, "methods": ["kalmamba"],
                       "aggregates": {"kalmamba": {"IQM": {"point": 0.5, "low": 0.4, "high": 0.6}}}}
    clock = lambda t, device, hours: {"experiment": "context", "suite": "noisy_state", "context_length": t,
                                      "method": "kalmamba", "device": device,
                                      "median_train_loop_hours_per_1M_env_steps": hours}
    result = {"groups": [group(32), group(256)],
              "wall_clock": {"by_context_length": [clock(32, "NVIDIA H100 80GB HBM3", 1.5),
                                                   clock(256, "NVIDIA H100 80GB HBM3", 1.7),
                                                   clock(256, "NVIDIA H200", 1.1)]}}
    (_, (header, cost)), = report_tables.context_length_tables(result).values()
    assert header == ("Method", "ctx 32", "ctx 256")
    assert cost == [("kalmamba", "1.50 (H100 80GB HBM3)", "1.70 (H100 80GB HBM3); 1.10 (H200)")]
    result["wall_clock"]["by_context_length"].pop()
    (_, (_, cost)), = report_tables.context_length_tables(result).values()
    assert cost == [("kalmamba", "1.50", "1.70")]


def test_report_cli_user_error_is_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: no runs under {tmp_path}: no run.json or sweep.json found"
    assert not (tmp_path / "report").exists()


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(built, tmp_path):
    root, _ = built
    page = root / "report" / "index.html"
    shot = tmp_path / "shot.png"
    subprocess.run([str(REPO / "scripts" / "screenshot_report.sh"), str(page), str(shot)],
                   check=True, capture_output=True, timeout=150)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    assert pixels.shape == (4000, 1400, 3)
    assert (pixels.min(axis=2) < 200).mean() > 0.02, "screenshot is (almost) blank"
    assert (np.abs(pixels - BLUE).sum(axis=2) < 40).sum() > 500, "no figure colour on the page"
    assert _broken_images_in_chromium(page, tmp_path) == (NUM_FIGURES, 0)


def _broken_images_in_chromium(page, tmp_path):
    """(number of <img>, number Chromium failed to decode) after the page's load event."""
    probe = tmp_path / "probe.html"
    script = ('<script>addEventListener("load", () => { const i = [...document.images];'
              ' document.body.dataset.images = i.length;'
              ' document.body.dataset.broken = i.filter(x => !x.complete || !x.naturalWidth).length; });'
              '</script></body>')
    probe.write_text(page.read_text().replace("</body>", script))
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r'<body data-images="(\d+)" data-broken="(\d+)"', dom)
    assert body, "the probe script did not run"
    return int(body.group(1)), int(body.group(2))


def test_at_env_steps_is_stated_and_scores_the_runs_at_that_step(tmp_path):
    for seed, returns in enumerate(((0.0, 100.0, 900.0), (0.0, 300.0, 800.0), (0.0, 500.0, 700.0))):
        write_run(tmp_path, method="sac", seed=seed, returns=returns)
    assert report.main([str(tmp_path), "--reps", "20", "--at-env-steps", "1000", "--out", str(tmp_path / "at1k")]) == 0
    markdown = (tmp_path / "at1k" / "leaderboard.md").read_text()
    assert "Scores are return / 1000 at env step 1,000 (every run read as it stood then)" in markdown
    assert "| sac | 300.0 ± 200.0 (3) |" in markdown  # the per-task table: returns at 1000, std with ddof 1
    assert "| sac | cartpole_swingup | 1 | 300.0 |" in markdown
    with pytest.raises(SystemExit) as exited:
        report.main([str(tmp_path), "--reps", "20", "--at-env-steps", "0"])
    assert exited.value.code == 2
