"""What the runs cost and where they ran: wall clock per env step, GPU hours and machines.

    wall_clock(records, labels)   per run and per (experiment, row, suite, context length, device):
        train-loop hours per 1M env steps = 1e6 / median(interval_env_steps_per_s) / 3600
            (the metrics' train lines: the training loop between two lines, evaluation excluded)
        end-to-end hours per 1M env steps = 1e6 / (env_steps / wall_clock_s) / 3600
            (the whole run: prefill, updates and evaluation, summed over resumes)
        device: run.json's `device` (the GPU's name; the last attempt's where a run was resumed), so
            that runs on different kinds of GPU never share a median
    gpu_usage(infos)              GPU hours from run.json's `gpu_seconds`, of every run whatever its
                                  status (time spent on a failed run was spent), per experiment and row;
                                  runs that shared a GPU each count their whole wall clock
    sweep_gpu_time(manifests)     GPU hours the sweeps under a root held (sweep.json's `gpu_seconds_held`:
                                  each GPU while it ran at least one run, so shared GPUs count once)
    machines(infos)               the machines runs were trained on (run.json's `machines`)

`infos` are `harness.records.run_infos(root)`: (path, run.json) of every valid run directory. Rows
come out sorted, so tables built from them are the same for the same records.
"""
import collections
import itertools

import numpy as np

from harness.rundir import recorded_seconds

MACHINE_FIELDS = ("cuda_device", "cpu_model", "cpu_count", "torch", "platform")


def hours_per_million(env_steps_per_s):
    return None if not env_steps_per_s else 1e6 / env_steps_per_s / 3600


def wall_clock(records, labels=None):
    """Per-run timing rows and their summary per (experiment, row, suite, context length, device);
    `labels` maps run paths to rows (default: the method). Medians over runs; None where no run
    recorded it."""
    runs = []
    for r in records:
        if not r.wall_clock_s or r.wall_clock_s <= 0 or r.env_steps <= 0:
            continue
        speed = r.env_steps / r.wall_clock_s
        runs.append({"path": r.path, "method": (labels or {}).get(r.path, r.method),
                     "experiment": r.experiment, "suite": r.suite, "task": r.task,
                     "context_length": r.context_length, "device": run_device(r), "seed": r.seed,
                     "env_steps": r.env_steps,
                     "wall_clock_s": r.wall_clock_s, "env_steps_per_s": speed,
                     "train_env_steps_per_s": r.env_steps_per_s,
                     "train_loop_env_steps_per_s": r.train_loop_env_steps_per_s,
                     "train_loop_hours_per_1M_env_steps": hours_per_million(r.train_loop_env_steps_per_s),
                     "hours_per_1M_env_steps": hours_per_million(speed), "gpu_seconds": r.gpu_seconds})
    summary = []
    keyed = lambda row: (row["experiment"], row["method"], row["suite"], row["context_length"], row["device"])
    for (experiment, method, suite, ctx, device), rows in itertools.groupby(sorted(runs, key=keyed), key=keyed):
        rows = list(rows)
        speeds = np.array([row["env_steps_per_s"] for row in rows])
        loop = [row["train_loop_hours_per_1M_env_steps"] for row in rows
                if row["train_loop_hours_per_1M_env_steps"] is not None]
        summary.append({"experiment": experiment, "method": method, "suite": suite, "context_length": ctx,
                        "device": device, "num_runs": len(rows),
                        "mean_wall_clock_s": float(np.mean([row["wall_clock_s"] for row in rows])),
                        "median_env_steps_per_s": float(np.median(speeds)),
                        "median_hours_per_1M_env_steps": float(np.median(1e6 / speeds / 3600)),
                        "median_train_loop_hours_per_1M_env_steps": float(np.median(loop)) if loop else None,
                        "num_runs_train_loop": len(loop)})
    return {"runs": runs, "by_context_length": summary}


def run_device(record):
    """The device a run trained on, as run.json names it ('-' where not recorded)."""
    return _text(record.provenance.get("device"))


def row_label(info):
    return f"{info['method']}+{info['variant']}" if info.get("variant") else info["method"]


def gpu_usage(infos):
    """{'total_hours', 'runs', 'runs_without_record', 'by_experiment': [...], 'by_method': [...]}.

    A run without `gpu_seconds` (written before the field existed) counts in `runs_without_record`;
    a CPU run records 0."""
    by_method = collections.defaultdict(lambda: {"runs": 0, "runs_without_record": 0, "gpu_seconds": 0.0})
    for _, info in infos:
        row = by_method[(info["experiment"], row_label(info))]
        row["runs"] += 1
        seconds = recorded_seconds(info.get("gpu_seconds"))
        if seconds is not None:
            row["gpu_seconds"] += seconds
        else:
            row["runs_without_record"] += 1
    methods = [{"experiment": e, "method": m, "runs": row["runs"], "runs_without_record": row["runs_without_record"],
                "gpu_hours": row["gpu_seconds"] / 3600} for (e, m), row in sorted(by_method.items())]
    experiments = []
    for experiment, rows in itertools.groupby(methods, key=lambda row: row["experiment"]):
        rows = list(rows)
        experiments.append({"experiment": experiment, "runs": sum(r["runs"] for r in rows),
                            "runs_without_record": sum(r["runs_without_record"] for r in rows),
                            "gpu_hours": sum(r["gpu_hours"] for r in rows)})
    return {"total_hours": sum(r["gpu_hours"] for r in experiments),
            "runs": sum(r["runs"] for r in experiments),
            "runs_without_record": sum(r["runs_without_record"] for r in experiments),
            "by_experiment": experiments, "by_method": methods}


def sweep_gpu_time(manifests):
    """[{'sweep': the manifest's path, 'gpu_hours_held': h}] of every sweep manifest that records
    `gpu_seconds_held` (harness.sweep_runner). `manifests`: harness.records.sweep_manifests(root)."""
    rows = []
    for path, data in manifests:
        seconds = recorded_seconds(data.get("gpu_seconds_held"))
        if seconds is not None:
            rows.append({"sweep": path, "gpu_hours_held": seconds / 3600})
    return rows


def machines(infos):
    """[{cuda_device, cpu_model, cpu_count, torch, platform, hosts, runs, experiments}]: each kind of
    machine any part of a run was trained on. Records without `machines` read their `device`."""
    kinds = collections.defaultdict(lambda: {"hosts": set(), "runs": set(), "experiments": set()})
    for path, info in infos:
        seen = info.get("machines") if isinstance(info.get("machines"), list) else None
        if not seen:
            device = info.get("device")
            seen = [{"cuda_device": device if device and device != "cpu" else None}] if device else []
        for machine in seen:
            if not isinstance(machine, dict):
                continue
            kind = kinds[tuple(_text(machine.get(field)) for field in MACHINE_FIELDS)]
            kind["hosts"].add(_text(machine.get("hostname")))
            kind["runs"].add(path)
            kind["experiments"].add(info["experiment"])
    return [{**dict(zip(MACHINE_FIELDS, key)), "hosts": len(value["hosts"] - {"-"}), "runs": len(value["runs"]),
             "experiments": sorted(value["experiments"])} for key, value in sorted(kinds.items())]


def records_updated_at(infos):
    """The latest `updated_at` of the records (ISO 8601 text), None without any: a date that changes
    only when the records do."""
    stamps = [info["updated_at"] for _, info in infos if isinstance(info.get("updated_at"), str)]
    return max(stamps) if stamps else None


def _text(value):
    return "-" if value is None or value == "" else str(value)
