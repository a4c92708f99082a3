"""Sweep tables rebuilt from files, plots, and the noise-aware comparison (in-process, CPU)."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Optional

import pytest

from runner import compare, report
from runner.job import JobInfo, run_job
from runner.printer import rate_text
from runner.record import RESULT_FILE, to_json

TINY = ("device=cpu", "model.batch=2", "measure.warmup_ms=0", "measure.min_requests=20",
        "measure.min_duration_ms=10", "measure.repeats=2", "measure.min_repeats=2", "measure.latency_requests=20",
        "measure.check_requests=16")
FAIL = ("model=linear", "model.module._target_=tests.faulty_models.FailAfter", "~model.module.in_features",
        "~model.module.out_features", "+model.module.features=8", "model.inputs.input.shape=[8]", "+model.module.calls=5")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A three-job sweep folder as the jobs leave it: two ok, one failed on purpose."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    root = tmp_path_factory.mktemp("sweep")
    jobs = [("streams=1",), ("streams=2",), FAIL]
    for num, extra in enumerate(jobs):
        GlobalHydra.instance().clear()
        with initialize_config_module(version_base="1.3", config_module="runner.configs"):
            cfg = compose("config", overrides=[*TINY, *extra])
        run_job(cfg, JobInfo(output_dir=root / str(num), overrides=[*TINY, *extra], multirun=True, num=num))
    GlobalHydra.instance().clear()
    return root


def test_table_has_a_row_per_job_with_the_right_status(sweep_dir):
    rows = report.collect([sweep_dir])
    assert [r.job for r in rows] == ["0", "1", "2"]
    assert [r.status for r in rows] == ["ok", "ok", "failed"]
    assert "planted failure" in rows[2].reason
    assert rows[0].overrides == "streams=1" and rows[1].overrides == "streams=2"
    assert rows[0].requests_per_s > 0 and rows[2].requests_per_s is None
    text = report.text_table(rows)
    assert "job 2: failed: RuntimeError: planted failure after 5 forwards" in text
    md = report.markdown(rows)
    assert len([line for line in md.splitlines() if line.startswith("|")]) == 5
    assert "| failed: RuntimeError: planted failure" in md
    # On a CPU streams=1 and streams=2 ran the same: sweep.md says so, as the console does.
    assert "sweep: MLP jobs #0, #1 ran the same settings" in md
    rows[0].requests_per_s = 5.66  # a slow model's rate keeps its digits, as in the job's own table
    assert "| 5.66 |" in report.markdown(rows)


def test_report_cli_rebuilds_table_and_plots_from_the_folder_alone(sweep_dir, tmp_path, capsys):
    code = report.main([str(sweep_dir), "--out", str(tmp_path)])
    assert code == 1  # a job failed
    with open(tmp_path / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert (tmp_path / "sweep.md").read_text().startswith("| job | overrides |")
    data = (tmp_path / "throughput_latency.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not (tmp_path / "speedup.png").exists()  # CPU jobs measure no baseline: nothing to draw
    assert "failed" in capsys.readouterr().out
    # Every column is described in the README (samples_cv and sides_shared had not been).
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert [c for c in rows[0] if f"`{c}`" not in readme] == []


def test_report_on_one_runs_folder_prints_its_row_and_writes_nothing_there(sweep_dir, tmp_path, capsys):
    """`runner.report RUN_DIR` wrote sweep.csv, sweep.md and a plot into the run's own folder."""
    run = tmp_path / "run"
    shutil.copytree(sweep_dir / "0", run)
    before = sorted(p.name for p in run.iterdir())
    assert report.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "streams=1" in out and f"not written: {run} is one run's folder; give --out DIR" in out
    assert sorted(p.name for p in run.iterdir()) == before
    assert report.main([str(run), "--out", str(tmp_path / "table"), "--no-plots"]) == 0  # asked: written there
    assert (tmp_path / "table" / "sweep.csv").is_file()


def test_a_job_that_left_no_result_is_listed_as_missing(sweep_dir, tmp_path):
    crashed = tmp_path / "sweep"
    crashed.mkdir()
    (crashed / "0").symlink_to(sweep_dir / "0", target_is_directory=True)
    hydra_dir = crashed / "1" / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text("- streams=8\n")
    rows = report.collect([crashed])
    assert [r.status for r in rows] == ["ok", "missing"]
    assert rows[1].overrides == "streams=8"
    assert report.main([str(crashed), "--no-plots"]) == 1


