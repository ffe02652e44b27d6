"""Leaderboard report: `python -m harness.report RESULTS_DIR [--out DIR] [--reps N] [--seed S]`.

Aggregates RESULTS_DIR (see harness.aggregate; its JSON and CSV tables are written too) and writes

    <out>/leaderboard.md        tables to paste into a paper, linking figures/*.png
    <out>/index.html            one page whose figures are embedded (base64 PNG data URIs): it reads
                                alone; its links lead to the SVG figures and the run directories
    <out>/figures/*.png, *.svg

Per (experiment, suite, context length) group: the leaderboard, what each row ran, final return per
task (a cell with fewer than 3 seeds (MIN_SEEDS) is marked, with a warning: its intervals are not
meaningful), provenance per method (commit, package versions, device, bindings, a config.gin), every
run with a link to its directory, and the figures of harness/report_figures.py. Methods appear in one
order everywhere, best IQM first. Then wall-clock cost and the excluded, incomplete and failed runs
with their reasons. The default output directory is RESULTS_DIR/report.
"""
import base64
import datetime
import html
import os
import pathlib
import string
import sys

from harness import aggregate as aggregate_lib
from harness.report_figures import method_order, render_figures, section_label

MIN_SEEDS = 3  # fewer runs per task than this: bootstrap intervals say little

TEMPLATE = pathlib.Path(__file__).with_name("report_template.html")


def condition_rows(group):
    """(row, world model, variant, obs noise std, action noise std) in leaderboard order."""
    show = lambda value: "-" if value is None or value == "" else str(value)
    return [(m, *(show(group["conditions"][m][k]) for k in
                  ("world_model", "variant", "obs_noise_std", "action_noise_std")))
            for m, _, _ in leaderboard_rows(group, ["IQM"])]


CONDITIONS_HEADER = ("Method", "World model", "Variant", "Obs noise std", "Action noise std")


def leaderboard_rows(group, metric_names):
    """(method, [formatted 'point [low, high]' per metric], runs per task), best IQM first."""
    return [(m, [_interval(group["aggregates"][m][k]) for k in metric_names], group["num_runs"][m])
            for m in method_order(group)]


def per_task_rows(group):
    """(method, ['mean ± std (n)' final return per task]) in leaderboard order; '⚠' marks fewer
    than MIN_SEEDS runs."""
    rows = []
    for m in method_order(group):
        cells = [f"{s['mean_return']:.1f} ± {s['std_return']:.1f} ({s['num_runs']})"
                 + (" ⚠" if s["num_runs"] < MIN_SEEDS else "")
                 for s in (group["per_task"][m][t] for t in group["tasks"])]
        rows.append((m, cells))
    return rows


def few_seed_warnings(group):
    """One line per (method, task) cell with fewer than MIN_SEEDS runs."""
    return [f"{section_label(group)}: {m} has {s['num_runs']} seed(s) on {t}, fewer than {MIN_SEEDS}: "
            "its intervals and mean are not meaningful"
            for m in method_order(group) for t in group["tasks"]
            for s in [group["per_task"][m][t]] if s["num_runs"] < MIN_SEEDS]


class Link:
    """A table cell that links `text` to `href` (relative to the report directory)."""

    def __init__(self, text, href):
        self.text, self.href = text, href

    def __str__(self):
        return self.text


def run_rows(group, href):
    """(method, task, seed, final return, Link to the run directory) of every run, leaderboard order."""
    return [(m, t, str(run["seed"]), f"{run['returns'][-1]:.1f}", Link(run["path"], href(run["path"])))
            for m in method_order(group) for t in group["tasks"] for run in group["runs_detail"][m][t]]


def provenance_rows(group, href):
    """(method, runs, commits, versions, devices, bindings, Link to one config.gin) per method: the
    distinct values its runs recorded in run.json."""
    rows = []
    for m in method_order(group):
        runs = [run for t in group["tasks"] for run in group["runs_detail"][m][t]]
        distinct = lambda values: "; ".join(sorted({v for v in values if v})) or "-"
        versions = distinct(", ".join(f"{k} {v}" for k, v in sorted((run.get("versions") or {}).items()))
                            for run in runs)
        per_cell = ("Experiment.seed", "Experiment.task", "Experiment.name", "Experiment.context_length")
        bindings = distinct("; ".join(b for b in (run.get("bindings") or [])
                                      if not b.replace(" ", "").startswith(per_cell)) for run in runs)
        config = runs[0]["path"] + "/config.gin"
        rows.append((m, str(len(runs)), distinct(run.get("git_commit") for run in runs), versions,
                     distinct(run.get("device") for run in runs), bindings, Link(config, href(config))))
    return rows


