"""PNG plots of a sweep: throughput and p99 latency against streams, speedup as bars."""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.report import Row

_STREAMS = re.compile(r"\s*x\d+\s*")


_MODE_KEYS = ("streams=", "graph=", "pinned=", "capture.copies_in_graph=", "model=")


def literal(text: str) -> str:
    """`text` as matplotlib draws it, never as mathtext: an even number of `$` in a label (a
    model named `$^$`) made matplotlib parse it as math, and a parse error lost the plot. An
    escaped dollar is drawn as a dollar (a backslash before one stays too)."""
    return str(text).replace("$", r"\$")


def _line_label(row: Row) -> str:
    """One line per mode and per other setting that varies; streams go on the x axis.
    'graph x4 pinned' with overrides 'streams=4 model.batch=8' -> 'graph, pinned, model.batch=8'."""
    mode = _STREAMS.sub(" ", row.mode).split()
    others = [o for o in row.overrides.split() if not o.startswith(_MODE_KEYS)]
    return literal(", ".join(mode + others))


def _device(rows: list[Row]) -> str:
    names = sorted({r.device for r in rows if r.device})
    return literal(" / ".join(names)) if names else "unknown device"


def _throughput(rows: list[Row]) -> tuple[str, str]:
    """The rate to plot and its axis label: samples/s when the jobs' requests carry different
    batch sizes (requests/s alone ranks batch 1 first), requests/s otherwise."""
    from runner.report import mixed_batches  # report imports this module

    if mixed_batches(rows) and all(r.samples_per_s for r in rows):
        return "samples_per_s", "throughput (samples/s)"
    return "requests_per_s", "throughput (requests/s)"


def _spread(rows: list[Row], rate: str) -> list[float]:
    """Each job's rate's spread to draw: one standard deviation of its throughput passes (cv x
    the rate; 0 where it has one pass), in the unit drawn (with buckets a pass's samples/s moves
    apart from its requests/s). A point or a bar alone had shown a job of cv 14.7% as plainly
    20% above the others."""
    def spread_cv(r: Row) -> float:
        own = r.samples_cv if rate == "samples_per_s" and r.samples_cv is not None else r.throughput_cv
        return own or 0.0

    return [(getattr(r, rate) or 0.0) * spread_cv(r) for r in rows]


SPREAD_SAID = "error bars: +-1 standard deviation of each job's throughput passes"


def _plot_against_streams(axes, col: int, model: str, rows: list[Row]) -> None:
    from matplotlib.ticker import ScalarFormatter

    from runner.report import preset_of  # report imports this module

    rate, rate_label = _throughput(rows)
    lines: dict[str, list[Row]] = defaultdict(list)
    devices = len({r.device for r in rows}) > 1
    for r in rows:
        lines[_line_label(r) + (f" ({literal(r.device)})" if devices else "")].append(r)
    for label in list(lines):
        members = lines[label]
        if len({r.streams for r in members}) == len(members):
            continue
        # Two jobs at one x (two presets of one model class, two sweeps of one config): a line
        # per preset and sweep folder (per job where that is not enough), never a zigzag.
        del lines[label]

        def apart(series: dict[int, str], members: list[Row] = members) -> bool:
            return len({(series[id(r)], r.streams) for r in members}) == len(members)

        preset = {id(r): preset_of(r) for r in members}
        folder = {id(r): " ".join(filter(None, (preset[id(r)], Path(r.path).parent.name))) for r in members}
        series = preset if apart(preset) else folder if apart(folder) else {id(r): f"#{r.job}" for r in members}
        for r in members:
            lines[f"{label} [{literal(series[id(r)])}]"].append(r)
    for label, members in sorted(lines.items()):
        members.sort(key=lambda r: r.streams)
        xs = [r.streams for r in members]
        axes[0][col].errorbar(xs, [getattr(r, rate) for r in members], yerr=_spread(members, rate), marker="o",
                              capsize=3, label=label)
        p99 = [(r.streams, r.latency_p99_us) for r in members if r.latency_p99_us is not None]
        if p99:
            axes[1][col].plot(*zip(*p99, strict=True), marker="o", label=label)
    for row, (ylabel, title) in enumerate(
        ((rate_label, "throughput"), ("p99 latency, end to end (us)", "p99 latency"))
    ):
        ax = axes[row][col]
        ax.set_title(literal(f"{model}: {title} vs streams" + (f"\n{SPREAD_SAID}" if row == 0 else "")), fontsize=9)
        ax.set_xlabel("CUDA streams")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.streams for r in rows}))
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no latency passes: nothing drawn on the p99 axes
            ax.legend(fontsize=8)


