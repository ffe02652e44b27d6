"""Leaderboard report: `python -m harness.report RESULTS_DIR [--out DIR] [--reps N] [--seed S]`.

Aggregates RESULTS_DIR (see harness.aggregate; its JSON and CSV tables are written too) and writes

    <out>/leaderboard.md        tables to paste into a paper, linking figures/*.png
    <out>/index.html            one self-contained page: every figure is a base64 PNG data URI
    <out>/figures/*.png

Figures per (suite, context length) group: interval estimates of IQM / median / mean / optimality
gap, performance profiles, probability of improvement for every pair of methods and IQM
sample-efficiency curves (all drawn with rliable.plot_utils); plus one log-log figure of wall-clock
hours per million env steps against context length. Excluded, incomplete and failed runs are listed
with their reasons. The default output directory is RESULTS_DIR/report.
"""
import base64
import dataclasses
import datetime
import html
import io
import pathlib
import string
import sys

import numpy as np

from harness import aggregate as aggregate_lib

TEMPLATE = pathlib.Path(__file__).with_name("report_template.html")


@dataclasses.dataclass(frozen=True)
class Figure:
    """A rendered figure: `filename` under figures/, `title`, `section` ('suite/ctxT' or 'wall-clock')."""
    filename: str
    title: str
    section: str
    png: bytes

    def data_uri(self):
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def method_colors(result):
    """One colour per method, the same in every figure."""
    import seaborn as sns
    methods = sorted({m for g in result["groups"] for m in g["methods"]}
                     | {row["method"] for row in result["wall_clock"]["by_context_length"]})
    return dict(zip(methods, sns.color_palette("colorblind", n_colors=max(len(methods), 1))))


