"""Where the runs of a sweep execute: a local process pool or a Ray cluster, behind one interface.

An executor runs `Job`s (a command line, its environment and a log file) and reports each one's exit
status. The sweep decides what to run and when to retry; executors only start, watch and stop.

    executor.submit(job)               start (or queue) a job
    executor.wait(timeout_s)           -> [Finished] jobs that ended since the last call
    executor.capacity()                how many more jobs `submit` should be given now
    executor.shutdown(grace_s)         stop everything: SIGTERM, then SIGKILL after grace_s
    executor.gpu_seconds_held()        GPU time held so far (local with GPUs), else None

Every job runs in its own process session, so Ctrl-C in a terminal reaches only the sweep, which
then stops its children itself; a job killed this way leaves a resumable run directory. On Linux a
job also receives SIGTERM when the process that started it dies (even by SIGKILL).
"""
import abc
import ctypes
import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import time


@dataclasses.dataclass(frozen=True)
class Job:
    """One command to run. log_path receives its stdout and stderr (appended). env holds only the
    variables to set on top of the environment of the process that starts the command, so that a
    Ray worker's own settings (CUDA_VISIBLE_DEVICES for its reserved GPUs) reach the run.
    lock_path: a file the command locks (flock) while it runs, or None; on Ray the command starts
    only once that lock is free (or lock_wait_s passed), so a retry does not collide with the
    previous attempt's process, still saving after its worker died. (Locally an attempt has ended
    when the executor reports it.)"""
    key: str
    command: tuple
    log_path: str
    env: dict
    cwd: str
    lock_path: str | None = None
    lock_wait_s: float = 60.0


@dataclasses.dataclass(frozen=True)
class Finished:
    """exit_code: the command's exit status (negative: killed by that signal), None if it never ran;
    error: why the executor itself failed (for example a lost Ray worker), else None."""
    key: str
    exit_code: int | None
    error: str | None = None


# How a signal's death reads in a sweep's manifest: 'killed by SIGKILL', 'terminated by SIGTERM'.
_SIGNAL_VERBS = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}


def signal_reason(exit_code: int | None) -> str | None:
    """'killed by SIGKILL' when `exit_code` says a signal ended the command, else None.

    Two conventions name a signal N: -N from `subprocess` (the process died of it) and 128 + N from
    a shell or a program that caught the signal and exited on it (harness.run exits 130 on SIGINT).
    """
    if exit_code is None or exit_code in (0, 1, 2):
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128
    try:
        signum = signal.Signals(number)
    except ValueError:
        return None
    return f"{_SIGNAL_VERBS.get(signum, 'killed')} by {signum.name}"


class ExecutorError(RuntimeError):
    """The executor cannot start (for example Ray missing or its cluster unreachable)."""


class Executor(abc.ABC):
    """See the module docstring."""

    @abc.abstractmethod
    def submit(self, job: Job) -> None: ...

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> list[Finished]: ...

    @abc.abstractmethod
    def capacity(self) -> int: ...

    @abc.abstractmethod
    def running(self) -> list[str]: ...

    @abc.abstractmethod
    def shutdown(self, grace_s: float = 10.0) -> None: ...

    def gpu_seconds_held(self) -> float | None:
        """GPU seconds this executor held (each GPU while it ran at least one job), None where it
        does not place runs on GPUs itself (Ray: the cluster does)."""
        return None


