"""Leaderboard report: `python -m harness.report RESULTS_DIR [--out DIR] [--reps N] [--seed S]
[--sweep FILE ...] [--claims FILE] [--into DOC] [--at-env-steps N] [--tasks T1,T2] [--allow-empty]`.

Aggregates RESULTS_DIR (see harness.aggregate; its JSON and CSV tables are written too) and writes

    <out>/leaderboard.md        tables to paste into a paper, linking figures/*.png
    <out>/index.html            one page whose figures are embedded (base64 PNG data URIs): it reads
                                alone; its links lead to the SVG figures and the run directories
    <out>/figures/*.png, *.svg
    DOC (--into)                the tables again, between its `<!-- report:begin -->` and
                                `<!-- report:end -->` lines (the rest of DOC is kept), links relative
                                to DOC, without the per-run and provenance tables

With --sweep, first the runs the sweep files plan, counted by state; with --claims, the claims file's
verdicts (harness/claims.py). Per (experiment, suite, context length) group: the leaderboard, the
probability-of-improvement matrix, where runs recorded belief metrics a belief-quality table
(harness/belief_aggregate.py), what each row ran, final return per task (a cell with fewer than
3 seeds (MIN_SEEDS) is marked, with a warning: its intervals are not meaningful), provenance per
method (commit, package versions, device, bindings, a config.gin), every run with a link to its
directory, and the figures of harness/report_figures.py. Methods appear in one order everywhere,
best IQM first. Then IQM and hours per context length side by side (where an experiment ran several),
wall-clock cost, GPU hours and machines, and the excluded, incomplete and failed runs with their
reasons. The default output directory is RESULTS_DIR/report. The same records give the same bytes:
the bootstrap is seeded, rows are sorted and the only date is the records' latest update.
"""
import base64
import html
import os
import pathlib
import string
import sys

