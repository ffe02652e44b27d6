"""What run.json records about where and how a run trained: the machine, TF32, the agent's compile
mode and the GPU time, summed over resumes (on CPU: a CPU run records 0 GPU seconds, and a forced
'on a GPU' clock checks the summing through the real write paths)."""
import json

import pytest
import torch

from harness import rundir
from harness import run as run_cli_module
from tests.harness.test_run_safety import SHORT, finished_run, killed_copy, main  # noqa: F401 (fixtures)


def read_info(out):
    return json.loads((out / "run.json").read_text())


def test_a_run_records_its_machine_tf32_compile_mode_and_gpu_seconds(finished_run):  # noqa: F811
    info = read_info(finished_run)
    machine = info["machine"]
    assert set(machine) == {"hostname", "platform", "cpu_model", "cpu_count", "torch", "cuda_device"}
    assert machine["torch"] == torch.__version__ and machine["cpu_count"] >= 1 and machine["hostname"]
    assert machine["cuda_device"] is None  # trained on the CPU
    assert info["machines"] == [machine]
    assert info["tf32"] is None  # no CUDA matmuls to set
    assert info["compile_mode"] == "none"  # LatentSAC's 'auto' resolves to eager off CUDA
    assert info["gpu_seconds"] == 0.0


def test_resume_adds_its_gpu_time_to_the_recorded_time(finished_run, tmp_path, main, monkeypatch):  # noqa: F811
    out = killed_copy(finished_run, tmp_path)
    info = read_info(out)
    other = dict(info["machine"], hostname="another-host", cuda_device="NVIDIA H100 80GB HBM3")
    (out / "run.json").write_text(json.dumps(dict(info, gpu_seconds=100.0, machines=[other])))
    original = rundir.RunDirectory.count_gpu_time
    # As if this process had held a GPU since 5 s before it chose its device.
    monkeypatch.setattr(rundir.RunDirectory, "count_gpu_time",
                        lambda self, recorded, since, on_gpu: original(self, recorded, since - 5.0, True))
    result = main(*SHORT, "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    resumed = read_info(out)
    assert resumed["status"] == "done"
    assert 105.0 <= resumed["gpu_seconds"] < 160.0  # 100 recorded + 5 + this short process, not reset
    assert resumed["machines"] == [other, resumed["machine"]]  # every machine the run trained on


def test_overwrite_starts_the_run_again_but_keeps_the_gpu_time_spent(finished_run, tmp_path, main):  # noqa: F811
    out = killed_copy(finished_run, tmp_path)
    (out / "run.json").write_text(json.dumps(dict(read_info(out), gpu_seconds=42.5)))
    result = main(*SHORT, "--out", str(out), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert read_info(out)["gpu_seconds"] == 42.5  # spent, though the run started again (on CPU: + 0)


def test_the_gpu_clock_sums_the_recorded_time_and_this_process(tmp_path, monkeypatch):
    readings = [1000.0, 1010.0]  # then stays at 1010
    monkeypatch.setattr(rundir.time, "monotonic", lambda: readings.pop(0) if len(readings) > 1 else readings[0])
    directory = rundir.RunDirectory(tmp_path / "run")
    directory.count_gpu_time(7.25, since=990.0, on_gpu=True)
    assert directory.write_info({"status": "running"})["gpu_seconds"] == 17.25  # 7.25 + (1000 - 990)
    assert directory.update_info(status="done")["gpu_seconds"] == 27.25
    cpu = rundir.RunDirectory(tmp_path / "cpu")
    cpu.count_gpu_time(None, since=0.0, on_gpu=False)
    assert cpu.write_info({})["gpu_seconds"] == 0.0
    corrupt = rundir.RunDirectory(tmp_path / "corrupt")
    corrupt.count_gpu_time("3 hours", since=0.0, on_gpu=False)
    assert corrupt.write_info({})["gpu_seconds"] == 0.0
    assert "gpu_seconds" not in rundir.RunDirectory(tmp_path / "plain").write_info({})  # no clock, no field


@pytest.mark.parametrize("enabled", [True, False])
def test_tf32_is_set_for_cuda_devices_only(enabled):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert run_cli_module.configure_tf32("cpu", enabled) is None
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved
        assert run_cli_module.configure_tf32("cuda:0", enabled) is enabled  # the flags need no GPU to be set
        assert torch.backends.cuda.matmul.allow_tf32 is enabled and torch.backends.cudnn.allow_tf32 is enabled
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_no_tf32_is_an_option_of_harness_run():
    assert run_cli_module.parse_args(["--gin", "x.gin", "--no-tf32"]).no_tf32
    assert not run_cli_module.parse_args(["--gin", "x.gin"]).no_tf32


def test_source_digest_names_the_code_not_the_git_directory(tmp_path):
    """The digest changes with any .py or .gin file under the source directories, and with nothing
    else (a copy of the tree without .git, or with files elsewhere, has the same digest)."""
    from harness import rundir
    for directory in rundir.SOURCE_DIRS:
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "a.py").write_text(f"# {directory}\n")
    (tmp_path / "gin" / "x.gin").write_text("A.b = 1\n")
    first = rundir.source_digest(tmp_path)
    assert len(first) == 16 and first == rundir.source_digest(tmp_path)
    (tmp_path / "README.md").write_text("docs change nothing")
    (tmp_path / "models" / "notes.txt").write_text("nor do other files")
    assert rundir.source_digest(tmp_path) == first
    (tmp_path / "gin" / "x.gin").write_text("A.b = 2\n")
    assert rundir.source_digest(tmp_path) != first
    (tmp_path / "gin" / "x.gin").write_text("A.b = 1\n")
    (tmp_path / "models" / "a.py").rename(tmp_path / "models" / "b.py")  # a renamed file counts too
    assert rundir.source_digest(tmp_path) != first
