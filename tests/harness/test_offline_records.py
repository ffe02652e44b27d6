"""The committed offline study (results/offline_v1, docs/offline.md): the expert sweep's 12 planned
runs, every one finished at 100k gradient steps on the dataset its binding names, and that dataset's
metadata committed beside them, pointing back at the source run whose records are committed too."""
import json

from harness import sweep_plan
from harness.config import REPO_ROOT

ROOT = REPO_ROOT / "results" / "offline_v1"


def test_the_expert_records_are_the_sweeps_runs_all_finished_at_100k_gradient_steps():
    sweep = sweep_plan.load_sweep([REPO_ROOT / "gin" / "sweeps" / "offline_expert.gin"])
    planned = {run["run_dir"] for run in sweep_plan.plan(sweep)}
    root = REPO_ROOT / sweep.directory
    assert len(planned) == 12
    assert {p.parent.relative_to(root).as_posix() for p in root.rglob("run.json")} == planned
    for run_dir in planned:
        info = json.loads((root / run_dir / "run.json").read_text())
        assert (info["status"], info["env_steps"], info["dataset_kind"]) == ("done", 100_000, "expert")
        evals = [json.loads(line) for line in (root / run_dir / "metrics.jsonl").read_text().splitlines()
                 if '"eval"' in line]
        assert [e["env_step"] for e in evals] == list(range(0, 100_001, 10_000))
        assert all(e["act_batch"] == 10 and len(e["returns"]) == 10 for e in evals)


def test_each_dataset_names_a_committed_source_run_of_its_task():
    for kind, step in (("expert", 100_000), ("medium", None)):
        for task in ("cartpole_swingup", "walker_walk"):
            meta = json.loads((ROOT / "datasets" / f"{task}-{kind}-v0" / "metadata.json").read_text())["harness"]
            assert (meta["kind"], meta["task"], meta["suite"], meta["episodes"]) == (kind, task, "noisy_state", 100)
            source = ROOT / "offline_sources" / meta["run"].split("/offline_sources/", 1)[1]
            info = json.loads((source / "run.json").read_text())
            assert (info["status"], info["task"], info["obs_noise_std"]) == ("done", task, meta["obs_noise_std"])
            assert step is None or meta["policy_env_step"] == step