TICK_LABEL_CHARS = 40  # longer job labels are shortened (the table has them whole): they squeezed the axes to nothing


def _plot_per_job(axes, col: int, model: str, rows: list[Row]) -> None:
    from runner.report import short_labels  # report imports this module

    shortened = short_labels([r.overrides or r.mode for r in rows], TICK_LABEL_CHARS)
    labels = [literal(f"{r.job}: {label}") for r, label in zip(rows, shortened, strict=True)]
    xs = range(len(rows))
    rate, rate_label = _throughput(rows)
    axes[0][col].bar(xs, [getattr(r, rate) for r in rows], yerr=_spread(rows, rate), capsize=3, color="tab:blue")
    # A job without a latency pass gets no bar, not one of 0 us, and says so.
    p99 = [r.latency_p99_us if r.latency_p99_us is not None else float("nan") for r in rows]
    axes[1][col].bar(xs, p99, color="tab:orange")
    for x, r in zip(xs, rows, strict=True):
        if r.latency_p99_us is None:
            axes[1][col].annotate("no latency\nmeasured", (x, 0), ha="center", va="bottom", fontsize=7)
    modes = sorted({r.mode for r in rows})
    # The mode they share; where it differs, the labels' overrides say it (row 0's had titled all).
    mode = modes[0] if len(modes) == 1 else "modes differ: see each job's overrides"
    for row, (ylabel, title) in enumerate(
        ((rate_label, "throughput"), ("p99 latency, end to end (us)", "p99 latency"))
    ):
        ax = axes[row][col]
        spread = f"\n{SPREAD_SAID}" if row == 0 else ""
        ax.set_title(literal(f"{model}: {title} per job\n{mode}{spread}"), fontsize=9)  # one line ran past the figure's edge
        ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)


def _pyplot():
    """pyplot on the file-only backend, its logger kept to warnings (its first import in a
    fresh home builds a font cache and says so on the console, in the middle of a sweep)."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PLOTS = ("max_rate.png", "throughput_latency.png", "speedup.png")


def plot_sweep(rows: list[Row], out_dir: Path) -> list[Path]:
    """The sweep's plots, each on its own: one that cannot be drawn is named in one line, and
    the others, the table and the sweep's exit code come as without it."""
    plt = _pyplot()
    ok = [r for r in rows if r.status == "ok" and r.requests_per_s is not None and r.streams is not None]
    written: list[Path] = []
    failed = False
    for name, draw, members in zip(PLOTS, (_plot_max_rates, _plot_throughput_latency, _plot_speedup),
                                   (rows, rows, ok), strict=True):
        try:
            written += draw(members, out_dir / name, plt)
        except Exception as exc:  # noqa: BLE001 - a plot only shows the table: it never costs the table
            plt.close("all")
            not_drawn(name, exc)
            failed = failed or name == "throughput_latency.png"
    closed_loop = [r for r in rows if not r.load and not r.rate_search]
    if closed_loop and not failed and out_dir / "throughput_latency.png" not in written:
        # A sweep whose jobs all failed or were invalid had no plot, and no word why.
        print(f"note: throughput_latency.png not drawn: none of the {len(closed_loop)} closed-loop jobs "
              "ended ok with a throughput", file=sys.stderr)
    remove_stale_plots(out_dir, written)
    return written