def _parent_death_signal():
    """Linux: a function for the child (between fork and exec) that asks the kernel to send it
    SIGTERM when its parent dies, so a run never outlives a killed sweep or Ray worker."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


PR_SET_PDEATHSIG = 1
_DIE_WITH_PARENT = _parent_death_signal()


def wait_for_lock(path, timeout_s: float) -> bool:
    """Wait until no process holds the flock on `path` (True), or timeout_s passed (False)."""
    if not path or not os.path.exists(path):
        return True
    deadline = time.monotonic() + timeout_s
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.2)


def start_process(job: Job) -> subprocess.Popen:
    """Start `job` in a new session (its own process group), output appended to its log."""
    os.makedirs(os.path.dirname(job.log_path) or ".", exist_ok=True)
    with open(job.log_path, "ab") as log:
        return subprocess.Popen(list(job.command), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **job.env}, cwd=job.cwd,
                                start_new_session=True, preexec_fn=_DIE_WITH_PARENT)


def stop_processes(processes, grace_s):
    """SIGTERM each process group, wait up to grace_s for all, then SIGKILL the rest."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process, signum):
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class GpuSlots:
    """Which GPU a local job runs on: at most `runs_per_gpu` jobs per GPU, the least loaded first
    (ties: the order given). GPUs are named as CUDA_VISIBLE_DEVICES names them ('0', '1', ...).
    Also the time each GPU was held, i.e. ran at least one job (`held_seconds`): what a sweep cost
    in GPU time, however many runs shared each GPU."""

    def __init__(self, gpus, runs_per_gpu: int, clock=time.monotonic):
        if not gpus or runs_per_gpu < 1:
            raise ExecutorError(f"need at least one GPU and --runs-per-gpu >= 1, got {list(gpus)}, {runs_per_gpu}")
        self.runs_per_gpu = runs_per_gpu
        self.load = {str(gpu): 0 for gpu in gpus}
        self.clock = clock
        self._held_s = 0.0
        self._busy_since = {}  # GPU -> when its load last rose from 0

    def held_seconds(self) -> float:
        """Seconds summed over GPUs during which each one ran at least one job, running ones included."""
        now = self.clock()
        return self._held_s + sum(now - since for since in self._busy_since.values())

    def free(self) -> int:
        return sum(self.runs_per_gpu - n for n in self.load.values())

    def acquire(self) -> str:
        gpu = min(self.load, key=self.load.get)  # min keeps the first of equals: the order given
        if self.load[gpu] >= self.runs_per_gpu:
            raise ExecutorError("GpuSlots.acquire: every GPU is full")
        if self.load[gpu] == 0:
            self._busy_since[gpu] = self.clock()
        self.load[gpu] += 1
        return gpu

    def release(self, gpu: str) -> None:
        self.load[gpu] -= 1
        if self.load[gpu] == 0:
            self._held_s += self.clock() - self._busy_since.pop(gpu)


