"""`harness.sweep --gpus 0,1 --runs-per-gpu N`: each local run sees one GPU through
CUDA_VISIBLE_DEVICES, at most N runs per GPU (checked on CPU: the runs only report what they see)."""
import sys
import time

import pytest

from harness import executors, sweep
from harness.executors import GpuSlots, Job, LocalExecutor


def job(tmp_path, key, seconds=0.0):
    code = f"import os, time; print(os.environ.get('CUDA_VISIBLE_DEVICES')); time.sleep({seconds})"
    return Job(key, (sys.executable, "-c", code), str(tmp_path / f"{key}.log"), {}, str(tmp_path))


def test_slots_fill_the_least_loaded_gpu_first_and_never_exceed_the_limit():
    slots = GpuSlots(["1", "0"], runs_per_gpu=2)
    assert [slots.acquire() for _ in range(4)] == ["1", "0", "1", "0"]
    assert slots.free() == 0
    with pytest.raises(executors.ExecutorError):
        slots.acquire()
    slots.release("0")
    assert slots.acquire() == "0"


def test_held_time_counts_each_gpu_once_while_any_job_runs_on_it():
    now = [0.0]
    slots = GpuSlots(["0", "1"], runs_per_gpu=2, clock=lambda: now[0])
    assert slots.acquire() == "0"            # t=0: GPU 0 busy
    now[0] = 1.0
    assert slots.acquire() == "1"            # t=1: GPU 1 busy
    now[0] = 2.0
    assert slots.acquire() == "0"            # t=2: a second job on GPU 0 adds no time of its own
    now[0] = 3.0
    slots.release("0")                       # GPU 0 still runs one job
    now[0] = 4.0
    slots.release("1")                       # GPU 1 held 1 -> 4: 3 s
    assert slots.held_seconds() == pytest.approx(3.0 + 4.0)  # GPU 0 still running: 0 -> 4
    now[0] = 5.0
    slots.release("0")                       # GPU 0 held 0 -> 5: 5 s
    now[0] = 9.0
    assert slots.held_seconds() == pytest.approx(8.0)  # nothing runs: idle time does not count
    assert LocalExecutor(workers=2).gpu_seconds_held() is None  # no GPUs given, nothing to count


def test_each_run_sees_its_gpu_and_a_gpu_holds_at_most_runs_per_gpu(tmp_path):
    executor = LocalExecutor(gpus=["0", "1"], runs_per_gpu=2)
    assert executor.workers == 4
    pending = [job(tmp_path, f"run{i}", seconds=0.5 if i < 4 else 0.0) for i in range(6)]
    placed, most_per_gpu = {}, 0
    deadline = time.monotonic() + 60
    while (pending or executor.running()) and time.monotonic() < deadline:
        while pending and executor.capacity() > 0:
            next_job = pending.pop(0)
            executor.submit(next_job)
            placed[next_job.key] = executor.gpu_of[next_job.key]
        per_gpu = [list(executor.gpu_of.values()).count(gpu) for gpu in ("0", "1")]
        most_per_gpu = max(most_per_gpu, *per_gpu)
        executor.wait(timeout_s=0.2)
    assert not pending and not executor.running()
    assert most_per_gpu == 2  # both slots of a GPU were used, never a third
    assert [placed[f"run{i}"] for i in range(4)] == ["0", "1", "0", "1"]  # spread before doubling up
    for key, gpu in placed.items():
        assert (tmp_path / f"{key}.log").read_text().strip() == gpu  # CUDA_VISIBLE_DEVICES of that run
    assert executor.gpu_slots.free() == 4  # every slot released


def test_sweep_options_build_the_gpu_executor():
    args = sweep.parse_args(["--gin", "gin/sweeps/tiny.gin", "--gpus", "0,1", "--runs-per-gpu", "3"])
    executor, parallelism = sweep.make_executor(args, sweep=None)
    assert isinstance(executor, LocalExecutor) and parallelism == 6
    assert executor.gpu_slots.load == {"0": 0, "1": 0} and executor.gpu_slots.runs_per_gpu == 3
    args = sweep.parse_args(["--gin", "gin/sweeps/tiny.gin", "--gpus", "1", "--workers", "1", "--runs-per-gpu", "2"])
    assert sweep.make_executor(args, sweep=None)[1] == 1  # --workers still caps the runs at once
