"""The committed leaderboard is what its committed records give: regenerating it as `make leaderboard` does,
into a copy laid out like the repository (so every relative link comes out the same), reproduces
docs/leaderboard.md and the report's Markdown and aggregate tables byte for byte. A change to the records or
to the report's code that moves a number fails here until `make leaderboard` is run and its output committed.
The figures are not compared: their bytes depend on the installed fonts and matplotlib."""
import pathlib
import shutil

import pytest

from harness import report
from harness.records import MANIFEST_FILE
from harness.rundir import CONFIG_FILE, METRICS_FILE, RUN_FILE

pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")  # arch, via rliable
ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = pathlib.Path("results/leaderboard_v1")
DOC = pathlib.Path("docs/leaderboard.md")
CLAIMS = pathlib.Path("docs/paper_claims.json")
# The Makefile's LEADERBOARD_SWEEPS, LEADERBOARD_REPS and LEADERBOARD_REPORT.
SWEEPS = ("gin/sweeps/leaderboard_noisy100k.gin", "gin/sweeps/leaderboard_context.gin",
          "gin/sweeps/leaderboard_image100k.gin")
RECORD_FILES = (RUN_FILE, METRICS_FILE, CONFIG_FILE, MANIFEST_FILE)


def copy_records(source, destination):
    """The records a study commits (each run's and the sweep's), none of the generated report."""
    for path in source.rglob("*"):
        if path.name in RECORD_FILES:
            target = destination / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory, monkeypatch_module):
    copy = tmp_path_factory.mktemp("repo")
    copy_records(ROOT / RESULTS, copy / RESULTS)
    (copy / DOC).parent.mkdir(parents=True)
    shutil.copyfile(ROOT / DOC, copy / DOC)
    shutil.copyfile(ROOT / CLAIMS, copy / CLAIMS)
    (copy / "gin").symlink_to(ROOT / "gin")  # the sweep files, read only
    # Paths relative to the repository root, as `make leaderboard` gives them: the records name them.
    monkeypatch_module.chdir(copy)
    argv = [str(RESULTS), "--reps", "2000", "--claims", str(CLAIMS), "--allow-empty",
            *[arg for sweep in SWEEPS for arg in ("--sweep", sweep)], "--into", str(DOC)]
    assert report.main(argv) == 0
    return copy


def committed_outputs():
    yield DOC
    yield RESULTS / "report" / "leaderboard.md"
    yield from sorted(path.relative_to(ROOT) for path in (ROOT / RESULTS / "aggregate").iterdir())


@pytest.mark.parametrize("output", list(committed_outputs()), ids=str)
def test_regenerating_from_the_committed_records_gives_the_committed_bytes(regenerated, output):
    assert (regenerated / output).read_bytes() == (ROOT / output).read_bytes(), \
        f"{output} differs from what its records give: run `make leaderboard` and commit its output"


def test_the_regenerated_report_writes_no_table_that_is_not_committed(regenerated):
    written = {path.name for path in (regenerated / RESULTS / "aggregate").iterdir()}
    committed = {path.name for path in (ROOT / RESULTS / "aggregate").iterdir()}
    assert written == committed