PROVENANCE_HEADER = ("Method", "Runs", "Commit", "Versions", "Device", "Bindings", "Config (one run)")
RUNS_HEADER = ("Method", "Task", "Seed", "Final return", "Run directory")


def wall_clock_rows(result):
    return [(r["experiment"], r["method"], r["suite"], str(r["context_length"]), str(r["num_runs"]),
             f"{r['mean_wall_clock_s']:.1f}", f"{r['median_env_steps_per_s']:.1f}",
             f"{r['median_hours_per_1M_env_steps']:.2f}")
            for r in result["wall_clock"]["by_context_length"]]


WALL_CLOCK_HEADER = ("Experiment", "Method", "Suite", "Context length", "Runs", "Mean wall-clock (s)",
                     "Median env steps/s", "Hours per 1M env steps")
EXCLUDED_HEADER = ("Run directory", "Kind", "Reason")


def leaderboard_markdown(result, figures, href):
    lines = [f"# Leaderboard: {result['results_dir']}", "",
             f"Scores are return / 1000 at the final evaluation. Brackets: {result['confidence']:.0%} "
             f"stratified-bootstrap CIs ({result['reps']} reps, seed {result['seed']}); "
             f"{result['num_runs_included']} runs included.", ""]
    lines += [f"> warning: {note}" for note in result["warnings"]] + [""] * bool(result["warnings"])
    for g in result["groups"]:
        lines += [f"## {section_label(g)} ({len(g['tasks'])} tasks)", ""]
        lines += [f"> warning: {note}" for note in few_seed_warnings(g)] + [""] * bool(few_seed_warnings(g))
        lines += _md_table(("Method", *result["metric_names"], "Runs/task"),
                           [(m, *cells, str(n)) for m, cells, n in leaderboard_rows(g, result["metric_names"])])
        lines += ["What each row ran:", ""] + _md_table(CONDITIONS_HEADER, condition_rows(g))
        lines += ["Final return per task, mean ± std (runs):", ""]
        lines += _md_table(("Method", *g["tasks"]), [(m, *cells) for m, cells in per_task_rows(g)])
        lines += [f"![{f.title}](figures/{f.filename}) ([SVG](figures/{f.stem}.svg))"
                  for f in figures if f.section == section_label(g)]
        lines += ["", "Provenance (from each run's run.json):", ""]
        lines += _md_table(PROVENANCE_HEADER, provenance_rows(g, href))
        lines += ["Runs:", ""] + _md_table(RUNS_HEADER, run_rows(g, href))
    if result["wall_clock"]["by_context_length"]:
        lines += ["## Wall-clock", ""] + _md_table(WALL_CLOCK_HEADER, wall_clock_rows(result))
        lines += [f"![{f.title}](figures/{f.filename}) ([SVG](figures/{f.stem}.svg))"
                  for f in figures if f.section == "wall-clock"]
        lines += [""]
    lines += ["## Excluded, incomplete and failed runs", ""]
    lines += (_md_table(EXCLUDED_HEADER, [(e["path"], e["kind"], e["reason"]) for e in result["excluded"]])
              if result["excluded"] else ["None.", ""])
    return "\n".join(lines).rstrip() + "\n"