def test_report_refuses_a_folder_without_jobs(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no job folders")


def _result(sweep_dir: Path, num: int) -> dict:
    """A fixture job's result, without its warnings of other work on the host (the verdicts
    these tests read say that when it is so, and a busy test machine would make it so)."""
    result = json.loads((sweep_dir / str(num) / RESULT_FILE).read_text())
    result["warnings"] = [w for w in result.get("warnings") or [] if not report.host_shared([w])]
    return result


def _write(path: Path, result: dict) -> Path:
    path.mkdir(parents=True)
    (path / RESULT_FILE).write_text(to_json(result))
    return path


def test_compare_a_result_with_itself_is_same(sweep_dir, capsys):
    assert compare.main([str(sweep_dir), str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count(" same") == 2 and "1.000" in out
    assert "both not ok (failed, failed)" in out


def test_compare_finds_a_doctored_copy_slower_and_fails(sweep_dir, tmp_path, capsys):
    old = _result(sweep_dir, 0)
    new = copy.deepcopy(old)
    f = new["figures"]
    f["throughput_requests_per_s"] *= 0.7
    for figures in (old["figures"], f):
        figures["throughput_cv"] = figures["throughput_cv_all_repeats"] = 0.01
    code = compare.main([str(_write(tmp_path / "old", old)), str(_write(tmp_path / "new", new))])
    out = capsys.readouterr().out
    assert code == 1
    assert "slower" in out and "0.700" in out
    # The new run's own warning says other work shared its host: the verdict says so too
    # (runner.report named it; compare had said "slower" alone).
    new["warnings"] = ["the host was busy as the job began: 1 other thread ready to run on its 2 cores"]
    code = compare.main([str(_write(tmp_path / "quiet", old)), str(_write(tmp_path / "busy", new))])
    out = capsys.readouterr().out
    assert code == 1 and "slower (new's host was shared with other work: busy as it began: a rate can be many " \
        "times too low; rerun on a quiet host)" in out, out
    assert out.rstrip().splitlines()[-1].endswith(": slower (see above)")  # the caveat once, in the table
    # Other processes during its passes (the check at start had not seen them): said alike.
    new["warnings"] = ["other processes ran during the throughput passes: they kept 1.8 of the host's 2 cores busy"]
    code = compare.main([str(_write(tmp_path / "quiet2", old)), str(_write(tmp_path / "busy2", new))])
    out = capsys.readouterr().out
    assert code == 1 and "slower (new's host was shared with other work: other processes ran during its passes" in out


def test_compare_calls_a_change_inside_the_noise_same(sweep_dir):
    old = _result(sweep_dir, 0)
    new = copy.deepcopy(old)
    new["figures"]["throughput_requests_per_s"] *= 0.9
    for figures in (old["figures"], new["figures"]):
        figures["throughput_cv"] = figures["throughput_cv_all_repeats"] = 0.05  # 10% drop, 7% noise
    ratio, noise, verdict = compare.judge(old, new, threshold=0.05, sigma=3)
    assert verdict == "same" and ratio == pytest.approx(0.9) and noise == pytest.approx(0.0707, abs=1e-3)
    assert compare.judge(old, new, threshold=0.05, sigma=1)[2] == "slower"
    # A run whose figures left out passes before a step in speed: the spread of all its passes
    # is the noise to expect between runs, not the smaller spread of the passes after the step.
    new["figures"]["throughput_cv"], new["figures"]["throughput_cv_all_repeats"] = 0.005, 0.2
    assert compare.judge(old, new, threshold=0.05, sigma=3)[1] == pytest.approx(math.hypot(0.05, 0.2))
    new["figures"]["throughput_cv"] = new["figures"]["throughput_cv_all_repeats"] = 0.05
    new["figures"]["throughput_requests_per_s"] = old["figures"]["throughput_requests_per_s"] * 1.5
    assert compare.judge(old, new, threshold=0.05, sigma=3)[2] == "faster"
    # A run beside jobs on the host's other GPUs, against one that was not: the verdict says so.
    new["job"]["parallel_devices"] = 2
    assert compare.judge(old, new, threshold=0.05, sigma=3)[2].startswith(
        "faster (new's sweep ran jobs on several GPUs of its host at once (hydra.launcher.devices)")
    old["job"]["parallel_devices"] = 2
    assert compare.judge(old, new, threshold=0.05, sigma=3)[2] == "faster"
    del old["job"]["parallel_devices"]  # an older result: not known, so nothing said
    assert compare.judge(old, new, threshold=0.05, sigma=3)[2] == "faster"
    # Very noisy runs (38% combined) still see a 40x change either way: the noise bounds log(ratio).
    for figures in (old["figures"], new["figures"]):
        figures["throughput_cv"] = figures["throughput_cv_all_repeats"] = 0.27
    for factor, verdict in ((1 / 40, "slower"), (40, "faster"), (1.02, "same")):
        new["figures"]["throughput_requests_per_s"] = old["figures"]["throughput_requests_per_s"] * factor
        assert compare.judge(old, new, threshold=0.05, sigma=3)[2] == verdict, factor
    # Within that noise, a change past the threshold is not "same": noise that hides 3x is no
    # evidence of no change (a 9.3x had been called "same" beside 76% of noise).
    for factor in (0.7, 1 / 0.7):
        new["figures"]["throughput_requests_per_s"] = old["figures"]["throughput_requests_per_s"] * factor
        verdict = compare.judge(old, new, threshold=0.05, sigma=3)[2]
        assert verdict == "undecided: 38% of noise hides any change under 3.1x; rerun the noisy side on a quiet host"


def test_compare_a_rate_from_one_pass_has_unknown_noise_not_none(sweep_dir, tmp_path, capsys):
    """A run whose throughput rests on one pass has no cv (null): a change past the threshold
    is undecided (and fails the gate), never faster or slower on 0% of noise."""
    old = _result(sweep_dir, 0)
    new = copy.deepcopy(old)
    new["figures"]["throughput_requests_per_s"] *= 5.5
    old["figures"]["throughput_cv"] = old["figures"]["throughput_cv_all_repeats"] = 0.01
    new["figures"]["throughput_cv"] = new["figures"]["throughput_cv_all_repeats"] = None
    ratio, noise, verdict = compare.judge(old, new, threshold=0.05, sigma=3)
    assert ratio == pytest.approx(5.5) and noise is None
    assert verdict.startswith("undecided: new rests on one throughput pass a run, so the noise is unknown")
    new["figures"]["throughput_requests_per_s"] = old["figures"]["throughput_requests_per_s"] * 1.02
    assert compare.judge(old, new, threshold=0.05, sigma=3)[2] == "same"  # within the threshold: noise or not
    new["figures"]["throughput_requests_per_s"] = old["figures"]["throughput_requests_per_s"] * 0.5
    old["figures"]["throughput_cv"] = old["figures"]["throughput_cv_all_repeats"] = None
    assert compare.judge(old, new, threshold=0.05, sigma=3)[2].startswith("undecided: old and new rest on one")
    code = compare.main([str(_write(tmp_path / "old", old)), str(_write(tmp_path / "new", new))])
    assert code == 1 and "undecided" in capsys.readouterr().out
    # Several old runs: their spread is the noise, and one pass on a side is then no bar.
    run = _runs_of(old)
    olds = [run(100.0), run(120.0), run(80.0)]
    for r in olds:
        r["figures"]["throughput_cv"] = r["figures"]["throughput_cv_all_repeats"] = None
    one = run(20.0)
    one["figures"]["throughput_cv"] = one["figures"]["throughput_cv_all_repeats"] = None
    [m] = compare.compare(olds, [one], 0.05, 3)
    assert m.verdict.startswith("slower") and m.noise is not None
    # One old run, three new of one pass each, one of them at 0.6: pooled, the median is the
    # same, but that run alone may be slower, and the gate must not pass it (it had said "same").
    news = [run(100.0), run(100.0), run(60.0)]
    for r in news:
        r["figures"]["throughput_cv"] = r["figures"]["throughput_cv_all_repeats"] = None
    [m] = compare.compare([run(100.0)], news, 0.05, 3)
    assert m.verdict == ("undecided: maybe slower in 1 of 3 new runs (the slowest at 0.600, the median at 1.000): new "
                         "rests on one throughput pass a run, so the noise is unknown") and compare.is_regression(m)


def test_compare_matches_by_what_was_asked_and_flags_what_ran_differently(sweep_dir, capsys):
    a, b = _result(sweep_dir, 0), _result(sweep_dir, 1)
    assert compare.identity(a) != compare.identity(b)  # streams=1 and streams=2 were asked
    fallback = copy.deepcopy(a)
    fallback["effective"]["graph"] = not fallback["effective"]["graph"]  # e.g. a capture fallback
    [m] = compare.compare([a], [fallback], 0.05, 3)
    assert m.verdict == "ran differently (graph)" and compare.is_regression(m)
    # The same settings on another GPU (or, on the CPU, another CPU or thread count): not a
    # change of the code.
    for where, value in (("gpu", {"name": "NVIDIA H200", "uuid": "GPU-2"}), ("cpu_model", "Intel Xeon"),
                         ("torch_threads", 64)):
        old, new = copy.deepcopy(a), copy.deepcopy(a)
        new["job"]["started_unix"] += 1
        if where == "gpu":
            old["env"]["gpu"] = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1"}
            old["effective"]["device"] = new["effective"]["device"] = "cuda:0"
        new["env"][where] = value
        new["figures"]["throughput_requests_per_s"] *= 1.5
        [m] = compare.compare([old], [new], 0.05, 3)
        said = {"gpu": "gpu: NVIDIA H100 80GB HBM3 -> NVIDIA H200",
                "cpu_model": f"host cpu: {a['env']['cpu_model']} -> Intel Xeon",
                "torch_threads": f"torch threads: {a['env']['torch_threads']} -> 64"}[where]
        assert m.verdict == f"ran differently ({said})" and compare.is_regression(m), m.verdict
        # Pooled in old, a run on the other hardware is left out, not taken for spread.
        [m] = compare.compare([old, new], [old], 0.05, 3)
        assert m.runs == (1, 1) and m.verdict == "same"
    # A GPU run under another host CPU: compared, the host named beside the verdict.
    old, new = copy.deepcopy(a), copy.deepcopy(a)
    new["job"]["started_unix"] += 1
    for r in (old, new):
        r["effective"]["device"] = "cuda:0"
        r["env"]["gpu"] = {"name": "NVIDIA H200", "uuid": "GPU-2"}
        r["figures"]["throughput_cv"] = r["figures"]["throughput_cv_all_repeats"] = 0.01
    new["env"]["cpu_model"] = "Intel Xeon"
    new["figures"]["throughput_requests_per_s"] *= 1.5
    [m] = compare.compare([old], [new], 0.05, 3)
    assert m.verdict == (f"faster (on another host CPU: {a['env']['cpu_model']} -> Intel Xeon; a config bound by the "
                         "host moves with it)") and not compare.is_regression(m), m.verdict
    matches = compare.compare([a, b], [a], 0.05, 3)
    assert [m.verdict for m in matches] == ["same", "missing in new"]
    assert compare.is_regression(matches[1])
    # A config that failed in old and is gone in new lost no measurement: said, not a regression.
    failed = {**copy.deepcopy(b), "status": "failed", "reason": "RuntimeError: boom (in the check)", "figures": {}}
    matches = compare.compare([a, failed], [a], 0.05, 3)
    assert matches[1].verdict == "missing in new (was failed in old)" and not compare.is_regression(matches[1])
    # Nor one that was invalid: its rate came from outputs that differed from eager (it had
    # counted as measured, and failed the gate).
    invalid = {**copy.deepcopy(b), "status": "invalid", "reason": "128 of 128 requests differ from eager"}
    matches = compare.compare([a, invalid], [a], 0.05, 3)
    assert matches[1].verdict == "missing in new (was invalid in old)" and not compare.is_regression(matches[1])
    # One old run of it was ok (the last failed): measured once, so its absence is a regression.
    matches = compare.compare([a, b, failed], [a], 0.05, 3)
    assert matches[1].verdict == "missing in new" and compare.is_regression(matches[1])
    [m] = compare.compare([a, a], [a], 0.05, 3)  # two runs of a config on a side are pooled
    assert m.runs == (2, 1) and m.verdict == "same"



def test_configs_with_buckets_compare_the_work_done_not_the_requests(sweep_dir, tmp_path, capsys):
    """Two runs of one bucketed config served 16 and 8 samples a request: 100 and 200
    requests/s were the same 1,600 samples/s, and compare had called the second 2x faster
    (and the reverse a regression)."""
    a = _result(sweep_dir, 0)

    def bucketed(rate: float, served: float, start: int) -> dict:
        r = copy.deepcopy(a)
        r["job"]["started_unix"] = start
        r["figures"].update(throughput_requests_per_s=rate, throughput_samples_per_s=rate * served,
                            throughput_samples_per_request=served, samples_per_request=7.5,
                            throughput_cv=0.01, throughput_cv_all_repeats=0.01, throughput_samples_cv=0.01)
        return r

    for old, new in ((bucketed(100, 16, 1), bucketed(200, 8, 2)), (bucketed(200, 8, 2), bucketed(100, 16, 1))):
        [m] = compare.compare([old], [new], 0.05, 3)
        assert m.verdict == "same" and m.ratio == pytest.approx(1.0), (m.verdict, m.ratio)
        assert m.old["figures"]["throughput_requests_per_s"] == pytest.approx(1600 / 7.5)  # at the plan's mix
    # The same work done faster is still faster; a run that did not record what it served
    # leaves the config in requests/s.
    [m] = compare.compare([bucketed(100, 16, 1)], [bucketed(400, 8, 2)], 0.05, 3)
    assert m.verdict == "faster" and m.ratio == pytest.approx(2.0)
    older = bucketed(100, 16, 1)
    del older["figures"]["throughput_samples_per_request"]
    [m] = compare.compare([older], [bucketed(200, 8, 2)], 0.05, 3)
    assert m.ratio == pytest.approx(2.0)
    assert compare.main([str(_write(tmp_path / "old", bucketed(100, 16, 1))),
                         str(_write(tmp_path / "new", bucketed(200, 8, 2)))]) == 0
    assert "note: 1 config(s) serve a mix of request sizes (buckets)" in capsys.readouterr().out
    # Compared in samples/s, weighed by the samples/s spread (review: 2% in requests/s, 10% in
    # samples/s on both sides, and a 0.85 had been called slower within 14% of noise).
    noisy_old, noisy_new = bucketed(100, 16, 1), bucketed(170, 8, 2)
    for r in (noisy_old, noisy_new):
        r["figures"].update(throughput_cv=0.02, throughput_cv_all_repeats=0.02, throughput_samples_cv=0.10)
    [m] = compare.compare([noisy_old], [noisy_new], 0.05, 3)
    assert m.ratio == pytest.approx(0.85) and m.noise == pytest.approx(math.hypot(0.10, 0.10)) and m.verdict == "same"


def test_an_undecided_verdict_is_cut_to_its_first_clause_outside_its_caveat():
    """The exit line cut an undecided verdict at its first "; ", inside a caveat that holds one
    (old's host ...; new's host ...), leaving an unclosed parenthesis (review)."""
    verdict = ("undecided: 30% of noise hides any change under 2.5x (old's host was shared: busy; new's host was "
               "shared: busy); rerun the noisy side on a quiet host")
    assert compare._short(verdict) == ("undecided: 30% of noise hides any change under 2.5x (old's host was shared: "
                                       "busy; new's host was shared: busy)")
    assert compare._short("undecided: a; b") == "undecided: a" and compare._short("undecided: a") == "undecided: a"


def test_the_threshold_reads_alike_both_ways_and_few_runs_spread_is_their_stdev(sweep_dir):
    """Review: 100 to 95.2 read "same" but 95.2 to 100 "faster" (|ratio - 1| against a
    threshold, where the noise test is on the log); and from 5 runs old's spread was their
    median absolute deviation, which reads low at so few (false regressions 6.1% against 2.3%
    simulated)."""
    run = _runs_of(_result(sweep_dir, 0))
    down, up = compare.compare([run(100.0)], [run(95.2)], 0.05, 3)[0], compare.compare([run(95.2)], [run(100.0)], 0.05, 3)[0]
    assert (down.verdict, up.verdict) == ("slower", "faster")  # 1 / 0.952 > 1.05: past it, both ways
    down, up = compare.compare([run(100.0)], [run(95.3)], 0.05, 3)[0], compare.compare([run(95.3)], [run(100.0)], 0.05, 3)[0]
    assert down.verdict == up.verdict == "same"
    five = [100.0, 101.0, 99.0, 110.0, 90.0]
    assert compare.between_runs(five) == pytest.approx(statistics.stdev(five) / statistics.fmean(five))
    ten = [100.0] * 5 + [101.0] * 4 + [60.0]
    assert compare.between_runs(ten) < 0.02  # robust from ROBUST_RUNS on: one stray run of ten
    # Searches pooled: the bracket's top is the median of the runs' tops, open where theirs are
    # (review: (100, +5%), (100, open), (200, +5%) had pooled to a top of 105).
    base = _result(sweep_dir, 0)

    def search(best: float, failed: Optional[float]) -> dict:
        r = run(best)
        r["figures"] = {"server_max_rate": best, "load": {
            "scenario": "server", "rate": "max", "p99_ms": 2.0,
            "runner": {"points": [{}], "max_rate": best, "lowest_invalid_rate": failed,
                       "stopped_by": "budget" if failed is None else "resolution"}}}
        return r

    assert base["figures"]["throughput_requests_per_s"]  # the base is a throughput run; the searches replace it
    one = compare._as_one([search(100.0, 105.0), search(100.0, None), search(200.0, 210.0)])
    assert one["figures"]["server_max_rate"] == 100.0 and one["figures"]["load"]["runner"]["lowest_invalid_rate"] == 210.0


def test_configs_pair_across_runner_versions_and_measurement_settings(sweep_dir):
    """An older result without the keys added since (staging, compile, load, capture), and an
    offline run with another load.duration_s (which no offline job reads), had each been
    'missing in new' beside 'only in new': a 40% slowdown between them went unseen."""
    a = _result(sweep_dir, 0)
    older = copy.deepcopy(a)
    for key in ("staging", "compile", "load", "capture"):
        del older["config"][key]
    del older["config"]["model"]["sizes"], older["config"]["model"]["outputs"]
    for inp in older["config"]["model"]["inputs"].values():
        del inp["dtype"]  # an input's own dtype: recorded since 2895ad9, null by default
    slower = copy.deepcopy(a)
    slower["job"]["started_unix"] += 1
    slower["config"]["load"]["duration_s"] = 2.0
    slower["figures"]["throughput_requests_per_s"] *= 0.6
    slower["figures"]["throughput_cv"] = slower["figures"]["throughput_cv_all_repeats"] = 0.01
    for old in (older, a):
        old["figures"]["throughput_cv"] = old["figures"]["throughput_cv_all_repeats"] = 0.01
        [m] = compare.compare([old], [slower], 0.05, 3)
        assert m.verdict.startswith("slower") and m.ratio == pytest.approx(0.6), m.verdict
    # What a server run offers and bounds still tells configs apart.
    server = copy.deepcopy(a)
    server["config"]["load"].update(scenario="server", rate="max", p99_ms=2.0)
    bound = copy.deepcopy(server)
    bound["config"]["load"]["p99_ms"] = 5.0
    assert compare.identity(server) != compare.identity(bound)
    bound["config"]["load"].update(p99_ms=2.0, duration_s=3.0)
    assert compare.identity(server) == compare.identity(bound)

def _runs_of(base: dict):
    started = iter(range(1, 1 << 20))

    def run(rate: float, status: str = "ok", cv: float = 0.01, canary_us: float = 110.0) -> dict:
        r = copy.deepcopy(base)
        r["job"]["started_unix"] = base["job"]["started_unix"] + next(started)  # another run, not a copy
        r["status"] = status
        r["figures"]["throughput_requests_per_s"] = rate
        r["figures"]["throughput_cv"] = r["figures"]["throughput_cv_all_repeats"] = cv
        r["figures"]["host_canary_us_repeats"] = [canary_us] * 3
        r["figures"]["throughput_steady_from_repeat"] = 1
        return r
    return run


def test_compare_pools_several_runs_of_a_config_and_counts_old_spread_as_noise(sweep_dir, tmp_path, capsys):
    """The passes of one run can agree closely while two runs of it land far apart (a host whose
    speed changes between runs, a rate with two levels). Given several old runs, compare reads
    their median and their spread; a single new run is taken to stray as far. A drop within
    that spread is not called slower; one past it is."""
    run = _runs_of(_result(sweep_dir, 0))
    olds = [run(100.0), run(120.0), run(80.0)]
    # One old run alone (the last, 80/s) against 70/s: a 12% drop over 1.4% of noise, "slower".
    assert compare.compare(olds[-1:], [run(70.0)], 0.05, 3)[0].verdict == "slower"
    [m] = compare.compare(olds, [run(70.0)], 0.05, 3)
    assert m.runs == (3, 1) and m.ratio == pytest.approx(0.7)  # against the median, 100/s
    # Old's median is known to 1.25 x 20% / sqrt(3); the one new run strays by old's whole 20%.
    assert m.noise == pytest.approx(math.hypot(1.25 * 0.2 / math.sqrt(3), 0.2))
    # Within that noise: not called slower, nor "same" (25% of noise would hide a 2x).
    assert m.verdict.startswith("undecided: 25% of noise hides any change under 2.1x")
    assert compare.compare(olds, [run(97.0)], 0.05, 3)[0].verdict == "same"  # within the threshold
    assert compare.compare(olds, [run(45.0)], 0.05, 3)[0].verdict == "slower"  # past 3 x that noise
    # Runs on both sides that agree keep the noise small.
    [m] = compare.compare([run(100.0), run(101.0)], [run(80.0), run(81.0)], 0.05, 3)
    assert m.runs == (2, 2) and m.verdict == "slower" and m.noise < 0.02
    # One stray run among many old ones does not blind the gate (median absolute deviation).
    [m] = compare.compare([run(100.0)] * 9 + [run(70.0)], [run(80.0)], 0.05, 3)
    assert m.runs == (10, 1) and m.verdict == "slower"
    # In old, a failed run is left out of the pool, with a warning.
    assert compare.compare([*olds, run(1.0, "failed")], [run(100.0)], 0.05, 3)[0].runs == (3, 1)
    assert "1 of 4 runs of" in capsys.readouterr().err
    # The host column reads the pooled runs' median canary, not the last run's.
    [m] = compare.compare([run(100.0), run(100.0), run(60.0, canary_us=200.0)], [run(98.0)], 0.05, 3)
    assert compare.host_speed_ratio(m) == pytest.approx(1.0)
    # The console shows the runs per side and says how they were read.
    assert compare.main([str(_write_all(tmp_path / "old", olds)), str(_write(tmp_path / "new", run(97.0)))]) == 0
    out = capsys.readouterr().out
    assert "runs" in out.splitlines()[0] and " 3+1 " in out
    assert "note: 1 config(s) have several runs on a side" in out


def test_a_pooled_row_is_labelled_by_what_all_its_runs_asked(sweep_dir):
    """Six runs of one config pooled, one of them with timestamps=csv (not part of what a config
    is): the row was labelled "timestamps=csv", true of one run of six."""
    one, two = _runs_of(_result(sweep_dir, 0)), _runs_of(_result(sweep_dir, 1))
    marked = one(100.0)
    marked["overrides"] = [*marked["overrides"], "timestamps=csv"]
    matches = compare.compare([one(100.0), two(90.0)], [one(101.0), one(99.0), marked, two(91.0)], 0.05, 3)
    assert sorted(m.label for m in matches) == ["streams=1", "streams=2"], [m.label for m in matches]
    assert [m.runs for m in matches if m.label == "streams=1"] == [(1, 3)]


def test_the_gate_never_averages_a_worse_new_run_away(sweep_dir):
    """new's own spread never widens the gate: runs that halved, one run that collapsed, one
    that failed or ran other settings, each fails it (review of the first version, which let
    new [50, 50, 100] against old 100 pass as noise)."""
    run = _runs_of(_result(sweep_dir, 0))
    [m] = compare.compare([run(100.0)], [run(50.0), run(50.0), run(100.0)], 0.05, 3)
    assert m.verdict.startswith("slower") and compare.is_regression(m)
    [m] = compare.compare([run(100.0)], [run(1.0), run(100.0), run(100.0)], 0.05, 3)
    assert m.verdict.startswith("slower in 1 of 3 new runs (the slowest at 0.010") and compare.is_regression(m)
    [m] = compare.compare([run(100.0), run(120.0), run(80.0)], [run(100.0), run(99.0)], 0.05, 3)
    assert m.verdict == "same"  # each new run is within old's spread
    [m] = compare.compare([run(100.0)], [run(100.0), run(100.0, "failed")], 0.05, 3)
    assert m.verdict == "new failed" and compare.is_regression(m)
    fallback = run(100.0)
    fallback["effective"]["graph"] = not fallback["effective"]["graph"]
    [m] = compare.compare([run(100.0)], [fallback, run(100.0)], 0.05, 3)
    assert m.verdict == "new runs ran differently among themselves (graph)" and compare.is_regression(m)
    # In old, the runs that ran like new's are pooled; the fallback is left out.
    [m] = compare.compare([run(100.0), run(100.0), fallback], [run(100.0)], 0.05, 3)
    assert m.verdict == "same" and m.runs == (2, 1)


def test_pooled_rate_searches_read_every_run(sweep_dir):
    """load.rate=max searches pool on their highest rate under the bound; in new, a search that
    held no rate or measured nothing decides the row, whatever the order of the files."""
    run = _runs_of(_result(sweep_dir, 0))

    def search(rate: Optional[float], points: bool = True) -> dict:
        r = run(1.0)
        f = r["figures"]
        f.pop("throughput_requests_per_s")
        f["server_max_rate"] = rate
        f["load"] = {"scenario": "server", "rate": "max", "p99_ms": 2.0,
                     "runner": {"points": [{"rate": 1.0}] if points else []}}
        return r

    old = [search(1000.0)]
    assert compare.compare(old, [search(None), search(1000.0)], 0.05, 3)[0].verdict.startswith("slower: no rate held")
    assert compare.compare(old, [search(None, points=False), search(1000.0)], 0.05, 3)[0].verdict.startswith(
        "new not measured")
    a = compare.compare(old, [search(400.0), search(1000.0)], 0.05, 3)[0].verdict
    b = compare.compare(old, [search(1000.0), search(400.0)], 0.05, 3)[0].verdict
    assert a == b and a.startswith("slower")  # the median, 700/s, whichever file comes first
    [m] = compare.compare([search(1000.0), search(1010.0)], [search(1005.0)], 0.05, 3)
    assert m.runs == (2, 1) and m.verdict == "same" and m.ratio == pytest.approx(1.0)  # 1005 against the median, 1005


def test_runs_of_other_devices_or_older_versions_are_not_called_apart(sweep_dir):
    """A device=cpu,cuda sweep in one folder holds two configs, not two runs that ran apart; an
    older result without a later key (staging) ran alike where both recorded."""
    run = _runs_of(_result(sweep_dir, 0))
    gpu = run(100.0)
    gpu["config"]["device"] = "cuda"
    gpu["effective"]["device"] = "cuda:0"
    matches = compare.compare([run(100.0), gpu], [run(100.0), gpu], 0.05, 3)
    assert [m.verdict for m in matches] == ["same", "same"] and all(m.runs == (1, 1) for m in matches)
    older = run(100.0)
    del older["effective"]["staging"]
    assert compare.compare([older], [run(100.0)], 0.05, 3)[0].verdict == "same"
    assert compare.compare([run(100.0), older], [run(100.0)], 0.05, 3)[0].runs == (2, 1)
    assert compare.differences(older, run(100.0)) == []


def _write_all(path: Path, results: list[dict]) -> Path:
    for i, result in enumerate(results):
        _write(path / str(i), result)
    return path


def test_jobs_that_ran_the_same_settings_are_said_to_collapse():
    from runner.report import Row, collapse_notes, collapsed

    def row(job, asked, ran='{"graph": false, "streams": 1}', status="ok"):
        return Row(job=job, overrides=" ".join(asked), model="MLP", mode="eager x1 pageable", status=status,
                   reason="", requests_per_s=1.0, samples_per_s=1.0, latency_p50_us=1.0, latency_p99_us=1.0,
                   speedup_vs_baseline=None, efficiency_vs_ceiling=None, throughput_cv=0.01, streams=1,
                   device="cpu", path="", ran=ran, asked=tuple(asked))

    same = [row("0", ["streams=1", "graph=false"]), row("1", ["streams=2", "graph=true"])]
    assert [len(g) for g in collapsed(same)] == [2]
    # A resumed sweep: the jobs that ran again carry resume=True, the kept one does not.
    resumed = [row("0", ["streams=1"]), row("1", ["streams=2", "resume=True"]), row("2", ["streams=4", "resume=True"])]
    assert [[r.job for r in g] for g in collapsed(resumed)] == [["0", "1", "2"]]
    assert "jobs #0, #1 ran the same settings" in collapse_notes(same)[0]
    assert collapse_notes(same)[0].endswith("so their differences are noise")
    # A job interrupted before it measured is named apart, not among those whose differences are noise.
    stopped = [*same, row("2", ["streams=4", "graph=true"], status="interrupted")]
    assert "jobs #0, #1 (and #2, which did not end ok) ran the same settings" in collapse_notes(stopped)[0]
    # Jobs that all failed may never have run the settings (a _target_ that does not import): no note.
    failed = [row("0", ["streams=1"], status="failed"), row("1", ["streams=2"], status="failed")]
    assert collapse_notes(failed) == []
    # One measured beside one failed: collapsed, but no figures to call noise.
    one = [row("0", ["streams=1"]), row("1", ["streams=2"], status="failed")]
    assert collapse_notes(one)[0].endswith("the machine overruled what they asked for")
    seeds = [row("0", ["seed=1"]), row("1", ["seed=2"])]  # a real difference, not a collapse
    assert collapsed(seeds) == []
    # The same overrides in another order (two runs of one config, by hand), or resumed: asked
    # the same, nothing overruled (a new user's two runs were said to be).
    reordered = [row("0", ["model=vit", "measure=quick"]), row("1", ["measure=quick", "model=vit"]),
                 row("2", ["model=vit", "measure=quick", "resume=True"])]
    assert collapsed(reordered) == [] and collapse_notes(reordered) == []
    # Several groups (batch x graph on a CPU): one note, not one per group, each group named by
    # what tells it from the others (every group had read "eager x1 pageable on cpu").
    grid = [row("0", ["model.batch=1", "graph=false", "measure=quick"]),
            row("1", ["model.batch=1", "graph=true", "measure=quick"]),
            row("2", ["model.batch=8", "graph=false", "measure=quick"]),
            row("3", ["model.batch=8", "graph=true", "measure=quick"])]
    assert collapse_notes(grid) == [
        "sweep: jobs ran the same settings in 2 groups (MLP #0, #1: model.batch=1, eager x1 pageable on cpu; MLP #2, "
        "#3: model.batch=8, eager x1 pageable on cpu): the machine overruled what they asked for, so the differences "
        "within each group are noise"]
    # experiment=peers on a CPU: +peer=graphs ran eager, as +peer=eager did.
    peers = [row("0", ["+peer=eager"]), row("1", ["+peer=graphs"]),
             row("2", ["+peer=compile"], ran='{"compile": "default", "graph": false, "streams": 1}')]
    assert [[r.job for r in g] for g in collapsed(peers)] == [["0", "1"]]


def test_compare_labels_configs_that_ran_alike_by_what_they_asked(tmp_path):
    from runner.compare import compare

    def result(streams, rps, graph=True):
        return {"status": "ok", "model": "MLP", "mode": "eager x1 pageable",
                "config": {"model": {"name": None, "module": {"_target_": "runner.models.mlp.MLP"}, "batch": 2,
                                     "inputs": {"x": {"shape": [256]}}}, "streams": streams, "graph": graph},
                "effective": {"device": "cpu", "dtype": "fp32", "tf32": False, "streams": 1},
                "figures": {"throughput_requests_per_s": rps, "throughput_cv": 0.01}}

    matches = compare([result(1, 100.0), result(2, 100.0)], [result(1, 100.0), result(4, 100.0)], 0.05, 3.0)
    names = [m.label for m in matches]
    assert len(set(names)) == len(names) == 3  # streams=2 (missing) and streams=4 (only in new) differ
    assert any("streams=2" in n for n in names) and any("streams=4" in n for n in names)
    # Booleans as the command line writes them (the labels said graph=False).
    matches = compare([result(1, 100.0, True), result(1, 100.0, False)], [result(1, 100.0, True)], 0.05, 3.0)
    assert sorted(m.label.rpartition(" | asked ")[2] for m in matches) == ["graph=false", "graph=true"]
    # A setting one config left unset: said so (its label had ended in "asked " and nothing).
    unset = result(1, 100.0)
    unset["config"]["model"]["module"]["depth"] = 6
    matches = compare([result(1, 100.0)], [unset], 0.05, 3.0)
    assert sorted(m.label.rpartition(" | asked ")[2] for m in matches) == ["module.depth unset", "module.depth=6"]


def test_plots_of_a_sweep_without_latency_warn_nothing(tmp_path, recwarn):
    """Rows measured over streams but without latency passes (measure.latency_requests=0):
    the p99 axes stay empty and get no legend, so matplotlib has nothing to warn about."""
    import logging

    from runner.plots import plot_sweep
    from runner.report import Row

    def row(job, streams):
        return Row(job=job, overrides=f"streams={streams}", model="MLP", mode=f"graph x{streams} pinned", status="ok",
                   reason="", requests_per_s=1000.0 * streams, samples_per_s=1.0, latency_p50_us=None,
                   latency_p99_us=None, speedup_vs_baseline=None, efficiency_vs_ceiling=None, throughput_cv=0.01,
                   streams=streams, device="NVIDIA H200", path="")

    written = plot_sweep([row("0", 1), row("1", 2), row("2", 4)], tmp_path)
    assert [p.name for p in written] == ["throughput_latency.png"]
    assert written[0].read_bytes()[:4] == b"\x89PNG"
    assert [str(w.message) for w in recwarn] == []
    assert logging.getLogger("matplotlib").getEffectiveLevel() >= logging.WARNING


def test_the_sweep_plot_draws_each_rate_with_its_spread(tmp_path, monkeypatch):
    """A job of cv 14.7% was drawn 20% above the others with nothing showing its spread: the
    rates are drawn with +-1 standard deviation of their passes, per job and against streams."""
    import matplotlib.axes

    from runner.plots import plot_sweep
    from runner.report import Row

    drawn: dict[str, list] = {}
    for name in ("bar", "errorbar"):
        real = getattr(matplotlib.axes.Axes, name)

        def recording(self, *args, _real=real, _name=name, **kwargs):
            if "yerr" in kwargs:
                drawn.setdefault(_name, []).append(list(kwargs["yerr"]))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, name, recording)

    def row(job, streams, rate, cv):
        return Row(job=job, overrides=f"seed={job}", model="MLP", mode=f"eager x{streams}", status="ok", reason="",
                   requests_per_s=rate, samples_per_s=4 * rate, latency_p50_us=None, latency_p99_us=None,
                   speedup_vs_baseline=None, efficiency_vs_ceiling=None, throughput_cv=cv, streams=streams,
                   device="cpu", path="")

    plot_sweep([row("0", 1, 800.0, 0.147), row("1", 1, 660.0, 0.01), row("2", 1, 650.0, None)], tmp_path / "a")
    assert drawn["bar"] == [[pytest.approx(117.6), pytest.approx(6.6), 0.0]]
    # On a samples/s axis (jobs of other batches), each job's samples/s cv: a bucketed job's
    # passes' samples/s spread apart from their requests/s.
    drawn.clear()
    mixed = [row("0", 1, 800.0, 0.04), row("1", 1, 600.0, 0.01)]
    mixed[0].samples_per_s, mixed[0].samples_cv = 6000.0, 0.1
    plot_sweep(mixed, tmp_path / "c")
    assert drawn["bar"] == [[pytest.approx(600.0), pytest.approx(24.0)]]
    drawn.clear()
    plot_sweep([row("0", 1, 1000.0, 0.02), row("1", 2, 2000.0, 0.1)], tmp_path / "b")
    assert sorted(x for bars in drawn["errorbar"] for x in bars) == [pytest.approx(20.0), pytest.approx(200.0)]
    assert "bar" not in drawn  # points against streams, not bars


def test_a_per_job_plot_with_long_labels_warns_nothing(tmp_path, recwarn):
    """Many jobs on one stream count (a CPU sweep), labelled by long overrides: matplotlib's
    tight layout gave up on them ("Tight layout not applied") and the title ran off the figure."""
    from runner.plots import plot_sweep
    from runner.report import Row

    def row(job, model):
        label = (f"model.module.config.num_hidden_layers={job} model.inputs.attention_mask.random_lengths=true "
                 "dtype=bf16 hydra.searchpath=[file:///home/me/work/conf]")
        return Row(job=str(job), overrides=label, model=model, mode="eager x1 pageable direct/1", status="ok",
                   reason="", requests_per_s=100.0 + job, samples_per_s=1.0, latency_p50_us=900.0,
                   latency_p99_us=1000.0, speedup_vs_baseline=None, efficiency_vs_ceiling=None, throughput_cv=0.01,
                   streams=1, device="cpu", path="")

    rows = [row(j, m) for j in range(12) for m in ("DistilBertModel", "ViTModel", "MLP")]
    written = plot_sweep(rows, tmp_path)
    assert [p.name for p in written] == ["throughput_latency.png"]
    assert [str(w.message) for w in recwarn] == []
    # The terminal table too keeps its overrides column short, by the keys' last parts.
    from runner.report import short_label, text_table

    table = text_table(rows)
    assert "model.inputs.attention_mask.random_lengths" not in table  # 139 characters of overrides, cut to 60
    assert max(len(line) for line in table.splitlines()) < 200
    assert short_label("model.module.config.num_hidden_layers=11 model.inputs.mask.random_lengths=true dtype=bf16",
                       60) == "num_hidden_layers=11 random_lengths=true dtype=bf16"
    assert short_label("streams=2", 60) == "streams=2"
    # A column is shortened alike: one key was shown two ways (the row under the width kept
    # it whole), and the cut from the left dropped the value that told the rows apart.
    from runner.report import short_labels

    assert short_labels(["streams=1 model.module._target_=tests.faulty_models.FailAfter",
                         "streams=1 model.module._target_=tests.faulty_models.Healthy"], 60) == [
        "streams=1 _target_=tests.faulty_models.FailAfter", "streams=1 _target_=tests.faulty_models.Healthy"]
    long = "~model.module.in_features ~model.module.out_features +model.module.features=512 model.module.calls="
    assert short_labels([long + "5", long + "6"], 30) == ["calls=5", "calls=6"]
    assert short_labels(["~model.module.in_features=null model.batch=2", "model.batch=4"], 20) == [
        "~in_features batch=2", "batch=4"]  # a deletion, as a sweep's job records it, stays one
    # Two keys of one last name keep as many parts as tell them apart (both read num_hidden_layers).
    clip = "model.module.config.{}_config.num_hidden_layers={}"
    assert short_labels([f"{clip.format('text', a)} {clip.format('vision', b)}" for a, b in ((1, 2), (2, 1))], 70) == [
        "text_config.num_hidden_layers=1 vision_config.num_hidden_layers=2",
        "text_config.num_hidden_layers=2 vision_config.num_hidden_layers=1"]


def test_compare_gates_load_searches_on_their_highest_rate_and_never_passes_on_nothing(sweep_dir, tmp_path, capsys):
    """Load sweeps read "no throughput" on every row and passed the gate (exit 0). A rate=max
    search is compared on its highest rate under the bound; a single-stream or fixed-rate job
    says why it is not compared, and a comparison of nothing exits 1."""
    base = _result(sweep_dir, 0)

    def load_result(folder, figures):
        r = copy.deepcopy(base)
        r["figures"] = figures
        return str(_write(tmp_path / folder, r))

    search = {"load": {"scenario": "server", "rate": "max", "p99_ms": 2.0}, "server_max_rate": 1000.0}
    slower = {**search, "server_max_rate": 700.0}
    assert compare.main([load_result("a", search), load_result("b", slower)]) == 1
    assert "0.700" in capsys.readouterr().out
    single = {"load": {"scenario": "single_stream"}, "single_stream_latency_us": {"p50": 100.0}}
    assert compare.main([load_result("c", single), load_result("d", single)]) == 1
    out = capsys.readouterr().out
    assert "not compared: load.scenario=single_stream" in out and "nothing was compared" in out
    # A search in which no rate held the bound: slower when the old one held a rate, and the
    # reason when neither did (it read "no throughput").
    none = {**search, "server_max_rate": None}
    assert compare.main([load_result("e", search), load_result("f", none)]) == 1
    assert "slower: no rate held p99 <= 2 ms in the new run (old held 1,000/s)" in capsys.readouterr().out
    assert compare.main([load_result("g", none), load_result("h", search)]) == 0
    assert "faster: no rate held p99 <= 2 ms in the old run (new holds 1,000/s)" in capsys.readouterr().out
    assert compare.main([load_result("i", none), load_result("j", none)]) == 1
    assert "not compared: no rate held p99 <= 2 ms in either run" in capsys.readouterr().out
    # A search the budget cut after points that all failed found no rate yet, not that none
    # holds (a quick job's one point had read "slower: no rate held"): undecided, the gate stops.
    cut = {**none, "load": {**search["load"], "runner": {"points": [{}], "stopped_by": "budget"}}}
    assert compare.main([load_result("m", search), load_result("n", cut)]) == 1
    assert "undecided: new's rate search was cut by the budget before any rate held the bound; raise " \
        "measure.budget_s" in capsys.readouterr().out
    # A search the budget ended before its first point measured nothing: a gate must not pass.
    unmeasured = {**none, "load": {**search["load"], "runner": {"points": [], "stopped_by": "budget"}}}
    assert compare.main([load_result("k", search), load_result("l", unmeasured)]) == 1
    assert "new not measured: its rate search ran out of budget before its first point" in capsys.readouterr().out


def test_jobs_of_different_batch_sizes_get_a_samples_column(sweep_dir):
    """experiment=sweep_batch ranked batch 1 first on requests/s alone."""
    rows = report.collect([sweep_dir])
    assert "samples/s" not in report.text_table(rows)  # one batch size: requests/s says it all
    rows[1].samples_per_s, rows[1].samples_per_request = rows[1].requests_per_s * 512, 512.0
    header = report.text_table(rows).splitlines()[0].split()
    assert header[header.index("requests/s") + 1] == "samples/s"
    # Bucketed jobs of one plan serve slightly different mixes (7.559 and 7.612 samples per
    # request): the same plan is one batch size, not a samples column of its own.
    for row, served in zip(rows[:2], (7.559, 7.612), strict=True):
        row.samples_per_request, row.samples_per_s = 7.56, row.requests_per_s * served
    assert not report.mixed_batches(rows[:2])


def test_a_ratio_within_noise_is_marked_in_the_tables(sweep_dir, tmp_path):
    """The job's console says "(within noise)"; the sweep's table showed 1.02x and 101.0% as
    results. Marked there too, with what the mark means; the CSV has the flags."""
    noisy, clear = _result(sweep_dir, 0), _result(sweep_dir, 1)
    noisy["figures"].update(speedup_vs_baseline=1.02, speedup_vs_baseline_within_noise=True,
                            efficiency_vs_ceiling=1.01, efficiency_vs_ceiling_within_noise=True)
    clear["figures"].update(speedup_vs_baseline=5.0, speedup_vs_baseline_within_noise=False,
                            efficiency_vs_ceiling=0.6, efficiency_vs_ceiling_within_noise=False)
    rows = report.collect([_write(tmp_path / "noisy", noisy), _write(tmp_path / "clear", clear)])
    text, md, csv = report.text_table(rows), report.markdown(rows), report.csv_text(rows)
    for table in (text, md):
        assert "~1.02x" in table and "~101.0%" in table and "~5.00x" not in table and " 5.00x" in table
        assert report.NOISE_NOTE in table
    import csv as csv_module

    flags = [(r["speedup_within_noise"], r["efficiency_within_noise"]) for r in csv_module.DictReader(io.StringIO(csv))]
    assert sorted(flags) == [("False", "False"), ("True", "True")]
    # A job with no ratio (the CPU, an older result) is no "False": an empty cell.
    for f in (noisy["figures"], clear["figures"]):
        for key in ("speedup_vs_baseline_within_noise", "efficiency_vs_ceiling_within_noise"):
            f.pop(key)
    rows = report.collect([_write(tmp_path / "old1", noisy), _write(tmp_path / "old2", clear)])
    flags = [(r["speedup_within_noise"], r["efficiency_within_noise"])
             for r in csv_module.DictReader(io.StringIO(report.csv_text(rows)))]
    assert flags == [("", ""), ("", "")]
    # So is a job with no rate search: its max_rate_cut says nothing ("False" read as "not cut").
    assert [r["max_rate_cut"] for r in csv_module.DictReader(io.StringIO(report.csv_text(rows)))] == ["", ""]
    assert [r["baseline_max_rate_cut"] for r in csv_module.DictReader(io.StringIO(report.csv_text(rows)))] == ["", ""]
    # Nothing within noise: no mark, no note.
    rows = report.collect([tmp_path / "clear"])
    assert report.NOISE_NOTE not in report.text_table(rows) and "~" not in report.text_table(rows)
    # The efficiency alone within noise: its mark gets the note too.
    clear["figures"].update(efficiency_vs_ceiling=1.01, efficiency_vs_ceiling_within_noise=True)
    rows = report.collect([_write(tmp_path / "efficiency", clear)])
    assert "~101.0%" in report.text_table(rows) and report.NOISE_NOTE in report.text_table(rows)
    clear["figures"].update(efficiency_vs_ceiling=0.6, efficiency_vs_ceiling_within_noise=False)
    # A ratio with no interval (one pass of a side) is marked unknown, not shown as a plain
    # result (review); the old results above (the flags absent) read the same.
    for table in (report.text_table(collect_old := report.collect([tmp_path / "old2"])), report.markdown(collect_old)):
        assert "?5.00x" in table and "?60.0%" in table and report.UNKNOWN_NOTE in table
    from runner.printer import render

    clear["figures"].update(speedup_vs_baseline_within_noise=None)
    assert "speedup vs baseline 5.00x (noise unknown: one pass of a side)" in render(clear)


def test_jobs_whose_host_other_work_shared_are_named_beside_the_table(sweep_dir, tmp_path):
    """Four jobs beside another process each warned "the host was busy", read 17-22 requests/s
    against 850 alone, and the table showed them with a cv of 0.0% and nothing else."""
    from runner.report import collect, markdown, sweep_notes

    busy, changed, quiet = _result(sweep_dir, 0), _result(sweep_dir, 1), _result(sweep_dir, 0)
    busy["warnings"] = ["the host was busy as the job began: 1 other thread ready to run on its 2 cores, ..."]
    changed["warnings"] = ["the throughput passes (22 requests/s) and the latency pass (846 requests/s, ..."]
    quiet["warnings"] = []
    rows = collect([_write(tmp_path / "a", busy), _write(tmp_path / "b", changed), _write(tmp_path / "c", quiet)])
    notes = [n for n in sweep_notes(rows) if "shared the host" in n]
    # Jobs of several runs in one folder, their numbers repeating (0, 1, 0): named by folder.
    assert notes == ["sweep: other work shared the host of jobs #a (busy as it began), #b (its load changed during "
                     "the job): their rates can be many times too low whatever their cv; rerun them on a quiet host "
                     "before comparing them"], notes
    assert notes[0] in markdown(rows)
    assert not [n for n in sweep_notes(collect([tmp_path / "c"])) if "shared the host" in n]
    # One job: "its rate"; a job stopped before it measured has no rate to doubt (it was named).
    assert [n for n in sweep_notes(collect([tmp_path / "a"])) if "shared the host" in n] == [
        "sweep: other work shared the host of job #0 (busy as it began): its rate can be many times too low whatever "
        "its cv; rerun it on a quiet host before comparing it"]
    stopped = copy.deepcopy(busy)
    stopped["status"], stopped["figures"] = "interrupted", {}
    assert not [n for n in sweep_notes(collect([_write(tmp_path / "d", stopped)])) if "shared the host" in n]
    # Other work during the baseline's passes alone: the rate stands, the ratios over them do not.
    sides = copy.deepcopy(quiet)
    sides["warnings"] = ["other processes ran during the passes a ratio compares with: the baseline's (15.9 of 16 ..."]
    notes = sweep_notes(collect([_write(tmp_path / "e", sides)]))
    assert not [n for n in notes if "shared the host" in n]
    assert ("sweep: other processes ran during the baseline's or the ceiling's passes of job #0: its speedup and "
            "efficiency read higher than they are (the rates stand); rerun on a quiet host before comparing them") in notes


def test_jobs_whose_rate_rests_on_less_than_asked_are_named_beside_the_table(sweep_dir, tmp_path):
    """A quick job whose check overran read 20 requests/s from one pass of one request, beside
    254 for the same settings, with cv "-" and no note under the table."""
    from runner.report import collect, markdown, sweep_notes

    one, cut, plain, last = (_result(sweep_dir, i) for i in (0, 1, 0, 1))
    one["figures"]["throughput_requests_per_s_repeats"] = [19.6]
    one["config"]["measure"]["min_repeats"] = 2
    one["warnings"] = ["1 of 1 passes were cut to 1 request and at most 51 ms each (asked: ...)"]
    cut["warnings"] = ["3 of 3 passes were cut to 5-7 requests and at most 90 ms each (asked: ...)"]
    plain["warnings"] = []
    # The budget's end cutting the last of 16 passes is no thin figure.
    last["warnings"] = ["1 of 16 passes were cut to 5 requests and at most 90 ms each (asked: ...)"]
    rows = collect([_write(tmp_path / d, r) for d, r in (("a", one), ("b", cut), ("c", plain), ("d", last))])
    notes = [n for n in sweep_notes(rows) if "rests on less" in n]
    assert notes == ["sweep: the rate of jobs #a (1 pass of measure.min_repeats=2 and every pass cut short), #b (every "
                     "pass cut short) rests on less than measure asked (see their warnings): rougher than the others; "
                     "with one pass, a rate's noise is unknown (cv -); raise measure.budget_s for them"], notes
    assert notes[0] in markdown(rows)
    # Passes cut short alone: nothing said of one pass.
    assert [n for n in sweep_notes(collect([tmp_path / "b"])) if "rests on less" in n] == [
        "sweep: the rate of job #1 (every pass cut short) rests on less than measure asked (see its warnings): "
        "rougher than the others; raise measure.budget_s for it"]
    # Cut by measure.max_pass_ms, which no budget lifts: that key is the one to raise (review).
    cut["warnings"] = ["3 of 3 passes were cut to 5-7 requests and at most 300 ms each (asked: ...) to fit in "
                       "measure.max_pass_ms=300, the longest a pass may run"]
    assert [n for n in sweep_notes(collect([_write(tmp_path / "capped", cut)])) if "rests on less" in n] == [
        "sweep: the rate of job #1 (every pass cut short by measure.max_pass_ms) rests on less than measure asked "
        "(see its warnings): rougher than the others; raise measure.max_pass_ms for it"]
    # One pass where one was asked (measure.min_repeats=1), or a server job (it has no passes): nothing to say.
    one["config"]["measure"]["min_repeats"] = 1
    one["warnings"] = []
    server = _result(sweep_dir, 0)
    server["figures"]["load"] = {"scenario": "server", "rate": 20}
    server["figures"]["throughput_requests_per_s_repeats"] = None
    rows = collect([_write(tmp_path / "e", one), _write(tmp_path / "f", server)])
    assert not [n for n in sweep_notes(rows) if "rests on less" in n]


def test_a_job_whose_figures_start_after_a_step_is_named_beside_the_table(sweep_dir, tmp_path):
    from runner.report import collect, markdown, sweep_notes

    result = _result(sweep_dir, 0)
    f = result["figures"]
    f["throughput_requests_per_s_repeats"] = [1000.0, 966.0, 646.0, 635.0, 615.0]
    f["throughput_steady_from_repeat"], f["throughput_cv_all_repeats"] = 3, 0.25
    rows = collect([_write(tmp_path / "stepped", result), _write(tmp_path / "plain", _result(sweep_dir, 1))])
    note = "job #0's throughput is from passes 3-5 of 5: the host's speed stepped before them (cv over all passes 25.0%)"
    assert [n for n in sweep_notes(rows) if "stepped" in n] == [f"sweep: {note}"]
    assert note in markdown(rows)


def test_jobs_that_ran_on_a_slower_host_are_named_beside_the_table(sweep_dir, tmp_path):
    """On the H200 VM the host canary sat near 111 us or near 170-200 us, a job at a time, and
    the mlp's streams=8 graphs read 74k requests/s in the slow state against 117k in the fast
    one, each with a cv under 1%: nothing in the row showed it. Now a note names such jobs."""
    from runner.report import collect, host_notes, markdown, sweep_notes

    def job(num: int, canary_us: list[float], steady_from: int = 1) -> dict:
        result = _result(sweep_dir, num % 2)
        result["job"]["num"] = num
        f = result["figures"]
        f["host_canary_us_repeats"] = canary_us
        f["throughput_requests_per_s_repeats"] = [100.0] * len(canary_us)
        f["throughput_steady_from_repeat"] = steady_from
        return result

    rows = collect([_write(tmp_path / "0", job(0, [111.0, 112.0, 110.0])),
                    _write(tmp_path / "1", job(1, [196.0, 195.0, 194.0])),
                    # fast for its first passes, slow for the ones its figures use
                    _write(tmp_path / "2", job(2, [110.0, 111.0, 205.0, 206.0], steady_from=3)),
                    _write(tmp_path / "3", job(3, [120.0, 121.0, 119.0]))])  # within the fast state's spread
    assert [r.host_us for r in rows] == [111.0, 195.0, 205.5, 120.0]
    [note] = host_notes(rows)
    assert note.startswith("sweep: jobs #1, #2 ran while the host's Python was 1.8-1.9x slower than in its fastest "
                           "job (the canary timed before every pass, in us: #1 195, #2 206; fastest 111)")
    assert note in sweep_notes(rows) and note in markdown(rows)
    # A sweep spread over two devices is judged per device (each ran on its own cores).
    for row, gpu in zip(rows, ("0", "1", "0", "1"), strict=True):
        row.gpu = gpu
    assert [n.split(" (")[0] for n in host_notes(rows)] == [
        "sweep: job #2 ran while the host's Python was 1.9x slower than in its fastest of gpu 0's jobs",
        "sweep: job #1 ran while the host's Python was 1.6x slower than in its fastest of gpu 1's jobs"]
    for row in rows:
        row.gpu = ""
    # Jobs gathered from two machines: each judged against its own host's fastest (a job of
    # another host had been named "slower" by a canary of another machine).
    here = rows[0].machine
    assert here and all(r.machine == here for r in rows)
    rows[1].machine = "other Intel Xeon"
    assert [n.split(" (")[0] for n in host_notes(rows)] == [
        f"sweep: job #2 ran while the host's Python was 1.9x slower than in its fastest job on {here}"]
    rows[1].machine = here
    # Every job in one state, or a job without a canary (older results): nothing to say.
    assert host_notes([rows[0], rows[3]]) == []
    rows[1].host_us = rows[2].host_us = None
    assert host_notes(rows) == []


def test_configs_that_all_moved_together_get_a_note(sweep_dir, tmp_path, capsys):
    """Two identical CPU sweeps a minute apart: every config 0.75-0.81x. The verdicts stand,
    and a note says that a change of the machine's speed moves every config alike."""
    olds, news = [], []
    for num, factor in ((0, 0.75), (1, 0.81), (2, 0.78)):
        old = _result(sweep_dir, num)
        if old["status"] != "ok":
            old.update(status="ok", figures={})
        old["figures"].update(throughput_requests_per_s=1000.0 * (num + 1), throughput_cv=0.01,
                              throughput_cv_all_repeats=0.01)
        new = copy.deepcopy(old)
        new["figures"]["throughput_requests_per_s"] *= factor
        olds.append(_write(tmp_path / "old" / str(num), old))
        news.append(_write(tmp_path / "new" / str(num), new))
    assert compare.main([str(tmp_path / "old"), str(tmp_path / "new")]) == 1
    out = capsys.readouterr().out
    assert out.count("slower") >= 3
    assert "note: all 3 compared configs moved together (0.75-0.81x)" in out
    # One config slower, the others the same: no note.
    matches = [compare.Match("a", {}, {}, ratio=r) for r in (0.75, 1.0, 1.01)]
    assert compare.common_shift(matches, 0.05) is None
    assert compare.common_shift([compare.Match("a", {}, {}, ratio=r) for r in (0.99, 1.0, 1.02)], 0.05) is None


def test_a_table_of_several_models_has_a_model_column(sweep_dir):
    """Custom models named by a long _target_ looked alike once the overrides were cut to fit."""
    rows = report.collect([sweep_dir])
    for row in rows:
        row.model = "MLP"
    assert "model" not in report.text_table(rows).splitlines()[0].split()  # one model: no column
    rows[0].model = "?"  # a job that died before naming its model is not another model
    assert "model" not in report.text_table(rows).splitlines()[0].split()
    rows[1].model = "DictOut"
    header = report.text_table(rows).splitlines()[0].split()
    assert header[header.index("overrides") + 1] == "model"
    assert "| DictOut |" in report.markdown(rows)


def test_a_sweep_spread_over_gpus_says_which_gpu_ran_each_job(sweep_dir, tmp_path):
    """hydra/launcher=gpus: each result records its device id and its GPU; the table gets a
    gpu column and a note naming each GPU, only when the jobs ran on more than one."""
    for num, (device, uuid) in enumerate((("0", "d347bcb8-92bf"), ("1", "103ef777-41b8"), ("0", "d347bcb8-92bf"))):
        result = _result(sweep_dir, min(num, 1))
        result["job"]["num"], result["job"]["launcher_device"] = num, device
        result["env"]["gpu"] = {"name": "NVIDIA H200", "uuid": uuid}
        _write(tmp_path / "gpus" / str(num), result)
    rows = report.collect([tmp_path / "gpus"])
    header = report.text_table(rows).splitlines()[0].split()
    assert header[header.index("overrides") + 1] == "gpu"
    assert [r.gpu for r in rows] == ["0", "1", "0"]
    assert report.gpu_notes(rows) == [
        "sweep: its jobs ran on 2 GPUs: gpu 0 = NVIDIA H200 (d347bcb8...) (2 jobs); gpu 1 = NVIDIA H200 (103ef777...) "
        "(1 job). Rows of different GPUs also differ by their GPU and their share of the host's cores: compare them "
        "within their noise"]
    assert report.gpu_notes(rows)[0] in report.markdown(rows)
    # No launcher device (Slurm): the GPU by its UUID, cut.
    for num, uuid in enumerate(("aaaaaaaa-1", "bbbbbbbb-2", "aaaaaaaa-1")):
        result = _result(tmp_path / "gpus", num)
        result["job"]["launcher_device"], result["env"]["gpu"]["uuid"] = None, uuid
        _write(tmp_path / "slurm" / str(num), result)
    rows = report.collect([tmp_path / "slurm"])
    assert [r.gpu for r in rows] == ["aaaaaaaa", "bbbbbbbb", "aaaaaaaa"]
    assert report.gpu_notes(rows)[0].startswith("sweep: its jobs ran on 2 GPUs: gpu aaaaaaaa = NVIDIA H200 (2 jobs); ")
    # One GPU for every job: no column, no note.
    for row in rows:
        row.gpu, row.gpu_uuid = "0", "d347bcb8-92bf"
    assert "gpu" not in report.text_table(rows).splitlines()[0].split() and report.gpu_notes(rows) == []


def test_a_job_that_died_before_naming_its_gpu_counts_with_its_device(sweep_dir, tmp_path):
    """A job whose process died has its launcher device but no GPU record: it is not a GPU of
    its own (review: a one-GPU sweep with one crash read "ran on 2 GPUs")."""
    for num in range(3):
        result = _result(sweep_dir, min(num, 1))
        result["job"]["num"], result["job"]["launcher_device"] = num, "0"
        result["env"]["gpu"] = {"name": "NVIDIA H200", "uuid": "d347bcb8-92bf"}
        if num == 2:
            result.update(status="failed", env=None, figures={})
        _write(tmp_path / "one" / str(num), result)
    rows = report.collect([tmp_path / "one"])
    assert list(report.gpus_used(rows)) == ["d347bcb8-92bf"] and report.gpu_notes(rows) == []
    assert "gpu" not in report.text_table(rows).splitlines()[0].split()


def test_compare_shows_the_hosts_speed_beside_each_verdict(sweep_dir, tmp_path, capsys):
    """Two one-GPU runs of one sweep: every 'slower' eager config had run on a host whose canary
    took 1.5-2x as long; compare said nothing of it. Now a host column and a note say it."""
    for num, (host, rate) in enumerate(((0.55, 0.56), (1.02, 0.99))):
        old = _result(sweep_dir, num)
        old["figures"].update(throughput_requests_per_s=1000.0, throughput_cv=0.01, throughput_cv_all_repeats=0.01,
                              host_canary_us_repeats=[110.0, 112.0, 111.0])
        new = copy.deepcopy(old)
        new["figures"]["throughput_requests_per_s"] *= rate
        new["figures"]["host_canary_us_repeats"] = [v / host for v in old["figures"]["host_canary_us_repeats"]]
        _write(tmp_path / "old" / str(num), old)
        _write(tmp_path / "new" / str(num), new)
    assert compare.main([str(tmp_path / "old"), str(tmp_path / "new")]) == 1
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[-2:] == ["host", "verdict"]
    slower = [line for line in lines if line.endswith("slower") and not line.startswith("1 regression")]
    assert len(slower) == 1 and slower[0].split()[-2] == "0.55"
    assert any(line.startswith("note: the host's own speed moved by more than 10% between the runs for 1 of the 2 configs timed with it")
               and line.endswith("; 1 of the changes called above ran on such a moved host") for line in lines)
    # The canary of the passes the rate comes from: after a step, those after it (review).
    old = _result(tmp_path / "old", 0)
    new = _result(tmp_path / "new", 0)
    old["figures"].update(host_canary_us_repeats=[112.0, 112.0, 112.0, 200.0, 200.0], throughput_steady_from_repeat=4)
    new["figures"].update(host_canary_us_repeats=[112.0, 112.0, 112.0], throughput_steady_from_repeat=1)
    m = compare.Match("a", old, new)
    assert compare.host_speed_ratio(m) == pytest.approx(200 / 112)
    # A change of status on a moved host is not a change of speed: the note does not count it.
    m.verdict = "new interrupted"
    assert "changes called above" not in compare.host_shift([m])
    m.verdict = "faster"
    assert compare.host_shift([m]).endswith("; 1 of the changes called above ran on such a moved host")
    # Results without a canary (older versions): no column, no note.
    for side in ("old", "new"):
        for path in (tmp_path / side).rglob("result.json"):
            result = json.loads(path.read_text())
            result["figures"].pop("host_canary_us_repeats")
            path.write_text(json.dumps(result))
    compare.main([str(tmp_path / "old"), str(tmp_path / "new")])
    out = capsys.readouterr().out
    assert "host" not in out.splitlines()[0].split() and "host's own speed" not in out


def test_the_same_job_is_the_same_settings_not_the_same_text():
    from runner.record import same_job

    assert same_job(["graph=False", "seed=1"], ["seed=1", "graph=false"])  # order, spelling
    assert same_job(["measure.stdrel=0.010"], ["measure.stdrel=0.01"])
    assert same_job(["seed=1", "resume=true"], ["seed=1"])  # resume says how it ran, not what
    assert same_job(["seed=1", "seed=2"], ["seed=2"])  # the last one wins, as in Hydra
    assert not same_job(["seed=1", "seed=2"], ["seed=2", "seed=1"])
    assert not same_job(["seed=1"], ["seed=2"])
    assert not same_job(["model.name='1'"], ["model.name=1"])  # a string is not a number
    assert not same_job(["~model.inputs.x"], [])
    assert not same_job(["model.module.bias=true"], ["model.module.bias=1"])  # Python's True == 1
    assert same_job(["measure.budget_s=2"], ["measure.budget_s=2.0"])  # a number is its value
    assert not same_job([f"seed={10**400}"], [f"seed={10**400 + 1}"])  # past float's range: still its value
    assert not same_job(["model.module.scale='1'"], ["model.module.scale=1"])


def test_a_noisy_run_in_a_pool_does_not_set_the_noise_and_single_runs_say_what_they_lack(sweep_dir, capsys):
    """A new user's walk: five old runs, one of them with a 45% cv of its own, hid a 38% drop
    ("same") while the other configs read "slower"; and two identical CPU sweeps seconds apart
    read 0.73-0.77x, "slower", with advice the user had already followed."""
    run = _runs_of(_result(sweep_dir, 0))
    olds = [run(100.0), run(101.0), run(99.0), run(100.0, cv=0.45), run(100.5)]
    [m] = compare.compare(olds, [run(62.0)], 0.05, 3)
    assert m.verdict == "slower" and m.noise < 0.1
    [m] = compare.compare([run(100.0)], [run(75.0)], 0.05, 3)
    assert m.verdict == "slower"
    assert compare.single_runs_note([m]).startswith("note: 1 verdict(s) above rest on one old run")
    assert compare.single_runs_note(compare.compare(olds, [run(62.0)], 0.05, 3)) is None  # pooled: known
    # One old run against pooled new runs: old's spread is still unknown, and the notes say so.
    [m] = compare.compare([run(100.0)], [run(90.0), run(90.5), run(89.5)], 0.05, 3)
    assert m.verdict == "slower" and m.runs == (1, 3) and compare.single_runs_note([m]) is not None
    assert "new's spread between runs never widens the noise" in compare.pooled_note([m])
    # Two old runs, one of them noisy in itself: the quieter one's cv stands for both.
    [m] = compare.compare([run(100.0), run(100.5, cv=0.45)], [run(62.0)], 0.05, 3)
    assert m.verdict == "slower"


def test_compare_names_devices_and_failures_by_what_ran_and_why(sweep_dir):
    """device=auto is matched as the device it chose (a CPU run of auto is a CPU run), and a
    config whose new run failed early keeps its label and says why."""
    run = _runs_of(_result(sweep_dir, 0))
    auto, cpu = run(100.0), run(100.0)
    auto["config"]["device"], cpu["config"]["device"] = "auto", "cpu"
    assert compare.identity(auto) == compare.identity(cpu)
    cuda = run(100.0)
    cuda["config"]["device"] = "cuda"
    assert compare.identity(cuda) != compare.identity(cpu)
    failed = run(1.0, "failed")
    failed["mode"], failed["effective"], failed["reason"] = None, None, "RuntimeError: planted failure after 5 forwards"
    [m] = compare.compare([run(100.0)], [failed], 0.05, 3)
    assert m.label == compare.label(run(100.0)) and "None" not in m.label
    assert m.verdict == "new failed: RuntimeError: planted failure after 5 forwards" and compare.is_regression(m)
    # device=auto (the default) failing before it chose a device, with nothing recorded of where:
    # its failure is the row of the config it belongs to, pooled or not, and fails the gate.
    early = copy.deepcopy(failed)
    early["config"]["device"], early["env"] = "auto", None
    ran = run(100.0)
    ran["config"]["device"] = "auto"  # chose the CPU
    [m] = compare.compare([run(100.0)] * 3, [ran, ran, early], 0.05, 3)
    assert m.verdict.startswith("new failed") and m.runs == (3, 3) and compare.is_regression(m)
    [m] = compare.compare([early], [ran], 0.05, 3)
    assert m.verdict.startswith("old failed") and not compare.is_regression(m)


def test_compare_and_report_say_what_they_left_out_and_refuse_bad_options(sweep_dir, tmp_path, capsys):
    run = _runs_of(_result(sweep_dir, 0))
    old = _write(tmp_path / "old" / "0", run(100.0))
    (tmp_path / "old" / "1").mkdir()
    (tmp_path / "old" / "1" / RESULT_FILE).write_text('{"schema": "runner.result/1", "status": ')  # cut short
    (tmp_path / "old" / "copy").mkdir()
    (tmp_path / "old" / "copy" / RESULT_FILE).write_text((old / RESULT_FILE).read_text())
    new = _write(tmp_path / "new", run(99.0))
    assert compare.main([str(tmp_path / "old"), str(new)]) == 0
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'old' / '1' / RESULT_FILE} left out: not valid JSON" in err
    assert "left out: a copy of" in err and len(compare.load_results(tmp_path / "old")) == 1  # not a second run
    # The same runs on both sides, and sides that share no config, are said.
    assert compare.main([str(tmp_path / "old" / "0"), str(tmp_path / "old" / "0")]) == 0
    assert "1 of the runs is on both sides" in capsys.readouterr().err
    other = run(100.0)
    other["config"]["streams"] = 7
    assert compare.main([str(new), str(_write(tmp_path / "other", other))]) == 1
    assert "note: old and new share no config" in capsys.readouterr().out
    # --threshold 5 meant 5%: refused, as are a negative threshold and a sigma that is not a number.
    for option in (["--threshold", "5"], ["--threshold", "-1"], ["--sigma", "nan"]):
        assert compare.main([*option, str(new), str(new)]) == 2
        assert capsys.readouterr().err.startswith(f"error: {option[0]} ")
    # report: a cut-short result.json says so; --out a file and a file for a folder are refused.
    rows = report.collect([tmp_path / "old"])
    assert [r.status for r in rows] == ["ok", "missing", "ok"] and rows[1].reason.startswith(
        "its result.json is not valid JSON")
    assert report.main([str(tmp_path / "old"), "--out", str(old / RESULT_FILE), "--no-plots"]) == 2
    assert "a file; give a folder" in capsys.readouterr().err
    assert report.main([str(old / RESULT_FILE)]) == 2
    assert "give the folder that holds a result.json" in capsys.readouterr().err
    # A record of an older schema is named as such; one with no status, or a status this runner
    # does not know, is no ok row (it had exited 0; review).
    older = run(100.0)
    older["schema"] = "runner.result/0"
    _write(tmp_path / "odd" / "0", older)
    odd = run(100.0)
    odd["status"] = "unheard-of"
    _write(tmp_path / "odd" / "1", odd)
    rows = report.collect([tmp_path / "odd"])
    assert rows[0].status == "missing" and rows[0].reason.startswith(
        "its result.json is written by another runner version (schema runner.result/0; this one reads runner.result/1)")
    assert [r.job for r in report.failures(rows)] == [r.job for r in rows]
    assert report.main([str(tmp_path / "odd"), "--no-plots"]) == 1


def test_a_table_of_several_sweeps_names_each_job_by_its_folder(sweep_dir, tmp_path, capsys):
    import shutil

    for name in ("a", "b"):
        for num in ("0", "1"):
            shutil.copytree(sweep_dir / num, tmp_path / name / num)
    rows = report.collect([tmp_path])
    assert [r.job for r in rows] == ["a/0", "a/1", "b/0", "b/1"]
    # Their parent is no sweep's folder: printed, not written into (report /tmp wrote a table of
    # 1,500 results and its plots there; walk).
    assert report.main([str(tmp_path), "--no-plots"]) == 0
    assert "not written: " in capsys.readouterr().out and not (tmp_path / "sweep.md").exists()
    # Runs of one day under outputs/runs/<date>/<time>: one parent, still no sweep's folder.
    for num in ("0", "1"):
        shutil.copytree(sweep_dir / num, tmp_path / "runs" / "2026-01-01" / f"10-00-0{num}")
    assert report.main([str(tmp_path / "runs"), "--no-plots"]) == 0
    assert "not written: " in capsys.readouterr().out and not (tmp_path / "runs" / "sweep.md").exists()
    assert [r.job for r in report.collect([tmp_path / "a"])] == ["0", "1"]  # one sweep: its numbers
    # Jobs of two sweeps copied into one folder: their numbers repeat (both had been "0").
    for name, num in (("a0", "0"), ("b0", "0"), ("a1", "1")):
        shutil.copytree(sweep_dir / num, tmp_path / "together" / name)
    assert [r.job for r in report.collect([tmp_path / "together"])] == ["a0", "a1", "b0"]
    # Two sweeps without --out: printed, and neither sweep's own table replaced by the combined one.
    (tmp_path / "a" / "sweep.md").write_text("a's own table\n")
    assert report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots"]) == 0
    assert (tmp_path / "a" / "sweep.md").read_text() == "a's own table\n" and not (tmp_path / "b" / "sweep.md").exists()
    said = capsys.readouterr().out
    assert "a/1" in said and "not written: 2 folders given" in said and "give --out DIR" in said
    # Nor with --out naming one of them (walk: a's table became the combined one without a word).
    (tmp_path / "a" / "multirun.yaml").write_text("hydra: {}\n")
    assert report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots", "--out", str(tmp_path / "a")]) == 2
    assert (tmp_path / "a" / "sweep.md").read_text() == "a's own table\n"
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'a'} is a sweep's own folder, and {tmp_path / 'b'} is "
                                       "not inside it: its own files would be replaced by another table; give --out a "
                                       "folder of its own\n")
    assert report.main([str(tmp_path / "a"), "--no-plots", "--out", str(tmp_path / "a")]) == 0  # its own: rebuilt
    capsys.readouterr()
    assert report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots", "--out", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both" / "sweep.md").read_text().count("| ok ") == 4
    with open(tmp_path / "out.csv", "w") as f:
        f.write(report.csv_text(rows))
    with open(tmp_path / "out.csv") as f:
        assert json.loads(next(csv.DictReader(f))["asked"])[-1] == "streams=1"  # the overrides, as a JSON list
    # One folder spelt relative and absolute: one folder, no crash.
    import os

    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert [r.job for r in report.collect([Path("a"), tmp_path / "a"])] == ["0", "1"]
        assert [r.job for r in report.collect([Path("a"), tmp_path / "b"])] == ["a/0", "a/1", "b/0", "b/1"]
    finally:
        os.chdir(here)


