"""The report's tables beyond one group's leaderboard, as (header, rows) of text cells, built from
`harness.aggregate`'s result: the probability-of-improvement matrix, IQM and hours per context
length side by side, wall clock, GPU hours, machines, planned-run coverage and paper claims.

Every row order is fixed (sorted keys or the leaderboard's method order) and every number has a fixed
format, so the same result gives the same text.
"""
import collections

from harness.claims import NOT_MEASURED
from harness.report_figures import method_order, short_device


def interval(estimate):
    return f"{estimate['point']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _hours(value):
    return "-" if value is None else f"{value:.2f}"


def improvement_matrix(group):
    """Rows X, columns Y, cell P(X > Y) [CI] (leaderboard order); P(Y > X) = 1 - P(X > Y), with the
    CI mirrored, since ties count one half."""
    order = method_order(group)
    cells = {}
    for pair in group["probability_of_improvement"]:
        cells[(pair["x"], pair["y"])] = pair
        cells[(pair["y"], pair["x"])] = {"point": 1 - pair["point"], "low": 1 - pair["high"], "high": 1 - pair["low"]}
    rows = [(x, *("-" if x == y else interval(cells[(x, y)]) for y in order)) for x in order]
    return ("P(row > column)", *order), rows


def context_length_tables(result):
    """{(experiment, suite): ((header, IQM rows), (header, train-loop hours rows))} for every
    experiment and suite with more than one context length: rows are the methods, columns the
    context lengths, '-' where a method did not run one. Where the study's runs trained on more than
    one kind of device, each hours cell names its device (one value per device)."""
    groups = collections.defaultdict(list)
    for g in result["groups"]:
        if not g.get("dataset_kind"):
            groups[(g["experiment"], g["suite"])].append(g)
    hours = collections.defaultdict(list)
    for r in result["wall_clock"]["by_context_length"]:
        hours[(r["experiment"], r["suite"], r["context_length"], r["method"])].append(r)
    tables = {}
    for (experiment, suite), gs in sorted(groups.items()):
        lengths = sorted({g["context_length"] for g in gs})
        if len(lengths) < 2:
            continue
        by_length = {g["context_length"]: g for g in gs}
        methods = sorted({m for g in gs for m in g["methods"]})
        header = ("Method", *(f"ctx {t}" for t in lengths))
        iqm = [(m, *(interval(by_length[t]["aggregates"][m]["IQM"]) if m in by_length[t]["methods"] else "-"
                     for t in lengths)) for m in methods]
        cells = {(t, m): hours.get((experiment, suite, t, m), []) for t in lengths for m in methods}
        name_devices = len({r["device"] for rows in cells.values() for r in rows}) > 1
        cost = [(m, *(_hours_on_devices(cells[(t, m)], name_devices) for t in lengths)) for m in methods]
        tables[(experiment, suite)] = ((header, iqm), (header, cost))
    return tables


def _hours_on_devices(rows, name_devices):
    """Train-loop hours of one (method, context length) cell: '-' without rows, else one value per
    device, followed by the device's short name where the table spans several."""
    if not rows:
        return "-"
    return "; ".join(_hours(r["median_train_loop_hours_per_1M_env_steps"])
                     + (f" ({short_device(r['device'])})" if name_devices else "") for r in rows)


WALL_CLOCK_HEADER = ("Experiment", "Method", "Suite", "Context length", "Device", "Runs",
                     "Train-loop h / 1M env steps", "End-to-end h / 1M env steps", "Mean wall-clock (s)",
                     "Median env steps/s")


def wall_clock_rows(result):
    return [(r["experiment"], r["method"], r["suite"], str(r["context_length"]), r["device"], str(r["num_runs"]),
             _hours(r.get("median_train_loop_hours_per_1M_env_steps")),
             _hours(r["median_hours_per_1M_env_steps"]), f"{r['mean_wall_clock_s']:.1f}",
             f"{r['median_env_steps_per_s']:.1f}")
            for r in result["wall_clock"]["by_context_length"]]


