"""The report's figures, drawn from `harness.aggregate`'s result, each kept as PNG and SVG.

Per (experiment, suite, context length) group, methods in one order everywhere (`method_order`:
best IQM first, the leaderboard's): per-task learning curves (every seed a thin line, the seeds'
mean a thick one), interval estimates of IQM / median / mean / optimality gap, performance
profiles (x axis up to the best score reached), probability of improvement and IQM
sample-efficiency curves (rliable.plot_utils); plus the training loop's hours per million env steps
against context length (log-log lines of the series measured at several lengths, or bars when every
run has one context length).
"""
import dataclasses
import io
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Figure:
    """A rendered figure: `stem` (figures/<stem>.png and .svg), `title`, `section` ('suite/ctxT' or
    'wall-clock')."""
    stem: str
    title: str
    section: str
    png: bytes
    svg: bytes

    @property
    def filename(self):
        return f"{self.stem}.png"


def section_label(group):
    """'<experiment>: <suite>[/<dataset kind>]/ctx<T>' (the dataset kind of offline groups)."""
    kind = f"/{group['dataset_kind']}" if group.get("dataset_kind") else ""
    return f"{group['experiment']}: {group['suite']}{kind}/ctx{group['context_length']}"


def method_order(group):
    """The group's rows, best IQM first (ties by name): tables, legends and axes all use it."""
    return sorted(group["methods"], key=lambda m: (-group["aggregates"][m]["IQM"]["point"], m))


def method_colors(result):
    """One colour per method, the same in every figure."""
    import seaborn as sns
    methods = sorted({m for g in result["groups"] for m in g["methods"]}
                     | {row["method"] for row in result["wall_clock"]["by_context_length"]})
    return dict(zip(methods, sns.color_palette("colorblind", n_colors=max(len(methods), 1))))


def profile_axis_limit(group):
    """Right end of the performance-profile axis: the best final score (normalised) plus a margin,
    rounded up to a tenth, within [0.1, 1], so low-scoring runs do not sit in a corner."""
    best = max(max(map(max, group["scores"][m])) for m in group["methods"])
    return min(1.0, max(0.1, math.ceil(best * 1.05 * 10 - 1e-9) / 10))