def test_the_sweep_plot_ranks_different_batch_sizes_by_samples():
    from runner.plots import _throughput
    from runner.report import Row

    def row(job, batch, rps):
        return Row(job=job, overrides=f"model.batch={batch}", model="Linear", mode="eager x1 pageable", status="ok",
                   reason="", requests_per_s=rps, samples_per_s=rps * batch, latency_p50_us=1.0, latency_p99_us=1.0,
                   speedup_vs_baseline=None, efficiency_vs_ceiling=None, throughput_cv=0.01, streams=1,
                   device="cpu", path="")

    assert _throughput([row("0", 16, 14000.0), row("1", 64, 5400.0)]) == ("samples_per_s", "throughput (samples/s)")
    assert _throughput([row("0", 16, 14000.0), row("1", 16, 5400.0)]) == ("requests_per_s", "throughput (requests/s)")


def test_the_console_header_of_a_job_that_failed_early_shows_what_it_knew():
    from runner.printer import render

    text = render({"model": "MLP", "mode": None, "status": "failed", "reason": "RuntimeError: boom", "effective": None})
    assert text.splitlines()[0] == "runner: MLP" and "None" not in text and "| ?" not in text
    assert render({"model": "MLP", "mode": "eager x1 pageable", "status": "ok",
                   "effective": {"dtype": "fp32", "tf32": True, "device": "cuda:0"},
                   "env": {"gpu": {"name": "NVIDIA H200"}}}).splitlines()[0] == \
        "runner: MLP | eager x1 pageable | fp32+tf32 | NVIDIA H200 (cuda:0)"


