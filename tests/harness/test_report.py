"""harness.report: leaderboard.md, a self-contained index.html whose figures decode, checked in Chromium."""
import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from harness import report
from tests.harness.test_aggregate import write_grid
from tests.harness.test_records import write_run

pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
TASKS = ("cartpole_swingup", "cheetah_run")
BLUE = np.array([1, 115, 178])  # first colour of seaborn's colorblind palette: the first method


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
                   "wall_clock_vs_context_length.png"):
        assert f"(figures/{figure})" in text and (root / "report" / "figures" / figure).is_file()
    assert (root / "aggregate" / "aggregate.json").is_file()


def test_report_lists_failed_and_corrupt_runs_with_reason(built):
    root, _ = built
    for text in ((root / "report" / "leaderboard.md").read_text(),
                 (root / "report" / "index.html").read_text()):
        assert "exp/sac/noisy_state/reacher_easy/ctx32/seed5" in text and "loss is nan" in text
        assert "exp/sac/noisy_state/cartpole_swingup/ctx32/seed7" in text
        assert "metrics.jsonl line 6: corrupt JSON" in text


def test_html_is_self_contained_and_every_image_decodes(built):
    root, _ = built
    page = (root / "report" / "index.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 2 * 4 + 1  # per group: intervals, profiles, improvement, efficiency; + wall-clock
    assert not re.search(r'(src|href)="(?!data:)', page), "the page must not reference other files"
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True)))
        image.load()
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64)
        assert min(image.size) > 100 and pixels.std() > 10, "figure is blank"


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
    assert _broken_images_in_chromium(page, tmp_path) == (9, 0)


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