def render_figures(result):
    """All figures of the report, in page order."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker
    from rliable import plot_utils

    colors = method_colors(result)
    figures = []
    ci = f"{result['confidence']:.0%}"

    def keep(fig, filename, title, section):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        figures.append(Figure(filename, title, section, buffer.getvalue()))

    for g in result["groups"]:
        kind = f"_{g['dataset_kind']}" if g.get("dataset_kind") else ""
        label, stem = section_label(g), f"{g['experiment']}_{g['suite']}{kind}_ctx{g['context_length']}"
        methods = g["methods"]
        points = {m: np.array([g["aggregates"][m][k]["point"] for k in result["metric_names"]])
                  for m in methods}
        cis = {m: np.array([[g["aggregates"][m][k][side] for k in result["metric_names"]]
                            for side in ("low", "high")]) for m in methods}
        fig, _ = plot_utils.plot_interval_estimates(
            points, cis, metric_names=result["metric_names"], algorithms=methods, colors=colors,
            xlabel="Normalized score (return / 1000)", subfigure_width=3.6, max_ticks=3,
            row_height=max(0.5, 0.45 * len(methods)), xlabel_y_coordinate=-0.35 / len(methods) - 0.1)
        keep(fig, f"{stem}_intervals.png", f"Aggregate scores with {ci} stratified-bootstrap CIs", label)

        profile = g["performance_profile"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        plot_utils.plot_performance_profiles(
            {m: np.array(profile[m]["fraction"]) for m in methods}, np.array(profile["tau"]),
            performance_profile_cis={m: (np.array(profile[m]["low"]), np.array(profile[m]["high"]))
                                     for m in methods},
            colors=colors, ax=ax, xlabel=r"Normalized score $\tau$", legend=True,
            ylabel=r"Fraction of runs with score $> \tau$")
        keep(fig, f"{stem}_profiles.png", "Performance profiles (score distributions)", label)

        pairs = g["probability_of_improvement"]
        if pairs:
            fig, ax = plt.subplots(figsize=(5, 0.6 * len(pairs) + 1.2))
            plot_utils.plot_probability_of_improvement(
                {f"{p['x']}|{p['y']}": p["point"] for p in pairs},
                {f"{p['x']}|{p['y']}": np.array([p["low"], p["high"]]) for p in pairs},
                pair_separator="|", ax=ax, xticks=[0, 0.25, 0.5, 0.75, 1.0])
            ax.set_xlim(0, 1)
            keep(fig, f"{stem}_improvement.png", "Probability of improvement P(X > Y)", label)

        curve = g["sample_efficiency"]
        if curve["env_steps"] and all(m in curve for m in methods):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            plot_utils.plot_sample_efficiency_curve(
                np.array(curve["env_steps"]), {m: np.array(curve[m]["iqm"]) for m in methods},
                {m: np.array([curve[m]["low"], curve[m]["high"]]) for m in methods},
                algorithms=methods, colors=colors, ax=ax, xlabel="Environment steps",
                ylabel="IQM normalized score", labelsize="large", ticklabelsize="large", legend=True)
            keep(fig, f"{stem}_sample_efficiency.png", f"IQM along training ({ci} CIs)", label)

    rows = result["wall_clock"]["by_context_length"]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        several = len({r["experiment"] for r in rows}) > 1
        for (experiment, method, suite) in sorted({(r["experiment"], r["method"], r["suite"]) for r in rows}):
            line = sorted((r["context_length"], r["median_hours_per_1M_env_steps"]) for r in rows
                          if (r["experiment"], r["method"], r["suite"]) == (experiment, method, suite))
            ax.plot(*zip(*line), marker="o", linewidth=2, color=colors[method],
                    linestyle="-" if suite == rows[0]["suite"] else "--",
                    label=f"{method} ({suite})" + (f", {experiment}" if several else ""))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        lengths = sorted({r["context_length"] for r in rows})
        hours = [r["median_hours_per_1M_env_steps"] for r in rows]
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlim(lengths[0] / 1.5, lengths[-1] * 1.5)
        ax.set_ylim(min(hours) / 2, max(hours) * 2)  # at least a factor 4 visible, so slopes read right
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("Training context length T")
        ax.set_ylabel("Hours per 1M env steps (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        keep(fig, "wall_clock_vs_context_length.png", "Wall-clock vs context length (log-log)",
             "wall-clock")
    return figures


def section_label(group):
    kind = f"/{group['dataset_kind']}" if group.get("dataset_kind") else ""
    return f"{group['experiment']}: {group['suite']}{kind}/ctx{group['context_length']}"


def condition_rows(group):
    """(row, world model, variant, obs noise std, action noise std) in leaderboard order."""
    show = lambda value: "-" if value is None or value == "" else str(value)
    return [(m, *(show(group["conditions"][m][k]) for k in
                  ("world_model", "variant", "obs_noise_std", "action_noise_std")))
            for m, _, _ in leaderboard_rows(group, ["IQM"])]


CONDITIONS_HEADER = ("Method", "World model", "Variant", "Obs noise std", "Action noise std")


def leaderboard_rows(group, metric_names):
    """(method, [formatted 'point [low, high]' per metric], runs per task), best IQM first."""
    order = sorted(group["methods"], key=lambda m: -group["aggregates"][m]["IQM"]["point"])
    return [(m, [_interval(group["aggregates"][m][k]) for k in metric_names], group["num_runs"][m])
            for m in order]


def per_task_rows(group):
    """(method, ['mean ± std (n)' final return per task]) in leaderboard order."""
    rows = []
    for m, _, _ in leaderboard_rows(group, ["IQM"]):
        cells = [f"{s['mean_return']:.1f} ± {s['std_return']:.1f} ({s['num_runs']})"
                 for s in (group["per_task"][m][t] for t in group["tasks"])]
        rows.append((m, cells))
    return rows


def wall_clock_rows(result):
    return [(r["experiment"], r["method"], r["suite"], str(r["context_length"]), str(r["num_runs"]),
             f"{r['mean_wall_clock_s']:.1f}", f"{r['median_env_steps_per_s']:.1f}",
             f"{r['median_hours_per_1M_env_steps']:.2f}")
            for r in result["wall_clock"]["by_context_length"]]


WALL_CLOCK_HEADER = ("Experiment", "Method", "Suite", "Context length", "Runs", "Mean wall-clock (s)",
                     "Median env steps/s", "Hours per 1M env steps")
EXCLUDED_HEADER = ("Run directory", "Kind", "Reason")


def leaderboard_markdown(result, figures):
    lines = [f"# Leaderboard: {result['results_dir']}", "",
             f"Scores are return / 1000 at the final evaluation. Brackets: {result['confidence']:.0%} "
             f"stratified-bootstrap CIs ({result['reps']} reps, seed {result['seed']}); "
             f"{result['num_runs_included']} runs included.", ""]
    lines += [f"> warning: {note}" for note in result["warnings"]] + [""] * bool(result["warnings"])
    for g in result["groups"]:
        lines += [f"## {section_label(g)} ({len(g['tasks'])} tasks)", ""]
        lines += _md_table(("Method", *result["metric_names"], "Runs/task"),
                           [(m, *cells, str(n)) for m, cells, n in leaderboard_rows(g, result["metric_names"])])
        lines += ["What each row ran:", ""] + _md_table(CONDITIONS_HEADER, condition_rows(g))
        lines += ["Final return per task, mean ± std (runs):", ""]
        lines += _md_table(("Method", *g["tasks"]), [(m, *cells) for m, cells in per_task_rows(g)])
        lines += [f"![{f.title}](figures/{f.filename})" for f in figures if f.section == section_label(g)]
        lines += [""]
    if result["wall_clock"]["by_context_length"]:
        lines += ["## Wall-clock", ""] + _md_table(WALL_CLOCK_HEADER, wall_clock_rows(result))
        lines += [f"![{f.title}](figures/{f.filename})" for f in figures if f.section == "wall-clock"]
        lines += [""]
    lines += ["## Excluded, incomplete and failed runs", ""]
    lines += (_md_table(EXCLUDED_HEADER, [(e["path"], e["kind"], e["reason"]) for e in result["excluded"]])
              if result["excluded"] else ["None.", ""])
    return "\n".join(lines).rstrip() + "\n"


def html_page(result, figures):
    parts = [f'<div class="warning">warning: {html.escape(n)}</div>' for n in result["warnings"]]
    for g in result["groups"]:
        parts.append(f"<h2>{html.escape(section_label(g))} ({len(g['tasks'])} tasks)</h2>")
        parts.append(_html_table(("Method", *result["metric_names"], "Runs/task"),
                                 [(m, *cells, str(n)) for m, cells, n in leaderboard_rows(g, result["metric_names"])]))
        parts += ["<p>What each row ran:</p>", _html_table(CONDITIONS_HEADER, condition_rows(g))]
        parts.append("<p>Final return per task, mean ± std (runs):</p>")
        parts.append(_html_table(("Method", *g["tasks"]), [(m, *c) for m, c in per_task_rows(g)]))
        parts += [_html_figure(f) for f in figures if f.section == section_label(g)]
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
    """Render figures and write leaderboard.md, index.html and figures/*.png; returns their paths."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figures = render_figures(result)
    for f in figures:
        (out_dir / "figures" / f.filename).write_bytes(f.png)
    markdown, page = out_dir / "leaderboard.md", out_dir / "index.html"
    markdown.write_text(leaderboard_markdown(result, figures))
    page.write_text(html_page(result, figures))
    return markdown, page


def _interval(estimate):
    return f"{estimate['point']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _md_table(header, rows):
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return (["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""])


def _html_table(header, rows, reason_column=None):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=reason" if i == reason_column else ""}>{html.escape(str(c))}</td>'
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(figure):
    return (f'<figure><img alt="{html.escape(figure.title)}" src="{figure.data_uri()}">'
            f"<figcaption>{html.escape(figure.section)}: {html.escape(figure.title)}</figcaption></figure>")


def _write_all(result, args):
    results_dir = pathlib.Path(args.results_dir)
    out = pathlib.Path(args.out) if args.out else results_dir / "report"
    aggregate_lib.write_outputs(result, results_dir / "aggregate" if not args.out else out / "aggregate")
    markdown, page = write_report(result, out)
    print(f"wrote {markdown} and {page}")
    return 0


def main(argv=None):
    return aggregate_lib.run_cli(sys.argv[1:] if argv is None else argv, _write_all,
                                 prog="harness.report", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