def test_rate_searches_are_compared_on_their_brackets_and_a_floor_decides_nothing(sweep_dir, tmp_path, capsys):
    """A search's highest valid rate lies between the figure and the lowest rate found invalid:
    a drop within that bracket is no regression, and a search the budget ended before any rate
    failed (a floor) cannot be called slower. The walk's case: old in [76,673, 153,345), new
    68,220 or more; compare called it slower (0.890, noise 0.0%) and failed the gate."""
    base = _result(sweep_dir, 0)

    def search(best: float, failed: Optional[float], stopped_by: str = "resolution") -> dict:
        r = copy.deepcopy(base)
        r["figures"] = {"server_max_rate": best, "load": {
            "scenario": "server", "rate": "max", "p99_ms": 2.0,
            "runner": {"points": [{}], "max_rate": best, "lowest_invalid_rate": failed, "stopped_by": stopped_by}}}
        return r

    old = search(1000.0, 1050.0)
    [m] = compare.compare([old], [search(930.0, 976.0)], 0.05, 3)  # 0.93, but it may be 0.976
    assert m.verdict == "same" and m.ratio == pytest.approx(0.93) and m.noise is None
    # Past the threshold whatever the brackets, one search a side is not enough to call it: a
    # rerun's figure strays past its bracket (whether a rate near the bound holds is chance).
    for other in (search(900.0, 945.0), search(1120.0, 1176.0)):  # at most 0.945; at least 1.067
        [m] = compare.compare([old], [other], 0.05, 3)
        assert m.verdict.startswith("undecided: old's runs give no spread between runs (one run, or runs that agreed exactly), so the noise is unknown")
        assert m.noise is None and compare.is_regression(m)
    walk_old, floor = search(76_673.0, 153_345.0, "budget"), search(68_220.0, None, "budget")
    [m] = compare.compare([walk_old], [floor], 0.05, 3)
    assert m.verdict.startswith("undecided: new's search ended before any rate failed (its rate is 68,220/s or more)")
    assert compare.is_regression(m)  # a gate cannot pass on what it cannot tell
    assert compare.main([str(_write(tmp_path / "o", walk_old)), str(_write(tmp_path / "n", floor))]) == 1
    out = capsys.readouterr().out
    # Said as undecided, not as a regression (a self-compare of searches had read "4 regression(s)").
    assert "regression(s)" not in out and ("1 undecided (the gate stops on what it cannot tell): "
                                           "MLP | eager x1 pageable direct/1 | fp32 | batch 2: undecided: new's search ended before any rate failed (its "
                                           "rate is 68,220/s or more)\n") in out, out
    # Beside a config that is the same, still not a pass.
    same_old, same_new = copy.deepcopy(walk_old), copy.deepcopy(walk_old)
    same_old["config"]["streams"] = same_new["config"]["streams"] = 8
    assert compare.main([str(_write_all(tmp_path / "o2", [walk_old, same_old])),
                         str(_write_all(tmp_path / "n2", [floor, same_new]))]) == 1
    # Pooled runs: the bracket's top is the median of the runs' (the last run's alone made a
    # pooled row undecided whatever the others had found).
    run = _runs_of(old)

    def runs(*brackets: tuple[float, Optional[float], str]) -> list[dict]:
        """Runs of one config (each its own run), their searches at (best, failed, stopped_by)."""
        made = []
        for best, failed, stopped_by in brackets:
            r = run(best)
            r["figures"] = search(best, failed, stopped_by)["figures"]
            made.append(r)
        return made

    pooled = runs((1000.0, 1050.0, "resolution"), (1010.0, 1060.0, "resolution"), (1005.0, None, "budget"))
    [m] = compare.compare(pooled, [search(1000.0, 1050.0)], 0.05, 3)
    # One of old's runs open-ended: the pooled top (the median of 1050, 1060 and none) lies 5.5%
    # above the median, past the 5% resolution, and a 5.7% drop fits inside: not "same".
    assert m.runs == (3, 1) and m.verdict.startswith("undecided: the searches' brackets are wider than their resolution")
    finished = runs(*((best, best * 1.05, "resolution") for best in (1000.0, 1010.0, 1005.0)))
    [m] = compare.compare(finished, [search(1000.0, 1050.0)], 0.05, 3)
    assert m.runs == (3, 1) and m.verdict == "same"  # every run finished at its resolution
    # Old's spread is the noise now: past it and past the brackets, a change is called.
    [m] = compare.compare(pooled, [search(900.0, 945.0)], 0.05, 3)
    assert m.verdict == "slower" and m.noise == pytest.approx(math.hypot(1.25 / math.sqrt(3), 1.0) * 0.005, rel=0.01)
    # A floor still decides when the other side's bracket lies clear of it.
    assert compare.compare(pooled, [search(2000.0, None, "budget")], 0.05, 3)[0].verdict == "faster"
    floors = runs(*((best, None, "budget") for best in (2000.0, 2010.0, 1990.0)))
    assert compare.compare(floors, [search(1000.0, 1050.0)], 0.05, 3)[0].verdict == "slower"
    # A single open-ended side says so first, then that one run a side cannot tell.
    [m] = compare.compare([search(1000.0, 1050.0)], [search(2000.0, None, "budget")], 0.05, 3)
    assert m.verdict.startswith("undecided: new's search ended before any rate failed") and "one run" in m.verdict
    # A wide bracket allows anything: a 2x drop whose new search was cut at 100% is no "same"
    # (review), one search a side or pooled.
    [m] = compare.compare([search(1000.0, 1050.0)], [search(500.0, 1000.0, "budget")], 0.05, 3)
    assert m.verdict.startswith("undecided: old's runs give no spread between runs") and compare.is_regression(m)
    [m] = compare.compare(pooled, [search(500.0, 1000.0, "budget")], 0.05, 3)
    assert m.verdict.startswith("undecided: the searches' brackets are wider than their resolution (each true rate lies "
                                "up to 5% (old) and 100% (new) above its figure)"), m.verdict
    # The mirror (review): old's search cut at [100, 200), new's finished at 100: the true ratio
    # may be 0.5, one search a side or pooled. Brackets of the resolution stay "same".
    [m] = compare.compare([search(100.0, 200.0, "budget")], [search(100.0, 105.0)], 0.05, 3)
    assert m.verdict.startswith("undecided: old's runs give no spread between runs") and compare.is_regression(m)
    [m] = compare.compare(finished, [search(1000.0, 1050.0)], 0.02, 3)  # a threshold below the resolution
    assert m.verdict == "same", m.verdict
    # A cut bracket under 2x that still holds a drop past the threshold (third review: these
    # had read "same"): old pooled at 1000/1050/950, new cut in [600, 900); one old run against
    # new cut in [560, 1050) or [700, 1050).
    spread5 = runs(*((best, best * 1.05, "resolution") for best in (1000.0, 1050.0, 950.0)))
    [m] = compare.compare(spread5, [search(600.0, 900.0, "budget")], 0.05, 3)
    assert m.verdict.startswith("undecided: the searches' brackets are wider than their resolution"), m.verdict
    for best in (560.0, 700.0):
        [m] = compare.compare([search(1000.0, 1050.0)], [search(best, 1050.0, "budget")], 0.05, 3)
        assert m.verdict.startswith("undecided") and compare.is_regression(m), m.verdict
    # A wide bracket above no drop: not a regression, said as what it is (it had read undecided,
    # blaming old's single run).
    [m] = compare.compare([search(1000.0, 1050.0)], [search(1000.0, 2000.0, "budget")], 0.05, 3)
    assert m.verdict.startswith("same or faster (no drop past the threshold") and not compare.is_regression(m)
    cut_old = runs(*((best, best * 2, "budget") for best in (100.0, 101.0, 99.0)))
    [m] = compare.compare(cut_old, [search(100.0, 105.0)], 0.05, 3)
    assert m.verdict.startswith("undecided: the searches' brackets are wider than their resolution"), m.verdict
    # Pooled searches far apart: noise that hides a 2x is said, as for throughput (review: a 40%
    # drop had read "same").
    spread = runs(*((best, best * 1.05, "resolution") for best in (1000.0, 1200.0, 800.0)))
    [m] = compare.compare(spread, [search(600.0, 630.0)], 0.05, 3)
    assert m.verdict.startswith("undecided: 25% of noise hides any change under 2.1x"), m.verdict
    # Each new run judged alone says what it rests on: a search, not a throughput pass.
    [m] = compare.compare([search(1000.0, 1050.0)], [search(1000.0, 1050.0), search(1000.0, 1050.0),
                                                      search(900.0, 945.0)], 0.05, 3)
    assert m.verdict.startswith("undecided: maybe slower in 1 of 3 new runs") and \
        m.verdict.endswith("the median at 1.000): old's runs give no spread between runs (one run, or runs that agreed "
                           "exactly), so the noise is unknown (whether a rate near the bound holds is chance: a "
                           "rerun's figure can stray past its bracket)"), m.verdict
    # Its own reason: a new run whose search was cut wide, beside pooled old runs with a spread.
    [m] = compare.compare(finished, [search(1000.0, 1050.0), search(1000.0, 1050.0), search(500.0, 1000.0, "budget")],
                          0.05, 3)
    assert m.verdict.startswith("undecided: maybe slower in 1 of 3 new runs") and \
        "): the searches' brackets are wider than their resolution" in m.verdict, m.verdict