def remove_stale_plots(out_dir: Path, written: list[Path]) -> None:
    """Plots an earlier report left in `out_dir` that this one did not draw: they showed an
    earlier table (report --no-plots, or a sweep rerun whose jobs now fail, had kept them
    beside the new tables)."""
    stale = [out_dir / name for name in PLOTS if out_dir / name not in written and (out_dir / name).is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        print(f"note: removed the earlier {', '.join(p.name for p in stale)}: drawn from an earlier table, "
              "not from this one", file=sys.stderr)


def not_drawn(what: str, exc: BaseException) -> None:
    """One line on stderr: `what` was not written, and why (matplotlib's own message spans
    lines, and may begin with a caret under the text it could not parse)."""
    lines = [line.strip() for line in str(exc).splitlines() if any(c.isalpha() for c in line)]
    reason = lines[0] if lines else ""
    if len(reason) > 200:
        reason = reason[:197] + "..."
    print(f"warning: {what} not written: {type(exc).__name__}" + (f": {reason}" if reason else ""), file=sys.stderr)


def _plot_throughput_latency(every: list[Row], path: Path, plt) -> list[Path]:
    """Throughput and p99 latency against streams, a column per model (or per job, where
    every job ran on as many streams)."""
    # Closed-loop throughput only: a fixed-rate server job's rate is the rate it was offered (an
    # invalid one had been drawn as an ordinary bar), and its latency includes queueing.
    ok = [r for r in every if r.status == "ok" and r.requests_per_s is not None and r.streams is not None and not r.load]
    if not ok:
        return []
    models = sorted({r.model for r in ok})
    # Constrained layout makes room for long job labels; tight_layout gave up on them, with a warning.
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False, layout="constrained")
    for col, model in enumerate(models):
        members_of_model = [r for r in ok if r.model == model]
        if len({r.streams for r in members_of_model}) > 1:
            _plot_against_streams(axes, col, model, members_of_model)
        else:  # every job ran on as many streams (say, on a CPU): label the jobs by their overrides
            _plot_per_job(axes, col, model, members_of_model)
    left_out = [r for r in every if r not in ok]
    # Jobs with nothing to draw (failed, invalid, a latency-only scenario) are named, not dropped.
    fig.suptitle(f"Sweep on {_device(ok)}" + (f"\nnot drawn (see the table): {', '.join('#' + r.job for r in left_out)}"
                                              if left_out else ""))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _plot_speedup(ok: list[Row], path: Path, plt) -> list[Path]:
    bars = [r for r in ok if r.speedup_vs_baseline is not None]
    if not bars:
        return []
    several_models = len({r.model for r in ok}) > 1
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(bars) + 2), 5))
    names = [f"#{r.job}: {r.overrides or r.mode}" for r in bars]  # what tells the jobs apart
    labels = [literal(f"{r.model}\n{n}" if several_models else n) for r, n in zip(bars, names, strict=True)]
    values = [r.speedup_vs_baseline for r in bars]
    # As the table marks them: within noise (~) grey, noise unknown (?) hatched; green or red
    # only for a speedup or a slowdown beyond the repeats' noise.
    colors = ["tab:gray" if r.speedup_within_noise else ("tab:green" if v >= 1 else "tab:red")
              for r, v in zip(bars, values, strict=True)]
    drawn = ax.bar(range(len(bars)), values, color=colors)
    for bar, r in zip(drawn, bars, strict=True):
        if r.speedup_within_noise is None:
            bar.set_hatch("//")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(bars)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("speedup over the eager baseline (x)")
    ax.set_title(f"Speedup over the eager baseline, per config\n{_device(ok)}\n"
                 "grey ~: within the repeats' noise; hatched ?: noise unknown (one pass)", fontsize=9)
    for i, (v, r) in enumerate(zip(values, bars, strict=True)):
        mark = "~" if r.speedup_within_noise else ("?" if r.speedup_within_noise is None else "")
        ax.text(i, v, f"{mark}{v:.2f}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _plot_max_rates(rows: list[Row], path: Path, plt) -> list[Path]:
    """load.rate=max sweeps: each job's highest rate under the bound, its eager baseline's
    beside it, the best job marked."""
    from runner.report import (  # report imports this module
        _bounds,
        _mixed_search_batches,
        _per_request,
        _searches,
    )

    held = [r for r in rows if r.status == "ok" and (r.max_rate is not None or r.baseline_max_rate is not None)]
    if not held:
        return []
    # Samples/s where the jobs' requests carry different batch sizes, as the best is ranked
    # (its bar had been the shortest, in requests/s).
    mixed = _mixed_search_batches(held)
    per = _per_request if mixed else (lambda r: 1.0)
    unit = "samples/s" if mixed else "requests/s"
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(held) + 2), 5))
    xs = range(len(held))
    # Without baseline bars (the CPU measures none) the runner's sit on their labels: they had
    # stood left of them, beside an empty slot.
    paired = any(r.baseline_max_rate for r in held)
    shift = -0.2 if paired else 0.0
    ax.bar([x + shift for x in xs], [(r.max_rate or 0) * per(r) for r in held], width=0.4, label="runner",
           color=["tab:orange" if r.best else "tab:blue" for r in held])
    if paired:  # else a legend entry with no bars
        ax.bar([x + 0.2 for x in xs], [(r.baseline_max_rate or 0) * per(r) for r in held], width=0.4,
               label="eager baseline", color="tab:gray")
    for x, r in zip(xs, held, strict=True):
        said = []
        if r.max_rate is None:
            said.append("no rate\nheld")  # a runner bar of 0 had gone unexplained
        elif r.max_rate_cut:
            said.append(">=")  # the budget cut its search: a floor, as the table's "or more"
        if r.best:
            said.append("best" + (f"\n{r.max_rate / r.baseline_max_rate:.1f}x eager" if r.baseline_max_rate else ""))
        if said:
            ax.annotate("\n".join(said), (x + shift, (r.max_rate or 0) * per(r)), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [literal(f"#{r.job}: {r.overrides or r.mode}") for r in held], rotation=60, ha="right",
                  fontsize=8)
    # Every search's bound, not only those of the jobs that held a rate.
    bounds = _bounds(_searches(rows))
    ax.set_ylabel(f"highest rate under the bound ({unit})")
    what = "sample rate" if mixed else "request rate"  # as the bars are drawn (the title had said requests over samples)
    if len(bounds) > 1:  # each bar under its own job's bound (the first job's had titled them all)
        title = f"Highest {what} under each job's p99 bound ({', '.join(f'{b:g}' for b in bounds)} ms)\n{_device(held)}"
    else:
        title = f"Highest {what} with p99 <= {bounds[0]:g} ms\n{_device(held)}" if bounds else _device(held)
    # Jobs with no bar at all (neither side held a rate, or the budget ran out first).
    none_held = [r for r in rows if r.status == "ok" and r.rate_search and r.max_rate is None
                 and r.baseline_max_rate is None]
    if none_held:  # a job with no bar would otherwise be left out without a word
        title += (f"\nno rate held the bound, or none was measured: job{'s' * (len(none_held) > 1)} "
                  f"{', '.join('#' + r.job for r in none_held)}")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_load_curve(load: dict, path: Path, title: str) -> Path:
    """One job's server points: p50 and p99 latency against the offered rate, valid points
    filled, the bound drawn; the runner's and the baseline's curves side by side."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 5))
    for key, color in (("runner", "tab:blue"), ("baseline", "tab:gray")):
        def offered(point: dict) -> float:  # the rate its drawn arrivals offered
            return point.get("offered") or point["rate"]

        points = sorted((load.get(key) or {}).get("points") or [], key=offered)
        points = [p for p in points if p["latency_us"]["p99"] is not None]
        if not points:
            continue
        rates = [offered(p) for p in points]
        for q, style in (("p50", "--"), ("p99", "-")):
            ax.plot(rates, [p["latency_us"][q] / 1e3 for p in points], style, color=color, label=f"{key} {q}",
                    marker="." if q == "p50" else None)
        ax.scatter(rates, [p["latency_us"]["p99"] / 1e3 for p in points], color=color,
                   facecolors=[color if p["valid"] else "none" for p in points], zorder=3)
    if load.get("p99_ms"):
        ax.axhline(load["p99_ms"], color="red", linewidth=0.8, label=f"p99 bound {load['p99_ms']:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s, Poisson arrivals)")
    ax.set_ylabel("latency incl. queueing (ms)")
    ax.set_title(f"{literal(title)}\ncircles on the p99 lines: filled valid, open invalid")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
