"""CUDA MPS (Multi-Process Service) for runs that share a GPU.

Without MPS, the processes on one GPU take turns on it (time slicing): with CUDA graphs one run
already keeps the GPU busy, and 8 runs side by side train only ~1.2x as fast as one. Their kernels
are small (batch 32 x 32 steps), so each one fills few SMs; under MPS the kernels of different
processes run on the GPU at the same time, and the same 8 runs trained ~2.9x as fast as without it
(docs/benchmarks.md, "Runs sharing a GPU"). MPS changes no GPU setting: it is a daemon of the
driver's utilities that the runs' CUDA clients connect to through a pipe directory.

    with MpsDaemon() as daemon:       # nvidia-cuda-mps-control -d; 'quit' on exit
        env = daemon.env              # CUDA_MPS_PIPE_DIRECTORY, CUDA_MPS_LOG_DIRECTORY for each run

`harness.sweep --mps` runs one daemon for the sweep's lifetime in a fresh directory of its own, so it
never talks to (or stops) a daemon that someone else started, and prints the two variables that let
a second sweep (another study, started without --mps) put its runs on the same daemon. A run records
in run.json's `placement.cuda_mps` whether its environment pointed it at an MPS daemon.
"""
import os
import shutil
import subprocess
import tempfile

CONTROL = "nvidia-cuda-mps-control"
PIPE_VARIABLE = "CUDA_MPS_PIPE_DIRECTORY"
LOG_VARIABLE = "CUDA_MPS_LOG_DIRECTORY"
TIMEOUT_S = 30.0


class MpsError(RuntimeError):
    """The MPS daemon could not be started (one line, for the command line)."""


class MpsDaemon:
    """One MPS control daemon with its pipe and log directories under a fresh temporary directory.
    `control`: the control program (a name looked up on PATH, or a path)."""

    def __init__(self, control: str = CONTROL):
        self.control = control
        self.binary = None
        self.directory = None
        self.env = {}

    def start(self) -> "MpsDaemon":
        self.binary = shutil.which(self.control)
        if self.binary is None:
            raise MpsError(f"--mps needs {self.control} on PATH (it comes with the NVIDIA driver's utilities)")
        self.directory = tempfile.mkdtemp(prefix="harness-mps-")
        self.env = {PIPE_VARIABLE: os.path.join(self.directory, "pipe"),
                    LOG_VARIABLE: os.path.join(self.directory, "log")}
        for path in self.env.values():
            os.makedirs(path)
        result = self._control(["-d"])
        if result.returncode != 0:
            self._remove_directory()
            detail = (result.stderr or result.stdout or "").strip().splitlines()
            raise MpsError(f"{self.control} -d failed with exit status {result.returncode}"
                           + (f": {detail[-1]}" if detail else ""))
        return self

    def stop(self) -> None:
        """Ask the daemon to quit (it stops its server once no client is left) and remove its files."""
        if self.directory is None:
            return
        try:
            self._control([], stdin="quit\n")
        except (OSError, subprocess.TimeoutExpired):
            pass  # a daemon that does not answer is left to the machine; its files go anyway
        self._remove_directory()

    def _control(self, args, stdin=None):
        return subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=TIMEOUT_S)

    def _remove_directory(self):
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def share_hint(env) -> str:
    """How another process joins the daemon whose variables are `env`: the shell assignments to set.
    A second sweep started with them and without --mps runs its runs on the same daemon (so two
    studies' runs overlap on one GPU) for as long as the sweep that started it runs."""
    return " ".join(f"{name}={env[name]}" for name in (PIPE_VARIABLE, LOG_VARIABLE))


def in_use(environ=None) -> bool:
    """Whether an environment points CUDA clients at an MPS daemon's pipe directory."""
    environ = os.environ if environ is None else environ
    return bool(environ.get(PIPE_VARIABLE))