def render_figures(result):
    """All figures of the report, in page order."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    colors = method_colors(result)
    figures = []

    def keep(fig, stem, title, section):  # no date and fixed SVG ids: the same result, the same bytes
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=90, bbox_inches="tight")
        with matplotlib.rc_context({"svg.hashsalt": stem}):
            fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)
        figures.append(Figure(stem, title, section, png.getvalue(), svg.getvalue()))

    for g in result["groups"]:
        kind = f"_{g['dataset_kind']}" if g.get("dataset_kind") else ""
        label, stem = section_label(g), f"{g['experiment']}_{g['suite']}{kind}_ctx{g['context_length']}"
        for suffix, title, draw in _group_figures(result):
            fig = draw(g, colors)
            if fig is not None:
                keep(fig, f"{stem}_{suffix}", title, label)
    rows = result["wall_clock"]["by_context_length"]
    if rows:
        keep(wall_clock_figure(rows, colors), "wall_clock_vs_context_length",
             "Wall-clock vs context length" + (" (log-log)" if _lengths(rows)[1:] else ""), "wall-clock")
    return figures


def _group_figures(result):
    ci = f"{result['confidence']:.0%}"
    return [("per_task_curves", "Eval return along training per task: each seed thin, their mean thick",
             per_task_curves_figure),
            ("intervals", f"Aggregate scores with {ci} stratified-bootstrap CIs",
             lambda g, colors: intervals_figure(g, colors, result["metric_names"])),
            ("profiles", "Performance profiles (score distributions)", profiles_figure),
            ("improvement", "Probability of improvement P(X > Y)", improvement_figure),
            ("sample_efficiency", f"IQM along training ({ci} CIs)", sample_efficiency_figure)]


def per_task_curves_figure(group, colors):
    """One panel per task; per method every seed's eval returns thin and their mean thick (at the
    eval steps every seed of that method has)."""
    from matplotlib import pyplot as plt
    tasks, order = group["tasks"], method_order(group)
    columns = min(len(tasks), 4)
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for m in order:
            runs = group["runs_detail"][m][task]
            for run in runs:
                ax.plot(run["env_steps"], run["returns"], color=colors[m], linewidth=0.8, alpha=0.35)
            steps = sorted(set.intersection(*(set(run["env_steps"]) for run in runs)))
            mean = [np.mean([run["returns"][run["env_steps"].index(s)] for run in runs]) for s in steps]
            ax.plot(steps, mean, color=colors[m], linewidth=2.5, label=f"{m} ({len(runs)} seeds)")
        ax.set_title(task)
        ax.set_xlabel("Environment steps")
        ax.set_ylabel("Eval return")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def intervals_figure(group, colors, metric_names):
    from rliable import plot_utils
    order = method_order(group)[::-1]  # rliable draws the first algorithm at the bottom
    points = {m: np.array([group["aggregates"][m][k]["point"] for k in metric_names]) for m in order}
    cis = {m: np.array([[group["aggregates"][m][k][side] for k in metric_names] for side in ("low", "high")])
           for m in order}
    fig, _ = plot_utils.plot_interval_estimates(
        points, cis, metric_names=metric_names, algorithms=order, colors=colors,
        xlabel="Normalized score (return / 1000)", subfigure_width=3.6, max_ticks=3,
        row_height=0.6, xlabel_y_coordinate=-0.45 / len(order) - 0.02)  # rliable: height = row_height x rows
    return fig


def profiles_figure(group, colors):
    from matplotlib import pyplot as plt
    from rliable import plot_utils
    profile, order = group["performance_profile"], method_order(group)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        {m: np.array(profile[m]["fraction"]) for m in order}, np.array(profile["tau"]),
        performance_profile_cis={m: (np.array(profile[m]["low"]), np.array(profile[m]["high"])) for m in order},
        colors=colors, ax=ax, xlabel=r"Normalized score $\tau$", legend=True,
        ylabel=r"Fraction of runs with score $> \tau$")
    ax.set_xlim(0, profile_axis_limit(group))
    return fig


def improvement_figure(group, colors):
    from matplotlib import pyplot as plt
    from rliable import plot_utils
    rank = {m: i for i, m in enumerate(method_order(group))}
    pairs = sorted(group["probability_of_improvement"], key=lambda p: (rank[p["x"]], rank[p["y"]]))
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(5, 0.6 * len(pairs) + 1.2))
    plot_utils.plot_probability_of_improvement(
        {f"{p['x']}|{p['y']}": p["point"] for p in pairs},
        {f"{p['x']}|{p['y']}": np.array([p["low"], p["high"]]) for p in pairs},
        pair_separator="|", ax=ax, xticks=[0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlim(0, 1)
    return fig


def sample_efficiency_figure(group, colors):
    from matplotlib import pyplot as plt
    from rliable import plot_utils
    curve, order = group["sample_efficiency"], method_order(group)
    if not curve["env_steps"] or not all(m in curve for m in order):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_sample_efficiency_curve(
        np.array(curve["env_steps"]), {m: np.array(curve[m]["iqm"]) for m in order},
        {m: np.array([curve[m]["low"], curve[m]["high"]]) for m in order},
        algorithms=order, colors=colors, ax=ax, xlabel="Environment steps",
        ylabel="IQM normalized score", labelsize="large", ticklabelsize="large", legend=True)
    return fig


def _lengths(rows):
    return sorted({r["context_length"] for r in rows})


def wall_clock_figure(rows, colors):
    """Median hours per 1M env steps of the training loop (end to end where a row has no train-loop
    speed): log-log lines over context length for the (experiment, method, suite, device) series
    measured at two or more lengths, or with a single context length one bar per series labelled with
    its value. Series are named by their device where the rows span several."""
    from matplotlib import pyplot as plt
    from matplotlib import ticker
    key = lambda r: (r["experiment"], r["method"], r["suite"], r["device"])
    several_devices = len({r["device"] for r in rows}) > 1
    train_loop = all(r.get("median_train_loop_hours_per_1M_env_steps") is not None for r in rows)
    hours_of = (lambda r: r["median_train_loop_hours_per_1M_env_steps"]) if train_loop else \
        (lambda r: r["median_hours_per_1M_env_steps"])
    ylabel = "Hours per 1M env steps (median" + (", training loop)" if train_loop else ", end to end)")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lengths = _lengths(rows)
    if len(lengths) == 1:
        lines = sorted({key(r) for r in rows})  # the wall-clock table's order
        several = len({k[0] for k in lines}) > 1
        values = [hours_of(next(r for r in rows if key(r) == k)) for k in lines]
        bars = ax.bar(range(len(lines)), values, color=[colors[k[1]] for k in lines])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values])
        names = [_series_name(k, several, several_devices) for k in lines]
        ax.set_xticks(range(len(lines)), names, rotation=20, ha="right")
        ax.set_ylim(0, max(values) * 1.2)
        ax.set_ylabel(f"{ylabel}, context length {lengths[0]}")
        ax.grid(True, axis="y", alpha=0.3)
        return fig
    series = {k: sorted((r["context_length"], hours_of(r)) for r in rows if key(r) == k)
              for k in sorted({key(r) for r in rows})}
    series = {k: line for k, line in series.items() if len(line) > 1} or series  # lines where there are any
    several = len({k[0] for k in series}) > 1
    suites = sorted({k[2] for k in series})
    for k, line in series.items():
        ax.plot(*zip(*line), marker="o", linewidth=2, color=colors[k[1]],
                linestyle="-" if k[2] == suites[0] else "--", label=_series_name(k, several, several_devices))
    lengths = sorted({t for line in series.values() for t, _ in line})
    hours = [h for line in series.values() for _, h in line]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(lengths[0] / 1.5, lengths[-1] * 1.5)
    ax.set_ylim(min(hours) / 2, max(hours) * 2)  # at least a factor 4 visible, so slopes read right
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("Training context length T")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return fig


def _series_name(key, several_experiments, several_devices):
    experiment, method, suite, device = key
    return (f"{method} ({suite})" + (f", {experiment}" if several_experiments else "")
            + (f", {short_device(device)}" if several_devices else ""))


def short_device(name):
    """'NVIDIA H100 80GB HBM3' -> 'H100 80GB HBM3': the vendor every CUDA device name starts with."""
    return name.removeprefix("NVIDIA ")