from harness import aggregate as aggregate_lib
from harness import aggregate_tables, belief_aggregate, report_tables
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
    """(method, runs, commits, source digests, versions, devices, bindings, Link to one config.gin) per method: the
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
        rows.append((m, str(len(runs)), distinct(run.get("git_commit") for run in runs),
                     distinct(run.get("source_digest") for run in runs), versions,
                     distinct(run.get("device") for run in runs), bindings, Link(config, href(config))))
    return rows


PROVENANCE_HEADER = ("Method", "Runs", "Commit", "Source digest", "Versions", "Device", "Bindings", "Config (one run)")
RUNS_HEADER = ("Method", "Task", "Seed", "Final return", "Run directory")


EXCLUDED_HEADER = ("Run directory", "Kind", "Reason")


# A page is a list of blocks, rendered once as Markdown and once as HTML:
#   ("h2", text)  ("p", text)  ("warnings", [text])  ("table", header, rows, reason column or None)
#   ("figures", [Figure])  ("details", summary, [block])
def page_blocks(result, figures, href, full=True):
    """The report below its title and first paragraph. full=False leaves out what each row ran, the
    provenance and the run lists (the HTML report keeps them), for a page embedded in a document."""
    blocks = [("warnings", list(result["warnings"]))]
    if not result["groups"]:
        blocks.append(("p", f"No finished run under {result['results_dir']} yet: nothing is ranked."))
    if result.get("coverage") is not None:
        blocks += [("h2", "Runs planned and done"),
                   ("p", "Every run the sweep files plan, by its state in the records:"),
                   ("table", report_tables.COVERAGE_HEADER, report_tables.coverage_rows(result), 9)]
    if result.get("claims") is not None:
        blocks += [("h2", "The paper's claims against the measurements"),
                   ("p", f"{report_tables.claims_summary(result)}. Verdicts read the IQM difference's "
                         f"{result['confidence']:.0%} CI: agree or disagree when it excludes the expected "
                         "side's boundary, inconclusive when it straddles it (harness/claims.py)."),
                   ("table", report_tables.CLAIMS_HEADER, report_tables.claim_rows(result), 0)]
    for g in result["groups"]:
        label = section_label(g)
        blocks += [("h2", f"{label} ({len(g['tasks'])} tasks)"), ("warnings", few_seed_warnings(g)),
                   ("table", ("Method", *result["metric_names"], "Runs/task"),
                    [(m, *cells, str(n)) for m, cells, n in leaderboard_rows(g, result["metric_names"])], None)]
        if g.get("belief"):
            blocks += [("p", "Belief quality, IQM over runs and tasks of the final evaluation's belief metrics [CI]:"),
                       ("table", *belief_aggregate.belief_rows(g, method_order(g)), None),
                       ("p", belief_aggregate.NOTE)]
        if len(g["methods"]) > 1:
            blocks += [("p", "Probability of improvement, P(row > column) on a random task [CI]:"),
                       ("table", *report_tables.improvement_matrix(g), None)]
        if full:
            blocks += [("p", "What each row ran:"), ("table", CONDITIONS_HEADER, condition_rows(g), None)]
        blocks += [("p", "Final return per task, mean ± std (runs):"),
                   ("table", ("Method", *g["tasks"]), [(m, *cells) for m, cells in per_task_rows(g)], None),
                   ("figures", [f for f in figures if f.section == label])]
        if full:
            blocks += [("p", "Provenance (from each run's run.json):"),
                       ("table", PROVENANCE_HEADER, provenance_rows(g, href), 3),
                       ("details", "Runs", [("table", RUNS_HEADER, run_rows(g, href), None)])]
    for (experiment, suite), (iqm, cost) in report_tables.context_length_tables(result).items():
        blocks += [("h2", f"{experiment}: {suite}, context lengths side by side"),
                   ("p", "IQM of the final normalised score [CI], per context length:"), ("table", *iqm, None),
                   ("p", "Hours per 1M env steps of the training loop (evaluation excluded; median over runs):"),
                   ("table", *cost, None)]
    if result["wall_clock"]["by_context_length"]:
        blocks += [("h2", "Wall-clock"),
                   ("p", "Hours per 1M env steps, medians over runs: of the training loop (the train lines' "
                         "interval speed, evaluation excluded) and end to end (env steps / wall clock, "
                         "prefill and evaluation included). Runs that share a GPU slow each other down."),
                   ("table", report_tables.WALL_CLOCK_HEADER, report_tables.wall_clock_rows(result), None),
                   ("figures", [f for f in figures if f.section == "wall-clock"])]
    blocks += [("h2", "GPU time and machines"), ("p", report_tables.gpu_summary(result))]
    if result["resources"]["gpu"]["by_method"]:
        blocks.append(("table", report_tables.GPU_HEADER, report_tables.gpu_rows(result), None))
    if result["resources"]["machines"]:
        blocks += [("p", "Machines the runs were trained on (run.json's machines):"),
                   ("table", report_tables.MACHINES_HEADER, report_tables.machine_rows(result), None)]
    blocks.append(("h2", "Excluded, incomplete and failed runs"))
    listed = [e for e in result["excluded"] if e["kind"] != "not started"]
    blocks.append(("table", EXCLUDED_HEADER, [(e["path"], e["kind"], e["reason"]) for e in listed], 2)
                  if listed else ("p", "None."))
    waiting = len(result["excluded"]) - len(listed)
    if waiting:
        blocks.append(("p", f"Not started yet: {waiting} run(s) that a sweep manifest (sweep.json) plans "
                            "and that have written nothing (aggregate/excluded.csv lists them)."))
    return blocks


def intro(result):
    """The first paragraph: what the numbers are and which records they come from (no clock time)."""
    updated = result["resources"]["records_updated_at"]
    when = (f"at env step {result['at_env_steps']:,} (every run read as it stood then)"
            if result.get("at_env_steps") else "at the final evaluation")
    if result.get("only_tasks"):
        when += f", on {', '.join(result['only_tasks'])} only (--tasks; runs of other tasks are listed as excluded)"
    return (f"Scores are return / 1000 {when}. Brackets: {result['confidence']:.0%} "
            f"stratified-bootstrap CIs ({result['reps']} reps, seed {result['seed']}); "
            f"{result['num_runs_included']} runs included"
            + (f"; records last updated {updated}." if updated else "."))


def leaderboard_markdown(result, figures, href, figure_href=lambda name: f"figures/{name}", title=True, full=True):
    lines = [f"# Leaderboard: {result['results_dir']}", ""] if title else []
    lines += [intro(result), ""]
    for block in page_blocks(result, figures, href, full):
        lines += _md_block(block, figure_href)
    return "\n".join(lines).rstrip() + "\n"


def _md_block(block, figure_href):
    kind = block[0]
    if kind == "h2":
        return [f"## {block[1]}", ""]
    if kind == "p":
        return [block[1], ""]
    if kind == "warnings":
        return [f"> warning: {note}" for note in block[1]] + [""] * bool(block[1])
    if kind == "table":
        return _md_table(block[1], block[2])
    if kind == "figures":
        return [f"![{f.title}]({figure_href(f.filename)}) ([SVG]({figure_href(f.stem + '.svg')}))"
                for f in block[1]] + [""] * bool(block[1])
    return [f"{block[1]}:", ""] + [line for inner in block[2] for line in _md_block(inner, figure_href)]


def _html_block(block):
    kind = block[0]
    if kind == "h2":
        return f"<h2>{html.escape(block[1])}</h2>"
    if kind == "p":
        return f"<p>{html.escape(block[1])}</p>"
    if kind == "warnings":
        return "\n".join(f'<div class="warning">warning: {html.escape(note)}</div>' for note in block[1])
    if kind == "table":
        return _html_table(block[1], block[2], reason_column=block[3])
    if kind == "figures":
        return "\n".join(_html_figure(f) for f in block[1])
    return "\n".join([f"<details><summary>{html.escape(block[1])}</summary>",
                      *(_html_block(inner) for inner in block[2]), "</details>"])


def html_page(result, figures, href):
    body = [_html_block(block) for block in page_blocks(result, figures, href)]
    return string.Template(TEMPLATE.read_text()).substitute(
        title=html.escape(f"Leaderboard: {result['results_dir']}"), meta=html.escape(intro(result)),
        body="\n".join(part for part in body if part))


BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


def embed(document, markdown):
    """`document`'s text with everything between its BEGIN and END marker lines replaced by `markdown`."""
    text = pathlib.Path(document).read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{document} needs one line {BEGIN} and, after it, one line {END}")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n\n{markdown}\n{END}{rest.split(END, 1)[1]}"


