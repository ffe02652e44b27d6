"""`python -m harness.bench env`: environment steps per second of both suites on one CPU core.

For each task: the noisy_state suite (physics only, no rendering) and the image suite (physics
plus one 64x64 frame per agent step), driven by uniform random actions in [-1, 1] with episode
resets included. Env steps count simulator steps (agent steps x action repeat). The process and
every thread it starts (llvmpipe's rasterizer threads included) are pinned to one core, and rates
are given per second of that core's time (process CPU time) and per second of wall-clock time; the
two agree on an idle machine, and the CPU-time rate is the one that stays meaningful when other
processes share the core. Each rate is the best of `--repeats` runs. Prints a Markdown table.
"""
import datetime
from importlib import metadata
import os
import platform
import sys
import time

import numpy as np

import envs
from envs import suites
from harness.cli import CliParser


def parse_args(argv):
    parser = CliParser(prog="python -m harness.bench env", doc=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(suites.DEFAULT_TASKS), metavar="TASK",
                        help="tasks to measure (default: the default DMC set)")
    parser.add_argument("--env-steps", type=int, default=2000, help="env steps per run (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is reported")
    parser.add_argument("--image-size", type=int, default=64, help="side of the image suite's frames (default 64)")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the first allowed)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    args = parser.parse_args(argv)
    if args.env_steps < 1 or args.repeats < 1:
        parser.error("--env-steps and --repeats must be positive")
    return args


def pin_to_one_core(cpu: int | None) -> int:
    """Pins this process's threads to one core; threads started later inherit it. Returns the core."""
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[0] if cpu is None else cpu
    if cpu not in allowed:
        raise ValueError(f"--cpu {cpu} is not one of the allowed cores {allowed}")
    for thread_id in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(thread_id), {cpu})
    return cpu


def env_steps_per_second(env, env_steps: int, rng: np.random.Generator) -> tuple[float, float]:
    """Runs random actions for at least `env_steps` env steps (resets included).

    Returns (env steps per CPU-second, env steps per wall-clock second).
    """
    env.reset()
    env.step(rng.uniform(-1, 1, env.action_dim))  # first frame creates the GL context: not timed
    env.reset()
    done, cpu_start, wall_start = 0, time.process_time(), time.perf_counter()
    while done < env_steps:
        _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, env.action_dim))
        done += info["env_steps"]
        if terminated or truncated:
            env.reset()
    return done / (time.process_time() - cpu_start), done / (time.perf_counter() - wall_start)


def measure(task: str, args) -> dict:
    """Best-of-repeats rates of both suites for one task, and the render time they imply."""
    rng = np.random.default_rng(0)
    row = {"task": task}
    for suite in ("noisy_state", "image"):  # the partially observed suites cost the same as these
        env = envs.make_env(suite, task, seed=0, image_size=args.image_size)
        runs = [env_steps_per_second(env, args.env_steps, rng) for _ in range(args.repeats)]
        row[suite + "_cpu"] = max(cpu for cpu, _ in runs)
        row[suite + "_wall"] = max(wall for _, wall in runs)
        row["repeat"] = env.action_repeat
        if suite == "image":
            row["renderer"] = gl_renderer(env)
        env.close()
    # per agent step: image time - state time = one frame
    row["render_ms"] = 1e3 * row["repeat"] * (1 / row["image_cpu"] - 1 / row["noisy_state_cpu"])
    return row


def gl_renderer(env) -> str:
    """The OpenGL renderer string of the env's context (llvmpipe on CPU, the GPU's name on GPU)."""
    try:
        from OpenGL import GL

        with env.physics.contexts.gl.make_current() as context:
            return context.call(lambda: GL.glGetString(GL.GL_RENDERER).decode())
    except Exception as error:  # diagnostics only: never fail the benchmark for it
        return f"unknown ({type(error).__name__})"


def machine_description(cpu: int | None) -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = "all cores" if cpu is None else f"pinned to core {cpu}"
    return f"{model}, {os.cpu_count()} cores visible, {cores}"


def format_table(rows) -> str:
    lines = [
        "| task | action repeat | noisy_state (no rendering) env steps/s, CPU / wall "
        "| image (rendering) env steps/s, CPU / wall | render ms/frame (CPU) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| {row['task']} | {row['repeat']} | {row['noisy_state_cpu']:.0f} / "
                     f"{row['noisy_state_wall']:.0f} | {row['image_cpu']:.0f} / {row['image_wall']:.0f} "
                     f"| {row['render_ms']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for task in args.tasks:
            suites.task_spec(task)
        cpu = None if args.no_pin else pin_to_one_core(args.cpu)
        rows = [measure(task, args) for task in args.tasks]
    except (ValueError, envs.rendering.RenderingUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"# Environment throughput, {datetime.date.today().isoformat()}")
    print(f"machine: {machine_description(cpu)}; renderer: {rows[0]['renderer']} "
          f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')}); mujoco {metadata.version('mujoco')}, "
          f"dm_control {metadata.version('dm-control')}")
    print(f"best of {args.repeats} runs of {args.env_steps} env steps, random actions, "
          f"{args.image_size}x{args.image_size} frames\n")
    print(format_table(rows))
    slowest = min(rows, key=lambda row: row["image_cpu"])
    print(f"\nslowest image task: {slowest['task']} at {slowest['image_cpu']:.0f} env steps per CPU-second "
          f"({slowest['image_wall']:.0f} per wall-clock second); target >= 300")
    return 0
