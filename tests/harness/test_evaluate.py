"""`python -m harness.evaluate RUN_DIR`: evaluates a saved run, records the result, changes nothing else."""
import json
import shutil

import gin
import pytest

from harness import evaluate, video
from tests.harness.test_run import QUICK, run_cli
from tests.harness.test_run_safety import assert_refused, snapshot

RUN = [*QUICK, "--bind", "Schedule.total_env_steps = 2000", "--bind", "Schedule.keep_checkpoints_at = [1000]",
       "--bind", "make_env.render_size = 32"]


@pytest.fixture(autouse=True)
def clear_gin_afterwards():
    """In-process runs parse gin files (quick.gin's small sizes); later tests build with defaults."""
    yield
    gin.clear_config()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "run"
    result = run_cli(*RUN, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


class Result:
    def __init__(self, status, captured):
        self.returncode, self.stdout, self.stderr = status, captured.out, captured.err


@pytest.fixture
def cli(capsys):
    def call(*args):
        try:
            status = evaluate.main(list(args))
        except SystemExit as exit:  # argparse's usage errors
            status = exit.code
        return Result(status, capsys.readouterr())
    return call


def final_eval(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == "eval"][-1]


def test_latest_checkpoint_repeats_the_final_evaluation_and_touches_nothing_else(finished, tmp_path, cli):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = snapshot(run_dir)
    result = cli(str(run_dir), "--video")
    assert result.returncode == 0, result.stderr
    after = snapshot(run_dir)
    written = sorted(set(after) - set(before))
    assert {k: v for k, v in after.items() if k in before} == before  # run.json, metrics, checkpoint untouched
    assert len(written) == 2 and written[0].startswith("evaluations/") and written[0].endswith("_step2000.json")
    record = json.loads(after[written[0]])
    assert record["checkpoint_env_step"] == 2000 and record["episodes"] == 2
    assert record["returns"] == final_eval(run_dir)["returns"]  # same weights, same reset seeds
    assert record["run"]["method"] == "sac" and record["run"]["task"] == "cartpole_swingup"
    _, frames = video.read_mp4(run_dir / written[1])
    assert written[1] == written[0][:-5] + ".mp4" and len(frames) == 126 and frames[0].shape == (32, 32, 3)
    assert f"return {record['return_mean']:.1f}" in result.stdout


def test_a_kept_checkpoint_evaluates_the_weights_of_that_step(finished, tmp_path, cli):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    assert (run_dir / "checkpoint" / "agent_step1000.pt").is_file()
    result = cli(str(run_dir), "--checkpoint", "1000", "--episodes", "3")
    assert result.returncode == 0, result.stderr
    record = json.loads(next((run_dir / "evaluations").glob("*_step1000.json")).read_text())
    assert record["checkpoint_env_step"] == 1000 and len(record["returns"]) == 3
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    at_1000 = next(e for e in evals if e["kind"] == "eval" and e["env_step"] == 1000)
    assert record["returns"][:2] == at_1000["returns"]  # its first two episodes are training's eval at 1000


@pytest.mark.parametrize("args, words", [
    (["{run}", "--checkpoint", "1500"], ["--checkpoint 1500", "1000, 2000 (latest)"]),
    (["{run}", "--checkpoint", "last"], ["--checkpoint", "'last'"]),
    (["{run}", "--episodes", "0"], ["--episodes", "'0'"]),
    (["{run}/nope"], ["run directory not found"]),
    (["{tmp}"], ["not a run directory"]),
])
def test_bad_input_is_one_line_naming_it_and_writes_nothing(finished, tmp_path, cli, args, words):
    before = snapshot(finished)
    result = cli(*(a.format(run=finished, tmp=tmp_path) for a in args))
    assert_refused(result, *words)
    assert snapshot(finished) == before