class LocalExecutor(Executor):
    """Up to `workers` jobs at once as subprocesses of this machine; with `gpus`, each job sees one
    GPU (CUDA_VISIBLE_DEVICES) shared by at most `runs_per_gpu` jobs, and `workers` defaults to
    len(gpus) * runs_per_gpu. `env`: variables set for every job (e.g. harness.mps's pipe directory)."""

    def __init__(self, workers: int | None = None, gpus=None, runs_per_gpu: int = 1, env=None):
        self.env = dict(env or {})
        self.gpu_slots = GpuSlots(gpus, runs_per_gpu) if gpus else None
        if workers is None:
            workers = self.gpu_slots.free() if self.gpu_slots else 1
        if workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self._processes = {}
        self.gpu_of = {}  # job key -> the GPU it runs on, while it runs

    def submit(self, job):
        if self.capacity() < 1:
            raise ExecutorError("LocalExecutor.submit: all workers busy")
        job = dataclasses.replace(job, env={**job.env, **self.env})
        if self.gpu_slots:
            self.gpu_of[job.key] = self.gpu_slots.acquire()
            job = dataclasses.replace(job, env={**job.env, "CUDA_VISIBLE_DEVICES": self.gpu_of[job.key]})
        self._processes[job.key] = start_process(job)

    def capacity(self):
        free = self.workers - len(self._processes)
        return min(free, self.gpu_slots.free()) if self.gpu_slots else free

    def _release(self, key):
        if key in self.gpu_of:
            self.gpu_slots.release(self.gpu_of.pop(key))

    def running(self):
        return list(self._processes)

    def gpu_seconds_held(self):
        return self.gpu_slots.held_seconds() if self.gpu_slots else None

    def wait(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while True:
            finished = [Finished(key, process.returncode) for key, process in self._processes.items()
                        if process.poll() is not None]
            for done in finished:
                del self._processes[done.key]
                self._release(done.key)
            if finished or not self._processes or time.monotonic() >= deadline:
                return finished
            time.sleep(0.1)

    def shutdown(self, grace_s=10.0):
        stop_processes(list(self._processes.values()), grace_s)
        for key in list(self._processes):
            self._release(key)
        self._processes.clear()


def ray_placement(ray) -> dict:
    """The environment variables that tell a run where the Ray task running it was placed
    (harness.device.placement_info reads them). Ray itself sets CUDA_VISIBLE_DEVICES of the worker
    to the GPUs it reserved; the run inherits that."""
    from harness.device import PLACEMENT_GPUS, PLACEMENT_NODE, PLACEMENT_NODE_IP
    return {PLACEMENT_NODE: ray.get_runtime_context().get_node_id(),
            PLACEMENT_NODE_IP: ray.util.get_node_ip_address(),
            PLACEMENT_GPUS: ",".join(str(gpu) for gpu in ray.get_gpu_ids())}


def _run_job_in_ray(job: Job, grace_s: float) -> int:
    """Body of the Ray task: run the job's command where Ray placed it; on cancellation stop it
    before re-raising."""
    import ray
    # A retry may land while the lost attempt's process (its worker dead) is still saving; on
    # timeout the command itself reports the held lock.
    wait_for_lock(job.lock_path, job.lock_wait_s)
    process = start_process(dataclasses.replace(job, env={**job.env, **ray_placement(ray)}))
    try:
        return process.wait()
    except BaseException:  # ray.cancel raises KeyboardInterrupt here; never orphan the run
        stop_processes([process], grace_s)
        raise


class RayExecutor(Executor):
    """One Ray task per job, each reserving `num_cpus` / `num_gpus` of the cluster (a fraction such
    as 0.25 lets four runs share one GPU; Ray sets CUDA_VISIBLE_DEVICES, which the run inherits,
    and the run records its node and GPU ids, see `ray_placement`).

    A task whose worker or node dies ends with an error (Finished.error); Ray does not retry it
    itself (max_retries=0): the sweep does, with --resume, so the retry continues the run
    directory that the dead attempt left on the shared storage.

    address None starts a local Ray instance with `local_cpus` CPUs; 'auto' or 'host:port' joins an
    existing cluster. On a multi-node cluster every node must see the repository and the results
    directory at the same paths (a shared filesystem) and have the same Python environment.
    `max_in_flight` bounds the tasks submitted at once (None: as many as there are jobs).
    """

    def __init__(self, address=None, num_cpus=1.0, num_gpus=0.0, local_cpus=None, max_in_flight=None,
                 grace_s=10.0):
        try:
            import ray
        except ImportError as error:
            raise ExecutorError("--executor ray needs the ray package: pip install 'ray[default]'") from error
        self._ray = ray
        # Ray workers import this module to run the task: give them the repository on their path.
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        python_path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
        options = dict(include_dashboard=False, log_to_driver=False,
                       runtime_env={"env_vars": {"PYTHONPATH": python_path}})
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=local_cpus or os.cpu_count(), **options)
        except Exception as error:  # ConnectionError, RuntimeError, ... from the cluster
            raise ExecutorError(f"cannot start Ray ({address or 'local'}): {str(error).splitlines()[0]}") from error
        self._task = ray.remote(max_retries=0)(_run_job_in_ray).options(
            num_cpus=num_cpus, num_gpus=num_gpus)
        self.max_in_flight = max_in_flight
        self.grace_s = grace_s
        self._refs = {}

    def cluster_cpus(self) -> float:
        return float(self._ray.cluster_resources().get("CPU", 1.0))

    def submit(self, job):
        self._refs[job.key] = self._task.remote(job, self.grace_s)

    def capacity(self):
        limit = self.max_in_flight if self.max_in_flight else 1 << 30
        return limit - len(self._refs)

    def running(self):
        return list(self._refs)

    def wait(self, timeout_s):
        if not self._refs:
            return []
        keys = {ref: key for key, ref in self._refs.items()}
        ready, _ = self._ray.wait(list(keys), num_returns=len(keys), timeout=timeout_s)
        finished = []
        for ref in ready:
            key = keys[ref]
            del self._refs[key]
            try:
                finished.append(Finished(key, self._ray.get(ref)))
            except Exception as error:  # the task or its worker died: report, the sweep may retry
                finished.append(Finished(key, None, f"Ray task failed: {str(error).splitlines()[0]}"))
        return finished

    def shutdown(self, grace_s=10.0):
        for ref in self._refs.values():
            self._ray.cancel(ref)  # KeyboardInterrupt in the task, which stops its process
        if self._refs:
            self._ray.wait(list(self._refs.values()), num_returns=len(self._refs), timeout=grace_s + 5)
        self._refs.clear()
        self._ray.shutdown()