def write_report(result, out_dir, into=None):
    """Render figures and write leaderboard.md, index.html and figures/*.{png,svg}; returns the
    paths of the two pages. Links to run directories are relative to `out_dir`. `into`: a Markdown
    document whose BEGIN/END section receives the tables too, with links relative to it."""
    out_dir = pathlib.Path(out_dir)
    figures = render_figures(result)
    if into is not None:  # checked before anything is written
        into = pathlib.Path(into)
        relative = lambda path: pathlib.PurePath(os.path.relpath(path, into.resolve().parent)).as_posix()
        results_dir = pathlib.Path(result["results_dir"]).resolve()
        embedded = embed(into, leaderboard_markdown(
            result, figures, lambda path: relative(results_dir / path),
            lambda name: relative(out_dir.resolve() / "figures" / name), title=False, full=False))
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    for f in figures:
        (out_dir / "figures" / f.filename).write_bytes(f.png)
        (out_dir / "figures" / f"{f.stem}.svg").write_bytes(f.svg)
    results_dir = pathlib.Path(result["results_dir"]).resolve()
    href = lambda path: pathlib.PurePath(os.path.relpath(results_dir / path, out_dir.resolve())).as_posix()
    markdown, page = out_dir / "leaderboard.md", out_dir / "index.html"
    markdown.write_text(leaderboard_markdown(result, figures, href))
    page.write_text(html_page(result, figures, href))
    if into is not None:
        into.write_text(embedded)
    return markdown, page


_interval = report_tables.interval


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
    try:
        markdown, page = write_report(result, out, into=args.into)
    except (FileNotFoundError, ValueError) as error:  # DOC missing or without its markers
        print(f"error: --into: {error}", file=sys.stderr)
        return 2
    aggregate_tables.write_outputs(result, results_dir / "aggregate" if not args.out else out / "aggregate")
    print(f"wrote {markdown} and {page}" + (f", and the tables into {args.into}" if args.into else ""))
    return 0


def _into_option(parser):
    parser.add_argument("--into", metavar="DOC", help="also write the tables into the Markdown file DOC, "
                                                      "between its <!-- report:begin --> and <!-- report:end --> lines")


def main(argv=None):
    return aggregate_lib.run_cli(sys.argv[1:] if argv is None else argv, _write_all,
                                 prog="harness.report", description=__doc__,
                                 default_out="RESULTS_DIR/report, with the aggregate tables in RESULTS_DIR/aggregate",
                                 extra=_into_option)


if __name__ == "__main__":
    sys.exit(main())
