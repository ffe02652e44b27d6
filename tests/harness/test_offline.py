"""The offline track end to end on real dm_control: a tiny online run -> harness.collect -> harness.run
with Decision Transformer / Decision Mamba -> eval lines, report groups; and its user errors."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from harness import datasets, run
from harness.config import REPO_ROOT
from tests.harness.test_datasets import META, make_episodes
from tests.harness.test_run import learning_values, read_lines

ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}  # one thread: 2 shared cores
TINY_ONLINE = ["--gin", "gin/sac_noisy.gin", "--gin", "gin/quick.gin", "--no-progress",
               "--bind", "Schedule.total_env_steps = 2000", "--bind", "Schedule.eval_episodes = 1",
               "--bind", "Schedule.keep_checkpoints_at = [1000]"]
TINY_OFFLINE = ["--gin", "gin/offline/quick.gin", "--no-progress", "--bind", "Offline.gradient_steps = 20",
                "--bind", "Offline.eval_every = 20", "--bind", "Offline.log_every = 10"]


def cli(module, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("online") / "run"
    result = cli("harness.run", *TINY_ONLINE, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_collect_train_and_evaluate_within_a_minute(source_run, tmp_path):
    began = time.perf_counter()
    dataset = tmp_path / "datasets" / "cartpole-expert-v0"
    result = cli("harness.collect", str(source_run), "--kind", "expert", "--episodes", "2", "--out", str(dataset))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "dm"
    result = cli("harness.run", "--gin", "gin/offline/decision_mamba.gin", *TINY_OFFLINE,
                 "--bind", f"Offline.dataset = '{dataset}'", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.perf_counter() - began < 60

    loaded = datasets.read_dataset(dataset)
    assert loaded.kind == "expert" and len(loaded.episodes) == 2 and loaded.obs_shape == (5,)
    assert loaded.metadata["run"] == str(source_run) and loaded.metadata["obs_noise_std"] == 0.3
    episode = loaded.episodes[0]
    assert episode.length == 125 and episode.truncations[-1] and episode.true_obs.shape == (126, 5)
    assert (episode.obs - episode.true_obs).std() == pytest.approx(0.3, rel=0.1)  # noisy as seen
    info = json.loads((out / "run.json").read_text())
    assert (info["method"], info["dataset_kind"], info["context_length"], info["status"]) == \
        ("decision_mamba", "expert", 20, "done")
    assert info["world_model"] == "agents.sequence_policy.DecisionMamba" and info["obs_noise_std"] == 0.3
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if line["kind"] == "eval"]
    assert [e["env_step"] for e in evals] == [0, 20]
    for e in evals:
        assert e["target_return"] == pytest.approx(loaded.returns().max())
        assert e["act_ms_per_step"] > 0 and e["act_batch"] == 1 and len(e["returns"]) == 1 and 0 <= e["return_mean"] <= 1000
    assert [line["gradient_step"] for line in lines if line["kind"] == "train"] == [10, 20]


def test_collect_kinds_and_their_errors(source_run, tmp_path):
    replay = tmp_path / "replay"
    assert cli("harness.collect", str(source_run), "--kind", "replay", "--episodes", "2",
               "--out", str(replay)).returncode == 0
    loaded = datasets.read_dataset(replay)
    assert loaded.kind == "replay" and loaded.metadata["true_obs"] is False
    assert [e.length for e in loaded.episodes] == [125, 125]
    medium = tmp_path / "medium"
    assert cli("harness.collect", str(source_run), "--kind", "medium", "--episodes", "1",
               "--out", str(medium)).returncode == 0
    assert datasets.read_dataset(medium).metadata["policy_env_step"] == 1000
    for bad, message in [
        (["--kind", "medium", "--checkpoint-step", "1500"], "kept no policy at env step 1500"),
        (["--kind", "replay", "--episodes", "3"], "fewer than --episodes 3"),
        (["--kind", "expert", "--out", str(replay)], "exists"),
        (["--kind", "random"], "invalid choice"),
    ]:
        args = {"--episodes": "2", "--out": str(tmp_path / "new"), **dict(zip(bad[::2], bad[1::2]))}
        result = cli("harness.collect", str(source_run), *[x for kv in args.items() for x in kv])
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "new").exists()


def offline_main(capsys, tmp_path, dataset, *extra):
    out = tmp_path / "run"
    status = run.main(["--gin", "gin/offline/decision_transformer.gin", "--gin", "gin/offline/quick.gin",
                       "--no-progress", "--bind", f"Offline.dataset = '{dataset}'", *extra, "--out", str(out)])
    return status, capsys.readouterr().err, out


@pytest.mark.parametrize("case, message", [
    ("missing", "no Minari dataset"), ("malformed", "cannot read the dataset"),
    ("obs_shape", "has observations (7,)"), ("unknown_kind", "unknown kind 'random'"),
    ("noise", "obs_noise_std 0.0 but the environment has 0.3"), ("task", "task 'cheetah_run'"),
])
def test_bad_datasets_exit_2_with_one_line_and_write_nothing(capsys, tmp_path, case, message):
    dataset = tmp_path / "dataset"
    if case != "missing":
        meta = {**META, "obs_noise_std": 0.0 if case == "noise" else 0.3,
                "task": "cheetah_run" if case == "task" else META["task"]}
        datasets.write_dataset(dataset, make_episodes(lengths=(30, 30), obs_dim=7 if case == "obs_shape" else 5),
                               meta)
        meta_file = dataset / "data" / "metadata.json"
        if case == "unknown_kind":
            text = json.loads(meta_file.read_text())
            text["harness"]["kind"] = "random"
            meta_file.write_text(json.dumps(text))
        if case == "malformed":
            (dataset / "data" / "main_data.hdf5").write_bytes(b"\x00" * 64)
    status, err, out = offline_main(capsys, tmp_path, dataset)
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_resume_continues_the_interrupted_run_exactly(capsys, tmp_path):
    """Stopped after 20 gradient steps, then --resume to 40: the same train and eval lines as 40 in
    one go (the sampler's and dropout's streams are restored from the checkpoint)."""
    dataset = tmp_path / "dataset"
    datasets.write_dataset(dataset, make_episodes(lengths=(30, 40)), META)
    cadence = ["--bind", "Offline.eval_every = 20", "--bind", "Offline.log_every = 10",
               "--bind", "Offline.checkpoint_every = 20"]

    def lines(out):
        return [learning_values(line) for line in read_lines(out / "metrics.jsonl")]

    status, err, whole = offline_main(capsys, tmp_path / "whole", dataset, *cadence,
                                      "--bind", "Offline.gradient_steps = 40")
    assert status == 0, err
    status, err, parts = offline_main(capsys, tmp_path / "parts", dataset, *cadence,
                                      "--bind", "Offline.gradient_steps = 20")
    assert status == 0, err
    info = json.loads((parts / "run.json").read_text())  # as if stopped after the checkpoint at 20
    (parts / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    status, err, parts = offline_main(capsys, tmp_path / "parts", dataset, *cadence,
                                      "--bind", "Offline.gradient_steps = 40", "--resume")
    assert status == 0, err
    assert [line["env_step"] for line in lines(parts) if line["kind"] == "eval"] == [0, 20, 40], err
    assert lines(parts) == lines(whole)


def test_offline_run_without_a_dataset_binding_exits_2(capsys, tmp_path):
    out = tmp_path / "run"
    status = run.main(["--gin", "gin/offline/decision_mamba.gin", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "Offline.dataset is not set" in err and not out.exists()


@pytest.mark.slow
def test_both_policies_on_every_dataset_kind_aggregate_into_one_group_per_kind(source_run, tmp_path):
    from harness import aggregate
    root = tmp_path / "results"
    for kind in ("replay", "expert", "medium"):
        dataset = tmp_path / "datasets" / kind
        result = cli("harness.collect", str(source_run), "--kind", kind, "--episodes", "2", "--out", str(dataset))
        assert result.returncode == 0, result.stderr
        for policy in ("decision_transformer", "decision_mamba"):
            result = cli("harness.run", "--gin", f"gin/offline/{policy}.gin", *TINY_OFFLINE,
                         "--bind", f"Offline.dataset = '{dataset}'", "--root", str(root))
            assert result.returncode == 0, result.stderr[-2000:]
    result = aggregate.aggregate(root, reps=50)
    groups = {(g["suite"], g["dataset_kind"], g["context_length"]): g["methods"] for g in result["groups"]}
    assert groups == {("noisy_state", kind, 20): ["decision_mamba", "decision_transformer"]
                      for kind in ("expert", "medium", "replay")}
    report = cli("harness.report", str(root), "--reps", "50")
    assert report.returncode == 0, report.stderr
    assert "offline: noisy_state/expert/ctx20" in (root / "report" / "leaderboard.md").read_text()


def test_default_run_directory_names_the_dataset_and_online_ones_are_unchanged():
    from harness import config
    config.parse(["gin/offline/decision_mamba.gin"], ["Offline.dataset = 'datasets/cartpole_swingup-expert-v0'"])
    assert config.make_experiment().run_dir("results").as_posix() == (
        "results/offline/decision_mamba/noisy_state/cartpole_swingup/cartpole_swingup-expert-v0/ctx20/seed0")
    config.parse(["gin/sac_noisy.gin"])
    assert config.make_experiment().run_dir("results").as_posix() == (
        "results/default/sac/noisy_state/cartpole_swingup/ctx32/seed0")


def test_task_in_the_dataset_path_is_each_runs_own_task():
    from harness import config
    config.parse(["gin/offline/decision_mamba.gin"], ["Offline.dataset = 'datasets/{task}-medium-v0'",
                                                      "Experiment.task = 'walker_walk'"])
    assert config.make_experiment().run_dir("results").as_posix() == (
        "results/offline/decision_mamba/noisy_state/walker_walk/walker_walk-medium-v0/ctx20/seed0")


def test_one_dataset_binding_serves_every_task_of_a_sweep(source_run, tmp_path):
    datasets_dir = tmp_path / "datasets"
    result = cli("harness.collect", str(source_run), "--kind", "expert", "--episodes", "2",
                 "--out", str(datasets_dir / "cartpole_swingup-expert-v0"))
    assert result.returncode == 0, result.stderr
    sweep_file = tmp_path / "offline.gin"
    sweep_file.write_text(
        "include 'gin/sweeps/offline_expert.gin'\n"
        "Sweep.tasks = ['cartpole_swingup']\nSweep.seeds = [0]\nSweep.overlays = ['gin/offline/quick.gin']\n"
        f"Sweep.bindings = [\"Offline.dataset = '{datasets_dir}/{{task}}-expert-v0'\", "
        "'Offline.gradient_steps = 20', 'Offline.eval_every = 20', 'Offline.log_every = 10']\n"
        f"Sweep.results_dir = '{tmp_path / 'results'}'\n")
    result = cli("harness.sweep", "--gin", str(sweep_file), "--workers", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    for policy in ("decision_transformer", "decision_mamba"):
        run_dir = (tmp_path / "results" / "offline_expert" / policy / "noisy_state" / "cartpole_swingup"
                   / "cartpole_swingup-expert-v0" / "ctx20" / "seed0")
        info = json.loads((run_dir / "run.json").read_text())
        assert (info["method"], info["dataset_kind"], info["task"], info["status"]) == \
            (policy, "expert", "cartpole_swingup", "done")


@pytest.mark.parametrize("policy_class, mixer", [("DecisionTransformer", "attention"), ("DecisionMamba", "mamba")])
def test_lockstep_evaluation_plays_the_episodes_each_env_plays_alone(policy_class, mixer):
    """Reference twin of the evaluation: the episodes played together in one batch, one acting call
    per step, have the returns of one call per episode (a float64 policy on noisy cartpole)."""
    import torch
    import envs
    from agents import sequence_policy
    from agents.return_conditioned import ReturnConditionedAgent
    from harness.offline_runner import evaluate_episodes
    from tests.agents.test_sequence_policy import MIXERS
    torch.manual_seed(0)
    policy = getattr(sequence_policy, policy_class)((5,), 1, mixer=MIXERS[mixer], embed_dim=16, context_length=6)
    agent = ReturnConditionedAgent(policy.double(), 1)
    make = lambda i: envs.make_env("noisy_state", "cartpole_swingup", seed=i)
    seeds = [11, 12, 13]
    together, times = evaluate_episodes(agent, [make(i) for i in range(3)], seeds, 300.0)
    alone = [evaluate_episodes(agent, [make(0)], [seed], 300.0)[0][0] for seed in seeds]
    assert len(times) == 125 and len(set(np.round(together, 6))) == 3
    np.testing.assert_allclose(together, alone, rtol=1e-9)
