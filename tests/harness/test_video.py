"""Eval videos: an mp4 per evaluation with one frame per agent step of the episode, at render size."""
import json

import gin
import numpy as np
import pytest

from harness import video
from harness.cli import USER_ERROR
from tests.harness.test_run import QUICK
from tests.harness.test_run_safety import main  # noqa: F401  (fixture)

VIDEO_RUN = [*QUICK, "--bind", "Schedule.total_env_steps = 2000", "--bind", "Schedule.eval_episodes = 1",
             "--bind", "make_env.render_size = 48"]


@pytest.fixture(autouse=True)
def clear_gin_afterwards():
    """In-process runs parse gin files (quick.gin's small sizes); later tests build with defaults."""
    yield
    gin.clear_config()


def test_write_then_read_keeps_frame_count_size_and_content(tmp_path):
    frames = [np.full((32, 48, 3), 8 * i, np.uint8) for i in range(20)]
    path = video.write_mp4(tmp_path / "v.mp4", frames, fps=12.5)
    meta, decoded = video.read_mp4(path)
    assert len(decoded) == 20 and meta["size"] == (48, 32) and meta["fps"] == pytest.approx(12.5)
    means = [frame.mean() for frame in decoded]
    np.testing.assert_allclose(means, [8 * i for i in range(20)], atol=3)  # lossy, but each frame is its own
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary file left


def test_video_flag_writes_one_episode_per_evaluation(tmp_path, main):  # noqa: F811
    out = tmp_path / "run"
    result = main(*VIDEO_RUN, "--out", str(out), "--video")
    assert result.returncode == 0, result.stderr
    videos = sorted(p.name for p in (out / "videos").iterdir())
    assert videos == ["step000000000.mp4", "step000001000.mp4", "step000002000.mp4"]
    meta, frames = video.read_mp4(out / "videos" / videos[-1])
    assert len(frames) == 1000 // 8 + 1  # cartpole: action repeat 8; the first frame is the reset state
    assert meta["size"] == (48, 48) and meta["fps"] == pytest.approx(12.5)
    assert np.std([f.mean() for f in frames]) > 0.1, "the frames do not change: nothing moved"


def test_video_every_sets_the_cadence_and_changes_no_result(tmp_path, main):  # noqa: F811
    plain, filmed = tmp_path / "plain", tmp_path / "filmed"
    assert main(*VIDEO_RUN, "--out", str(plain)).returncode == 0
    assert main(*VIDEO_RUN, "--out", str(filmed), "--bind", "Schedule.video_every = 2000").returncode == 0
    assert sorted(p.name for p in (filmed / "videos").iterdir()) == ["step000000000.mp4", "step000002000.mp4"]
    assert not (plain / "videos").exists()
    evals = [[json.loads(line)["returns"] for line in (d / "metrics.jsonl").read_text().splitlines()
              if '"kind": "eval"' in line] for d in (plain, filmed)]
    assert evals[0] == evals[1]  # rendering draws no random numbers and changes no episode


def test_video_without_imageio_ffmpeg_is_a_user_error(tmp_path, main, monkeypatch):  # noqa: F811
    monkeypatch.setattr(video.importlib.util, "find_spec", lambda name: None)
    result = main(*VIDEO_RUN, "--out", str(tmp_path / "run"), "--video")
    assert result.returncode == USER_ERROR and "imageio-ffmpeg" in result.stderr
    assert not (tmp_path / "run" / "run.json").exists()
