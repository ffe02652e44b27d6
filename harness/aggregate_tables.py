"""The aggregate's files: `aggregate.json` (harness.aggregate's result as it is) and one CSV per table.

    final_scores, per_task, performance_profiles, sample_efficiency, probability_of_improvement
                              per (experiment, suite, dataset kind, context length) group and row
    wall_clock_runs, wall_clock_by_context_length, gpu_hours, machines    harness.costs
    gpu_hours_held_by_sweeps  where a sweep.json records gpu_seconds_held (harness.costs.sweep_gpu_time)
    excluded                  every run left out, with its reason
    coverage, claims          with --sweep, with --claims
"""
import collections
import csv
import json
import pathlib


def write_outputs(result, out_dir):
    """`aggregate.json` and one CSV per table into `out_dir`; returns the written paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = collections.defaultdict(list)
    for g in result["groups"]:
        where = {"experiment": g["experiment"], "suite": g["suite"], "dataset_kind": g.get("dataset_kind"),
                 "context_length": g["context_length"]}
        for m in g["methods"]:
            for name, est in g["aggregates"][m].items():
                tables["final_scores"].append({**where, "method": m, "metric": name, **est,
                                               "num_runs": g["num_runs"][m],
                                               "num_tasks": len(g["tasks"])})
            for t, row in g["per_task"][m].items():
                tables["per_task"].append({**where, "method": m, "task": t, **row})
            profile = g["performance_profile"][m]
            for i, tau in enumerate(g["performance_profile"]["tau"]):
                tables["performance_profiles"].append(
                    {**where, "method": m, "tau": tau, **{k: v[i] for k, v in profile.items()}})
            curve = g["sample_efficiency"].get(m, {})
            for i, step in enumerate(g["sample_efficiency"]["env_steps"]):
                tables["sample_efficiency"].append(
                    {**where, "method": m, "env_step": step, **{k: v[i] for k, v in curve.items()}})
        for pair in g["probability_of_improvement"]:
            tables["probability_of_improvement"].append({**where, **pair})
    tables["wall_clock_runs"] = result["wall_clock"]["runs"]
    tables["wall_clock_by_context_length"] = result["wall_clock"]["by_context_length"]
    tables["gpu_hours"] = result["resources"]["gpu"]["by_method"]
    if result["resources"]["gpu"].get("sweeps"):
        tables["gpu_hours_held_by_sweeps"] = result["resources"]["gpu"]["sweeps"]
    tables["machines"] = result["resources"]["machines"]
    tables["excluded"] = result["excluded"]
    if result.get("coverage") is not None:
        tables["coverage"] = result["coverage"]
    if result.get("claims") is not None:
        tables["claims"] = [{**{k: c[k] for k in ("id", "experiment", "suite", "expect", "verdict")},
                             "x": f"{c['x']['method']}@ctx{c['x']['context_length']}",
                             "y": f"{c['y']['method']}@ctx{c['y']['context_length']}",
                             **{f"{name}_{k}": (c["measured"] or {}).get(name, {}).get(k)
                                for name in ("iqm_difference", "probability_of_improvement")
                                for k in ("point", "low", "high")}} for c in result["claims"]]
    paths = [out_dir / "aggregate.json"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    for name, rows in tables.items():
        paths.append(out_dir / f"{name}.csv")
        _write_csv(paths[-1], rows)
    return paths


def _write_csv(path, rows):
    fields = list(dict.fromkeys(k for row in rows for k in row)) or ["empty"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (" ".join(map(str, v)) if isinstance(v, list) else v)
                             for k, v in row.items()})