def html_page(result, figures, href):
    warning = lambda note: f'<div class="warning">warning: {html.escape(note)}</div>'
    parts = [warning(n) for n in result["warnings"]]
    for g in result["groups"]:
        parts.append(f"<h2>{html.escape(section_label(g))} ({len(g['tasks'])} tasks)</h2>")
        parts += [warning(n) for n in few_seed_warnings(g)]
        parts.append(_html_table(("Method", *result["metric_names"], "Runs/task"),
                                 [(m, *cells, str(n)) for m, cells, n in leaderboard_rows(g, result["metric_names"])]))
        parts += ["<p>What each row ran:</p>", _html_table(CONDITIONS_HEADER, condition_rows(g))]
        parts.append("<p>Final return per task, mean ± std (runs):</p>")
        parts.append(_html_table(("Method", *g["tasks"]), [(m, *c) for m, c in per_task_rows(g)]))
        parts += [_html_figure(f) for f in figures if f.section == section_label(g)]
        parts += ["<p>Provenance (from each run's run.json):</p>",
                  _html_table(PROVENANCE_HEADER, provenance_rows(g, href), reason_column=3)]
        parts += ["<details><summary>Runs</summary>", _html_table(RUNS_HEADER, run_rows(g, href)), "</details>"]
    if result["wall_clock"]["by_context_length"]:
        parts += ["<h2>Wall-clock</h2>", _html_table(WALL_CLOCK_HEADER, wall_clock_rows(result))]
        parts += [_html_figure(f) for f in figures if f.section == "wall-clock"]
    parts.append("<h2>Excluded, incomplete and failed runs</h2>")
    parts.append(_html_table(EXCLUDED_HEADER, [(e["path"], e["kind"], e["reason"]) for e in result["excluded"]],
                             reason_column=2) if result["excluded"] else "<p>None.</p>")
    meta = (f"Scores are return / 1000 at the final evaluation; brackets are {result['confidence']:.0%} "
            f"stratified-bootstrap CIs ({result['reps']} reps, seed {result['seed']}). "
            f"{result['num_runs_included']} runs included. Generated "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}.")
    return string.Template(TEMPLATE.read_text()).substitute(
        title=html.escape(f"Leaderboard: {result['results_dir']}"), meta=html.escape(meta),
        body="\n".join(parts))


def write_report(result, out_dir):
    """Render figures and write leaderboard.md, index.html and figures/*.{png,svg}; returns the
    paths of the two pages. Links to run directories are relative to `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figures = render_figures(result)
    for f in figures:
        (out_dir / "figures" / f.filename).write_bytes(f.png)
        (out_dir / "figures" / f"{f.stem}.svg").write_bytes(f.svg)
    results_dir = pathlib.Path(result["results_dir"]).resolve()
    href = lambda path: pathlib.PurePath(os.path.relpath(results_dir / path, out_dir.resolve())).as_posix()
    markdown, page = out_dir / "leaderboard.md", out_dir / "index.html"
    markdown.write_text(leaderboard_markdown(result, figures, href))
    page.write_text(html_page(result, figures, href))
    return markdown, page


def _interval(estimate):
    return f"{estimate['point']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _md_table(header, rows):
    def cell(value):
        text = str(value).replace("|", "\\|").replace("\n", " ")
        return f"[{text}]({value.href})" if isinstance(value, Link) else text
    return (["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""])


def _html_table(header, rows, reason_column=None):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    content = lambda c: (f'<a href="{html.escape(c.href)}">{html.escape(c.text)}</a>' if isinstance(c, Link)
                         else html.escape(str(c)))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=reason" if i == reason_column else ""}>{content(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(figure):
    data_uri = "data:image/png;base64," + base64.b64encode(figure.png).decode("ascii")
    return (f'<figure><img alt="{html.escape(figure.title)}" src="{data_uri}">'
            f"<figcaption>{html.escape(figure.section)}: {html.escape(figure.title)} "
            f'(<a href="figures/{html.escape(figure.stem)}.svg">SVG</a>)</figcaption></figure>')


def _write_all(result, args):
    results_dir = pathlib.Path(args.results_dir)
    out = pathlib.Path(args.out) if args.out else results_dir / "report"
    aggregate_lib.write_outputs(result, results_dir / "aggregate" if not args.out else out / "aggregate")
    markdown, page = write_report(result, out)
    print(f"wrote {markdown} and {page}")
    return 0


def main(argv=None):
    return aggregate_lib.run_cli(sys.argv[1:] if argv is None else argv, _write_all,
                                 prog="harness.report", description=__doc__,
                                 default_out="RESULTS_DIR/report, with the aggregate tables in RESULTS_DIR/aggregate")


if __name__ == "__main__":
    sys.exit(main())
