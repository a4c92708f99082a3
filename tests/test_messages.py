"""Messages that must say the fix in one line, and a sweep's report that a plot cannot stop:
labels matplotlib would read as math, Hydra's hints on lines of their own, unusable output
folders, null and deletion of typed keys."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner import report
from runner.errors import ConfigError, condense
from runner.record import RESULT_FILE, SCHEMA
from runner.report import Row
from runner.spec import validate
from tests.conftest import cli_env
from tests.test_cli import QUICK, results_under, run_cli

MATH = "$^$"  # an even number of dollars: matplotlib's mathtext failed to parse it, and the plot was lost


def row(job: str, model: str = MATH, streams: int = 1, **figures) -> Row:
    fields = dict(requests_per_s=1000.0 * streams, samples_per_s=1.0, latency_p50_us=900.0, latency_p99_us=1000.0,
                  speedup_vs_baseline=None, efficiency_vs_ceiling=None, throughput_cv=0.01)
    fields.update(figures)
    return Row(job=job, overrides=f"model.name='{MATH}' seed={job}", model=model, mode="eager x1 pageable direct/1",
               status="ok", reason="", streams=streams, device=f"cpu {MATH}", path="", **fields)


# --- 1. plots -------------------------------------------------------------------------------


@pytest.mark.parametrize("streams", [(1, 1), (1, 2)], ids=["per-job", "against-streams"])
def test_labels_with_dollars_are_drawn_as_they_are(tmp_path, capsys, streams):
    rows = [row(str(i), streams=s, speedup_vs_baseline=1.5, max_rate=100.0, baseline_max_rate=50.0, p99_bound_ms=1.0)
            for i, s in enumerate(streams)]
    written = report.write_report(rows, tmp_path)
    assert [p.name for p in written] == ["sweep.csv", "sweep.md", "max_rate.png", "throughput_latency.png",
                                         "speedup.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written[2:])
    assert capsys.readouterr().err == ""


class _KeptFigures:
    """pyplot, except that a closed figure is kept to be read."""

    def __init__(self):
        from runner.plots import _pyplot

        self.plt, self.figures = _pyplot(), []

    def __getattr__(self, name):
        return getattr(self.plt, name)

    def close(self, fig):
        self.figures.append(fig)


def test_load_plots_say_what_they_draw(tmp_path, monkeypatch):
    """The CPU's max-rate plot had an "eager baseline" legend entry with no bars, and a job in
    which no rate held was left out without a word; the load curve plotted the asked rate
    against an "offered rate" axis, and said "filled: valid points" of markers always filled."""
    from runner import plots

    kept = _KeptFigures()
    rows = [row("0", max_rate=100.0, p99_bound_ms=1.0, rate_search=True),
            row("1", max_rate=None, p99_bound_ms=1.0, rate_search=True, load="server: no rate held p99 <= 1 ms"),
            # a fixed rate, and a search the budget ended before its first point: no "no rate held"
            row("2", max_rate=None, p99_bound_ms=1.0, load="server: valid at load.rate=20/s"),
            row("3", max_rate=None, p99_bound_ms=1.0, rate_search=True,
                load="server: not measured (the budget ran out before its first point)")]
    plots._plot_max_rates(rows, tmp_path / "max_rate.png", kept)
    [ax] = kept.figures[-1].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["runner"]
    # Alone, the runner's bars sit on their labels (they had stood left of them, by a baseline's slot).
    assert [bar.get_x() + bar.get_width() / 2 for bar in ax.patches] == list(ax.get_xticks())
    assert ax.get_title().endswith("\nno rate held the bound, or none was measured: jobs #1, #3")
    assert ax.get_title().startswith("Highest request rate with p99 <= 1 ms")
    # Bars under different bounds: the first job's bound had titled them all.
    plots._plot_max_rates([row("0", max_rate=100.0, p99_bound_ms=5.0, rate_search=True),
                           row("1", max_rate=300.0, p99_bound_ms=50.0, rate_search=True)], tmp_path / "two.png", kept)
    assert kept.figures[-1].axes[0].get_title().startswith("Highest request rate under each job's p99 bound (5, 50 ms)")
    monkeypatch.setattr(plots, "_pyplot", lambda: kept)
    point = {"rate": 100.0, "offered": 96.5, "valid": False, "latency_us": {"p50": 500.0, "p99": 900.0}}
    plots.plot_load_curve({"runner": {"points": [point]}, "p99_ms": 1.0}, tmp_path / "curve.png", "job")
    [ax] = kept.figures[-1].axes
    assert [list(line.get_xdata()) for line in ax.get_lines()[:2]] == [[96.5], [96.5]]
    assert ax.get_title() == "job\ncircles on the p99 lines: filled valid, open invalid"



def test_plots_draw_what_the_table_says(tmp_path):
    """From a review of the plots: two presets of one model class (or two sweeps of one config)
    drawn as one zigzag line; a per-job panel titled with the first job's mode and a missing p99
    drawn as 0 us; speedups within noise coloured as gains and losses; the best rate search (by
    samples/s) marked on the shortest bar (in requests/s); a best ranked across p99 bounds where
    only one of the searches held a rate."""
    from runner import plots

    kept = _KeptFigures()
    presets = [row(str(i), model="MLP", streams=st, asked=(f"model={m}", f"streams={st}"))
               for i, (m, st) in enumerate((("mlp", 1), ("mlp", 4), ("mlp_wide", 1), ("mlp_wide", 4)))]
    for r in presets:
        r.overrides, r.path = f"model={r.asked[0][6:]} streams={r.streams}", f"/s/{r.job}"
    plots._plot_throughput_latency(presets, tmp_path / "t.png", kept)
    # A line per label, drawn with its error bars: each an errorbar container (its label, its data line).
    lines = kept.figures[-1].axes[0].containers
    assert len(lines) == 2 and all(sorted(line.lines[0].get_xdata()) == [1, 4] for line in lines)
    assert sorted(line.get_label().rsplit("[", 1)[1] for line in lines) == ["model=mlp]", "model=mlp_wide]"]
    # Two sweeps of the same config: a line per sweep folder.
    for r, folder in zip(presets, ("a", "a", "b", "b"), strict=True):
        r.asked, r.overrides, r.path = (f"streams={r.streams}",), f"streams={r.streams}", f"/{folder}/{r.job}"
    plots._plot_throughput_latency(presets, tmp_path / "t2.png", kept)
    lines = kept.figures[-1].axes[0].containers
    assert sorted(line.get_label().rsplit("[", 1)[1] for line in lines) == ["a]", "b]"]
    assert all(sorted(line.lines[0].get_xdata()) == [1, 4] for line in lines)

    modes = [row("0"), row("1", latency_p99_us=None)]
    modes[1].mode = "graph x1 pinned direct/2"
    modes.append(row("2", requests_per_s=None))
    modes[2].status = "failed"
    modes.append(row("3", load="server: INVALID at load.rate=20,000/s"))  # an offered rate is no throughput
    plots._plot_throughput_latency(modes, tmp_path / "m.png", kept)
    fig = kept.figures[-1]
    assert fig.axes[0].get_title().endswith("modes differ: see each job's overrides\n"
                                            "error bars: +-1 standard deviation of each job's throughput passes")
    assert fig.axes[1].get_title().endswith("modes differ: see each job's overrides")  # p99: no error bars
    assert [t.get_text() for t in fig.axes[1].texts] == ["no latency\nmeasured"]
    assert fig.get_suptitle().endswith("not drawn (see the table): #2, #3")

    noise = [row("0", speedup_vs_baseline=1.01, speedup_within_noise=True),
             row("1", speedup_vs_baseline=3.0, speedup_within_noise=False),
             row("2", speedup_vs_baseline=0.5, speedup_within_noise=None)]
    plots._plot_speedup(noise, tmp_path / "s.png", kept)
    [ax] = kept.figures[-1].axes
    assert [t.get_text() for t in ax.texts] == ["~1.01", "3.00", "?0.50"]
    assert [bar.get_hatch() for bar in ax.patches] == [None, None, "//"]

    searches = [row("0", max_rate=25_000.0, samples_per_request=1.0, p99_bound_ms=5.0, rate_search=True),
                row("1", max_rate=900.0, samples_per_request=256.0, p99_bound_ms=5.0, rate_search=True)]
    report.mark_best(searches)
    plots._plot_max_rates(searches, tmp_path / "r.png", kept)
    [ax] = kept.figures[-1].axes
    assert ax.get_ylabel() == "highest rate under the bound (samples/s)"
    assert ax.get_title().startswith("Highest sample rate with p99 <= 5 ms")  # as its bars: not "request rate"
    assert [bar.get_height() for bar in ax.patches] == [25_000.0, 900.0 * 256]
    assert searches[1].best == "best"
    # A rival of another batch size that held no rate yet is weighed in samples/s too (review:
    # batch 256 cut after failing at 1,000/s, 256,000 samples/s, had not stopped batch 1's
    # 25,000 requests/s from being named best).
    rival = [row("0", max_rate=25_000.0, samples_per_request=1.0, p99_bound_ms=5.0, rate_search=True),
             row("1", max_rate=None, samples_per_request=256.0, p99_bound_ms=5.0, rate_search=True, max_rate_cut=True,
                 lowest_invalid_rate=1_000.0)]
    assert report.mark_best(rival) is None and [r.best for r in rival] == ["", ""]
    [note] = report.rival_notes(rival)
    assert "their samples/s overlap" in note and "no rate held yet (below 256,000)" in note, note

    # Results of two devices in one table: a device column (the rows had read alike).
    devices = [row("0"), row("1")]
    devices[1].device = "NVIDIA H200"
    header = report.text_table(devices).splitlines()[0].split()
    assert "device" in header and "device" not in report.text_table([row("0"), row("1")]).splitlines()[0].split()

    bounds = [row("0", max_rate=None, p99_bound_ms=5.0, rate_search=True),
              row("1", max_rate=300.0, p99_bound_ms=50.0, rate_search=True)]
    assert report.mark_best(bounds) is None and report.bound_notes(bounds)

def test_literal_escapes_every_dollar_and_keeps_a_backslash():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.text import Text

    from runner.plots import literal

    for text in (MATH, "a $x$ b $", "\\$5", "no dollars"):
        drawn = Text(0, 0, literal(text))
        assert drawn._preprocess_math(drawn.get_text()) == (text, False)  # plain text, as given


def test_a_plot_that_fails_is_named_in_one_line_and_the_others_are_written(tmp_path, capsys, monkeypatch):
    from runner import plots

    def broken(*args):
        raise ValueError("\n^\nParseSyntaxException: Expected something, found end of text")

    monkeypatch.setattr(plots, "_plot_throughput_latency", broken)
    rows = [row("0", speedup_vs_baseline=1.5), row("1", speedup_vs_baseline=0.5)]
    written = plots.plot_sweep(rows, tmp_path)
    assert [p.name for p in written] == ["speedup.png"]
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == ("warning: throughput_latency.png not written: ValueError: ParseSyntaxException: Expected "
                    "something, found end of text")


def test_plots_that_cannot_start_leave_the_table_and_one_line(tmp_path, capsys, monkeypatch):
    from runner import plots

    def no_matplotlib():
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(plots, "_pyplot", no_matplotlib)
    written = report.write_report([row("0"), row("1")], tmp_path)
    assert [p.name for p in written] == ["sweep.csv", "sweep.md"]
    assert capsys.readouterr().err == "warning: plots not written: ImportError: No module named 'matplotlib'\n"


def test_a_report_without_plots_removes_the_earlier_plots_it_no_longer_matches(tmp_path, capsys):
    """report --no-plots (or a rerun whose plots are not drawn) left the earlier plots beside the
    new tables, showing figures the tables no longer held."""
    first = report.write_report([row("0", speedup_vs_baseline=1.5), row("1", speedup_vs_baseline=0.5)], tmp_path)
    assert {p.name for p in first} >= {"throughput_latency.png", "speedup.png"}
    capsys.readouterr()
    again = report.write_report([row("0"), row("1")], tmp_path, plots=False)
    assert [p.name for p in again] == ["sweep.csv", "sweep.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv", "sweep.md"]
    assert capsys.readouterr().err == ("note: removed the earlier throughput_latency.png, speedup.png: drawn from an "
                                       "earlier table, not from this one\n")


def test_a_sweep_whose_jobs_all_failed_says_why_it_has_no_throughput_plot(tmp_path, capsys):
    report.write_report([row("0"), row("1")], tmp_path)
    assert (tmp_path / "throughput_latency.png").is_file()
    capsys.readouterr()
    failed = [dataclasses.replace(row(str(i)), status="failed", requests_per_s=None) for i in range(2)]
    written = report.write_report(failed, tmp_path)
    assert [p.name for p in written] == ["sweep.csv", "sweep.md"]
    assert capsys.readouterr().err.splitlines() == [
        "note: throughput_latency.png not drawn: none of the 2 closed-loop jobs ended ok with a throughput",
        "note: removed the earlier throughput_latency.png: drawn from an earlier table, not from this one"]
    assert not (tmp_path / "throughput_latency.png").exists()


def write_job(folder: Path, num: int, status: str) -> None:
    folder.mkdir(parents=True)
    figures = {"throughput_requests_per_s": 100.0 + num, "throughput_cv": 0.01,
               "latency_e2e_us": {"p50": 10.0, "p99": 20.0}} if status == "ok" else {}
    result = {"schema": SCHEMA, "status": status, "reason": "planted" if status != "ok" else None, "model": MATH,
              "mode": "eager x1 pageable direct/1", "overrides": [f"model.name='{MATH}'", f"seed={num}"],
              "effective": {"device": "cpu", "streams": 1}, "figures": figures, "job": {"num": num}}
    (folder / RESULT_FILE).write_text(json.dumps(result))


def test_report_of_a_sweep_with_dollars_prints_its_table_and_exits_1_for_a_failed_job(tmp_path, capsys):
    write_job(tmp_path / "0", 0, "ok")
    write_job(tmp_path / "1", 1, "failed")
    assert report.main([str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "  job 1: failed: planted" in out and "throughput_latency.png" in out.splitlines()[-1]
    assert err == ""
    assert (tmp_path / "throughput_latency.png").read_bytes()[:4] == b"\x89PNG"


# --- 2 and 4. Hydra's and OmegaConf's messages, condensed with their fix ----------------------


CONDENSED = {
    # The fix fits the key: a number takes neither a list nor a string.
    "streams=1,2": "streams=1,2: several values make a sweep; add -m (--multirun) to run one job per value",
    "device=cpu,cuda": "device=cpu,cuda: several values make a sweep; add -m (--multirun) to run one job per value, "
                       "or write one string as device='cpu,cuda'",
    "model.batch=1,2": "model.batch=1,2: several values make a sweep; add -m (--multirun) to run one job per value, "
                       "or write a list as model.batch=[1,2]",
    "dtype=fp32,bf16": "dtype=fp32,bf16: several values make a sweep; add -m (--multirun) to run one job per value",
    "load.p99_ms=1,2": "load.p99_ms=1,2: several values make a sweep; add -m (--multirun) to run one job per value",
    "model.outputs=a,b": "model.outputs=a,b: several values make a sweep; add -m (--multirun) to run one job per "
                         "value, or write a list as model.outputs=[a,b]",
    "streams=range(1,3)": "streams=range(1,3): a sweep; add -m (--multirun) to run one job per value",
    "peer=eager": "peer=eager: peer is not in the defaults list, so it cannot be overridden; add it with +peer=eager",
    "measure@x=quick": "measure@x=quick: measure@x is not in the defaults list (did you mean measure?), so it cannot "
                       "be overridden; add it with +measure@x=quick",
    "+streams=2": "+streams=2: streams is already in the config, so + cannot add it; drop the +: streams=2 "
                  "(or ++streams=2 to set it whether or not it is there)",
    "streams=null": "streams: null is not allowed; give a value, e.g. streams=4",
    "measure.budget_s=null": "measure.budget_s: null is not allowed; give a value, e.g. measure.budget_s=20",
    "capture=null": "capture: null is not allowed; give a value, e.g. capture.copies_in_graph=true",
    "~model.inputs": "~model.inputs: model.inputs cannot be deleted; remove one input with ~model.inputs.NAME, add "
                     "one with '++model.inputs={NAME: {shape: [...]}}'",
    "~model.batch": "~model.batch: model.batch cannot be deleted; set it instead, e.g. model.batch=32",
}


@pytest.mark.parametrize("override, said", [
    # A top-level key OmegaConf lets Hydra delete: the job ran the schema's default while its
    # record's config lacked the key.
    ("~streams", "~streams: streams cannot be deleted; set it instead, e.g. streams=4"),
    ("~compile", "~compile: compile cannot be deleted; set it instead, e.g. compile=none"),
    ("~capture", "~capture: capture cannot be deleted; set it instead, e.g. capture.copies_in_graph=true"),
])
def test_a_deleted_top_level_key_is_refused(make_cfg, override, said):
    cfg = make_cfg("model=mlp", override)
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert str(raised.value) == said


@pytest.mark.parametrize("override", list(CONDENSED))
def test_composition_errors_keep_their_fix_on_the_one_line(make_cfg, override):
    with pytest.raises(Exception) as raised:
        make_cfg("model=mlp", override)
    assert condense(raised.value) == CONDENSED[override]


def test_a_folder_hydra_cannot_make_names_its_key(tmp_path, monkeypatch):
    """A folder the command line does not name (the default's outputs/ is a file): Hydra's
    OSError, raised where it makes the folder, is said as the key and the fix."""
    (tmp_path / "outputs").write_text("")
    folder = tmp_path / "outputs" / "runs" / "x"

    def raised_in(function: str, argv: list[str]) -> str:
        code = f"def {function}():\n    raise NotADirectoryError(20, 'Not a directory', {str(folder)!r})\n"
        scope = {"__name__": "hydra.core.utils"}  # as Hydra's own frame
        exec(compile(code, "<hydra>", "exec"), scope)
        monkeypatch.setattr("sys.argv", ["runner", *argv])
        try:
            scope[function]()
        except OSError as exc:
            return condense(exc)
        raise AssertionError("not raised")

    why = f"{tmp_path / 'outputs'} is a file, not a folder; name a folder that can be created"
    assert raised_in("run_job", []) == f"hydra.run.dir={folder}: {why}"
    assert raised_in("run_job", ["-m", "seed=1,2"]) == f"hydra.sweep.dir={folder}: {why}"
    assert raised_in("sweep", ["-m"]) == f"hydra.sweep.dir={folder}: {why}"
    assert raised_in("something_else", []).startswith("[Errno 20]")  # not a folder Hydra makes: as it was


def test_an_os_error_of_the_jobs_own_under_hydras_frame_is_not_a_folder_error(tmp_path):
    """A result that could not be written (a full disk) surfaced through Hydra's run_job, which
    called the task, and was said as a bad hydra.run.dir (exit 2)."""
    from runner.errors import is_folder_error

    job = {"__name__": "runner.record"}
    exec(compile("def write():\n    raise OSError(28, 'No space left on device', 'out/.result.json.tmp')\n",
                 "<runner>", "exec"), job)
    hydra = {"__name__": "hydra.core.utils", "task": job["write"]}
    exec(compile("def run_job():\n    task()\n", "<hydra>", "exec"), hydra)
    try:
        hydra["run_job"]()
    except OSError as exc:
        assert not is_folder_error(exc) and condense(exc).startswith("[Errno 28]")
    else:
        raise AssertionError("not raised")


# --- 3. the command line's output folder, checked before Hydra starts ------------------------


def test_unusable_folder_says_why_and_leaves_nothing_behind(tmp_path):
    from runner.cli import unusable_folder

    (tmp_path / "afile").write_text("")
    assert unusable_folder(str(tmp_path / "afile")) == "a file, not a folder"
    assert unusable_folder(str(tmp_path / "afile" / "sub")) == f"{tmp_path / 'afile'} is a file, not a folder"
    assert unusable_folder(str(tmp_path / "afile") + "/${now:%H}") == f"{tmp_path / 'afile'} is a file, not a folder"
    assert unusable_folder("/proc/runner_test/x").startswith("cannot create the folder /proc/runner_test (")
    assert unusable_folder(str(tmp_path / "new" / "deeper")) == ""
    assert unusable_folder(str(tmp_path)) == ""
    assert unusable_folder("${oc.env:HOME}/x") == ""  # nothing known before Hydra resolves it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the folder it made to find out, removed


# The command line's cases (Hydra's slips, unusable folders) are in test_cli.py's BAD_INPUTS.


@pytest.mark.slow
def test_a_sweep_with_dollars_in_its_labels_prints_its_table_plots_and_exits_1(tmp_path):
    done = run_cli(["-m", *QUICK, "model=linear", f"model.name='{MATH}'", "model.module.out_features=8,-1",
                    "model.module.in_features=8", "model.inputs.input.shape=[8]", "hydra.sweep.dir=sweep"], tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "ParseSyntaxException" not in done.stderr and "not written" not in done.stderr
    assert "sweep: 2 jobs in " in done.stdout and "sweep: 1 of 2 jobs did not end ok: #1 failed" in done.stdout
    assert "written: sweep.csv, sweep.md, throughput_latency.png" in done.stdout
    assert len(results_under(tmp_path / "sweep")) == 2
    rebuilt = subprocess.run([sys.executable, "-m", "runner.report", "sweep", "--out", "rebuilt"], cwd=tmp_path,
                             env=cli_env(), capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 1 and rebuilt.stderr == "", rebuilt.stderr[-3000:]
    assert (tmp_path / "rebuilt" / "throughput_latency.png").read_bytes()[:4] == b"\x89PNG"