def test_a_new_config_that_did_not_end_ok_stops_the_gate_and_shows_no_rate(sweep_dir, tmp_path, capsys):
    ok, failed = _result(sweep_dir, 0), _result(sweep_dir, 2)
    invalid = copy.deepcopy(_result(sweep_dir, 1))
    invalid.update(status="invalid", reason="128 of 128 requests differ from eager")
    invalid["config"]["streams"] = 8  # a config old never ran
    old = _write_all(tmp_path / "old", [ok])
    new = _write_all(tmp_path / "new", [ok, failed, invalid])
    assert compare.main([str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "new failed (only in new): RuntimeError: planted failure" in out
    assert "new invalid (only in new): 128 of 128 requests differ from eager" in out
    row = next(line for line in out.splitlines() if "new invalid" in line)
    assert rate_text(invalid["figures"]["throughput_requests_per_s"]) not in row  # its rate is not a figure


def test_compare_labels_rows_by_the_overrides_that_tell_the_runs_apart(sweep_dir):
    run = _runs_of(_result(sweep_dir, 0))
    a, b = run(100.0), run(100.0)
    a["overrides"], b["overrides"] = ["measure=quick", "streams=1"], ["measure=quick", "streams=2", "resume=true"]
    b["config"]["streams"] = 2
    assert [m.label for m in compare.compare([a, b], [a, b], 0.05, 3)] == ["streams=1", "streams=2"]
    # Overrides that do not tell the configs apart: the long label, with only the settings set.
    b["overrides"] = a["overrides"]
    labels = [m.label for m in compare.compare([a, b], [a, b], 0.05, 3)]
    assert labels[0] != labels[1] and "streams=2" in labels[1] and "None" not in " ".join(labels)


def test_the_jobs_never_started_are_named_for_sweeps_under_a_folder_too(sweep_dir, tmp_path, capsys):
    """A folder of several sweeps checked only its own multirun.yaml (none): one sweep's
    unstarted jobs went unsaid, exit 0. A sweep stopped before its first job was "no job
    folders", exit 2."""
    plan = "hydra:\n  overrides:\n    task:\n    - streams=1,2,4\n    - measure=quick\n  sweeper:\n    params: null\n"
    stopped, done, empty = tmp_path / "all" / "a", tmp_path / "all" / "b", tmp_path / "empty"
    for folder in (stopped, done, empty):
        folder.mkdir(parents=True)
        (folder / "multirun.yaml").write_text(plan)
    (stopped / "0").symlink_to(sweep_dir / "0", target_is_directory=True)
    for n in ("0", "1", "2"):
        (done / n).symlink_to(sweep_dir / "0", target_is_directory=True)
    assert report.main([str(tmp_path / "all"), "--no-plots"]) == 1
    assert f"sweep: 2 of its 3 jobs never started (#1, #2; the sweep stopped early): the sweep's command again with " \
           f"resume=true hydra.sweep.dir={stopped} runs them" in capsys.readouterr().out
    assert report.main([str(empty), "--no-plots"]) == 1
    assert capsys.readouterr().out.startswith("sweep: 3 of its 3 jobs never started (#0, #1, #2;")


def test_a_folder_the_table_cannot_be_written_into_still_gets_the_table(sweep_dir, tmp_path, capsys):
    """A read-only sweep folder: write_report's PermissionError came out as a traceback, and
    the table was never printed."""
    (tmp_path / "afile").write_text("")
    assert report.main([str(sweep_dir), "--no-plots", "--out", str(tmp_path / "afile" / "table")]) == 2
    out, err = capsys.readouterr()
    assert "requests/s" in out.splitlines()[0] and "Traceback" not in out + err
    assert err.startswith(f"error: could not write the table files into {tmp_path / 'afile' / 'table'} (")
    assert err.rstrip().endswith("give another folder with --out DIR")


def test_a_rebuilt_table_names_the_jobs_a_stopped_sweep_never_started(sweep_dir, tmp_path, capsys):
    """A sweep interrupted in its second of three jobs left two folders: the rebuilt table
    listed two rows and said nothing of the third. The sweep's multirun.yaml plans them all."""
    stopped = tmp_path / "sweep"
    stopped.mkdir()
    (stopped / "0").symlink_to(sweep_dir / "0", target_is_directory=True)
    (stopped / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - streams=1,2,4\n    - measure=quick\n"
                                          "  sweeper:\n    params: null\n")
    assert report.main([str(stopped), "--no-plots"]) == 1  # the one job there is ok; two never ran
    out = capsys.readouterr().out
    assert f"sweep: 2 of its 3 jobs never started (#1, #2; the sweep stopped early): the sweep's command again with " \
           f"resume=true hydra.sweep.dir={stopped} runs them and any job that did not end ok, keeping the ok " \
           "results" in out
    # sweep.md says it too (it listed the one row as if the sweep had one job).
    assert "sweep: 2 of its 3 jobs never started (#1, #2;" in (stopped / "sweep.md").read_text()
    (stopped / "1").symlink_to(sweep_dir / "1", target_is_directory=True)
    (stopped / "2").symlink_to(sweep_dir / "1", target_is_directory=True)
    assert report.never_started(stopped) is None
    # A preset's swept params with a command-line value for one of its keys: Hydra runs the
    # command line's (2 jobs here, not 8); a custom subdir leaves the folders unnumbered.
    (stopped / "multirun.yaml").write_text(
        "hydra:\n  sweep:\n    subdir: ${hydra.job.num}\n  overrides:\n    task:\n    - experiment=sweep_modes\n"
        "    - streams=4\n  sweeper:\n    params:\n      streams: 1,2,4,8\n      graph: false,true\n")
    assert report.never_started(stopped) is None  # 2 planned, 3 there
    (stopped / "multirun.yaml").write_text(
        "hydra:\n  sweep:\n    subdir: ${hydra.job.override_dirname}\n  overrides:\n    task:\n"
        "    - streams=1,2,4,8,16\n  sweeper:\n    params: null\n")
    assert report.never_started(stopped) is None


def test_jobs_whose_p99_rests_on_fewer_requests_than_asked_are_named_beside_the_table(sweep_dir, tmp_path):
    """A quick sweep's p99 of 16 requests stood beside others of 200: the job warned, the table
    and its notes did not (walk)."""
    from runner.record import latency_short
    from runner.report import collect, markdown, sweep_notes

    # Under 100 requests is rough however many were asked; 188 of 200 is as good as asked.
    assert latency_short(95, 100) and latency_short(16, 200) and not latency_short(188, 200)
    short, enough = _result(sweep_dir, 0), _result(sweep_dir, 1)
    short["config"]["measure"]["latency_requests"] = 200
    short["figures"]["latency_e2e_us"] = {**short["figures"]["latency_e2e_us"], "n": 16}
    enough["config"]["measure"]["latency_requests"] = 200
    enough["figures"]["latency_e2e_us"] = {**enough["figures"]["latency_e2e_us"], "n": 188}  # as good as asked
    rows = collect([_write(tmp_path / d, r) for d, r in (("a", short), ("b", enough))])
    notes = [n for n in sweep_notes(rows) if "p99" in n]
    assert notes == ["sweep: the p99 of job #0 (16 of 200 requests) rests on fewer requests than "
                     "measure.latency_requests (see its warnings): a rough tail; raise measure.budget_s for more"], notes
    assert notes[0] in markdown(rows)


def test_jobs_whose_check_the_budget_cut_to_few_requests_are_named_beside_the_table(sweep_dir, tmp_path):
    """A CPU fp16 job's check compared 2 of 128 requests: the job warned, the sweep's table stood
    it beside the others as any ok job (walk)."""
    from runner.report import collect, markdown, sweep_notes

    short, enough = _result(sweep_dir, 0), _result(sweep_dir, 1)
    short["config"]["measure"]["check_requests"] = 128
    short["figures"]["check_requests"] = 2
    enough["config"]["measure"]["check_requests"] = 2048
    enough["figures"]["check_requests"] = 1370  # past quick's whole check: a note in its job, no more
    rows = collect([_write(tmp_path / d, r) for d, r in (("a", short), ("b", enough))])
    assert [r.check_thin for r in rows] == ["2 of 128", ""]
    notes = [n for n in sweep_notes(rows) if "check" in n]
    assert notes == ["sweep: the check of job #0 (2 of 128) compared fewer requests with eager than "
                     "measure.check_requests before the budget's share ran out: their correctness rests on those; "
                     "raise measure.budget_s for more"], notes
    assert notes[0] in markdown(rows)