GPU_HEADER = ("Experiment", "Method", "Runs", "GPU hours", "Runs without a record")


def gpu_rows(result):
    """Per (experiment, method row), then one 'all' row per experiment."""
    gpu = result["resources"]["gpu"]
    rows = [(r["experiment"], r["method"], str(r["runs"]), f"{r['gpu_hours']:.2f}", str(r["runs_without_record"]))
            for r in gpu["by_method"]]
    rows += [(r["experiment"], "all", str(r["runs"]), f"{r['gpu_hours']:.2f}", str(r["runs_without_record"]))
             for r in gpu["by_experiment"]]
    return rows


def gpu_summary(result):
    gpu = result["resources"]["gpu"]
    unrecorded = f" ({gpu['runs_without_record']} without a record)" if gpu["runs_without_record"] else ""
    summary = (f"GPU hours spent: {gpu['total_hours']:.2f} in total over {gpu['runs']} run(s){unrecorded}, "
               "from each run.json's gpu_seconds (failed and unfinished runs included).")
    if gpu.get("sweeps"):
        held = sum(row["gpu_hours_held"] for row in gpu["sweeps"])
        summary += (" Runs that shared a GPU each count their whole wall clock there; the sweeps that ran "
                    f"them held their GPUs for {held:.2f} hours ({len(gpu['sweeps'])} sweep(s), from each "
                    "sweep.json's gpu_seconds_held: a GPU counts while at least one run was on it).")
    return summary


MACHINES_HEADER = ("GPU", "CPU", "CPUs", "torch", "Platform", "Hosts", "Runs", "Experiments")


def machine_rows(result):
    return [(m["cuda_device"], m["cpu_model"], m["cpu_count"], m["torch"], m["platform"], str(m["hosts"]),
             str(m["runs"]), ", ".join(m["experiments"])) for m in result["resources"]["machines"]]


COVERAGE_HEADER = ("Experiment", "Method", "Suite", "Context length", "Planned", "Done", "Failed",
                   "Unfinished", "Not started", "Tasks short of seeds (done/planned)")


def coverage_rows(result):
    return [(r["experiment"], r["method"], r["suite"], str(r["context_length"]), str(r["planned"]),
             str(r["done"]), str(r["failed"]), str(r["unfinished"]), str(r["not_started"]),
             ", ".join(r["short"]) or "-") for r in result.get("coverage") or []]


CLAIMS_HEADER = ("Claim", "Source", "Compared (x vs y)", "Expected", "IQM x - y [CI]", "P(X > Y) [CI]",
                 "Runs x / y", "Verdict")
_EXPECTED = {"x_better": "x > y", "x_worse": "x < y", "x_not_worse": "x >= y - {m}", "similar": "|x - y| < {m}"}


def claim_rows(result):
    rows = []
    for c in result.get("claims") or []:
        x, y, measured = c["x"], c["y"], c["measured"]
        where = f"{c['experiment']}: {c['suite']}"
        if x["context_length"] == y["context_length"]:
            compared = f"{x['method']} vs {y['method']} ({where}/ctx{x['context_length']})"
        else:
            compared = f"{x['method']} ctx{x['context_length']} vs {y['method']} ctx{y['context_length']} ({where})"
        expected = _EXPECTED[c["expect"]].format(m=f"{c.get('margin') or 0:g}")
        if measured is None:
            numbers = ("-", "-", "-")
        else:
            numbers = (interval(measured["iqm_difference"]), interval(measured["probability_of_improvement"]),
                       f"{measured['runs_x']} / {measured['runs_y']} on {len(measured['tasks'])} task(s)")
        rows.append((c["claim"], c["source"], compared, expected, *numbers, c["verdict"]))
    return rows


def claims_summary(result):
    counts = collections.Counter(c["verdict"] for c in result.get("claims") or [])
    order = ("agree", "disagree", "inconclusive", NOT_MEASURED)
    return ", ".join(f"{counts[v]} {v}" for v in order if counts[v]) or "no claims"
