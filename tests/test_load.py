"""Open-loop load: Poisson arrivals, queueing, validity, the rate search, the sweep's best."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
import types

import pytest

from runner.errors import ConfigError
from runner.job import JobInfo, run_job
from runner.load import Point, Server, judge, open_loop, poisson_arrivals, search_rate
from runner.record import SCHEMA
from runner.report import collect, markdown, sweep_notes, text_table
from runner.spec import resolve


class Clock:
    """Virtual time for the load loop: each reading moves it on by a microsecond (the loop's
    own cost), a sleep or a busy server by its length. A test on it asserts what the loop does
    with its arrivals, the same on a busy host (on real time, other work on a 2-core machine
    had doubled a latency and made the search's first rate invalid)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1e-6
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


NOW = {"clock": time.perf_counter}  # what the test servers read: real time, or a test's Clock


@pytest.fixture
def virtual_clock(monkeypatch) -> Clock:
    from runner import load

    clock = Clock()
    monkeypatch.setattr(load, "perf_counter", clock)
    monkeypatch.setattr(load, "time", types.SimpleNamespace(sleep=clock.sleep, perf_counter=clock))
    monkeypatch.setitem(NOW, "clock", clock)
    return clock


class Busy(Server):
    """A synchronous server that takes `service_s` per request (a model slowed down on purpose)."""

    sync = True

    def __init__(self, service_s: float) -> None:
        self.service_s = service_s

    def start(self, j: int) -> None:
        if isinstance(NOW["clock"], Clock):
            NOW["clock"].sleep(self.service_s)
            return
        end = time.perf_counter() + self.service_s
        while time.perf_counter() < end:  # spin: sleep() would add its own slack
            pass


class Later(Server):
    """An asynchronous server: done `service_s` after its start."""

    def __init__(self, service_s: float) -> None:
        self.service_s, self.until = service_s, 0.0

    def start(self, j: int) -> None:
        self.until = NOW["clock"]() + self.service_s

    def done(self) -> bool:
        return NOW["clock"]() >= self.until


def test_poisson_arrivals_have_the_mean_rate_and_come_back_from_the_seed():
    arrivals = poisson_arrivals(2000.0, 5.0, seed=7)
    assert len(arrivals) / 5.0 == pytest.approx(2000, rel=0.03)
    gaps = [b - a for a, b in zip([0.0, *arrivals], arrivals, strict=False)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 2000, rel=0.03)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.05)  # exponential gaps
    assert poisson_arrivals(2000.0, 5.0, seed=7) == arrivals
    assert poisson_arrivals(2000.0, 5.0, seed=8) != arrivals
    assert len(poisson_arrivals(10.0, 0.1, seed=1, min_requests=200)) >= 200
    # One seed at two rates: the same gaps, scaled (a search's points differ in their rate alone).
    slow, fast = poisson_arrivals(1000.0, 0.0, seed=7, min_requests=300), poisson_arrivals(3000.0, 0.0, seed=7, min_requests=300)
    assert fast == pytest.approx([t / 3 for t in slow], rel=1e-12)


def test_a_searchs_points_share_one_draw_of_arrivals(make_cfg, tmp_path, monkeypatch):
    """Each point had drawn its own arrivals: their offered rates strayed 6-7% from the rate asked,
    more than the search's 5% steps, and a rate offered 253/s held where a higher one, offered
    236/s, failed. One draw for all, scaled: every point offers its rate times the same factor."""
    from runner import measure

    seeds = []

    def drawn(rate, duration_s, seed, min_requests=1):
        seeds.append(seed)
        return poisson_arrivals(rate, duration_s, seed, min_requests)

    monkeypatch.setattr(measure, "poisson_arrivals", drawn)
    overrides = [*QUICK, "load.scenario=server", "load.rate=max", "load.p99_ms=1000", "load.duration_s=0.05",
                 "measure.budget_s=6"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    assert result["status"] == "ok", result["reason"]
    points = result["figures"]["load"]["runner"]["points"]
    assert len(points) >= 2 and len(seeds) >= len(points) and len(set(seeds)) == 1, seeds  # (lengths drawn too)
    # Points that served every arrival offer their rate exactly: the shared draw is stretched
    # to it (review: unstretched, every point offered its rate times 0.96 at seed 0, a max rate
    # 4% optimistic in every run). A busy host's overloaded point drops its queue's tail, and
    # offers what it admitted.
    for p in points:
        if not p["dropped"]:
            assert p["offered"] == pytest.approx(p["rate"], rel=1e-9)


def test_arrivals_come_at_the_rate_asked_in_their_draws_shape():
    from runner.load import at_rate, offered_rate

    drawn = poisson_arrivals(100.0, 0.0, seed=0, min_requests=200)
    assert offered_rate(drawn) != pytest.approx(100.0, rel=1e-3)  # a draw strays from its rate
    paced = at_rate(drawn, 100.0)
    assert offered_rate(paced) == pytest.approx(100.0, rel=1e-12)
    assert [b / a for a, b in zip(drawn, paced, strict=True)] == pytest.approx([paced[0] / drawn[0]] * 200)
    assert at_rate([], 5.0) == [] and at_rate([0.3], 5.0) == [0.3]


def test_the_offered_rate_is_read_without_bias_from_the_arrivals():
    """n arrivals over the time to the nth read high by 1 / (n - 1) on average (review): 5.3%
    at 20 arrivals, where (n - 1) over it is unbiased."""
    from runner.load import offered_rate

    rates = [offered_rate(poisson_arrivals(1000.0, 0.0, seed, 20)) for seed in range(3000)]
    mean = sum(rates) / len(rates)  # each reads within about 23%: the mean of 3,000 within 0.5% (1 sd)
    assert mean == pytest.approx(1000.0, rel=0.02)
    assert offered_rate([]) == offered_rate([0.5]) == 0.0 and offered_rate([0.5, 1.0]) == 1.0


def test_far_below_capacity_the_offered_rate_is_achieved_at_single_request_latency(virtual_clock):
    service = 0.002  # capacity of two servers: 1,000 requests/s
    served = open_loop(poisson_arrivals(100.0, 2.0, seed=1, min_requests=200), [Later(service), Later(service)])
    point = judge(100.0, served, p99_ms=None)
    assert point.valid, point.why
    assert point.achieved == pytest.approx(point.offered, rel=0.01)
    assert point.latency_us["p50"] == pytest.approx(service * 1e6, rel=0.25)  # barely any queueing
    assert point.queue_us["p50"] < 200


def test_above_capacity_the_run_is_invalid_and_the_queue_grows():
    served = open_loop(poisson_arrivals(1000.0, 0.5, seed=2), [Busy(0.002)])  # capacity 500/s
    point = judge(1000.0, served, p99_ms=None)
    assert not point.valid and "achieved" in point.why
    queue = served.queue_us()
    half = len(queue) // 2
    assert statistics.fmean(queue[half:]) > 2 * statistics.fmean(queue[:half])
    assert all(d >= i >= a for a, i, d in zip(served.arrival_s, served.issue_s, served.done_s, strict=True))


def test_a_completion_is_stamped_when_it_is_seen_not_before(virtual_clock):
    """The loop read the clock once, then polled its busy servers: a server found done later
    in that sweep got the earlier reading, before its work had ended (latency understated)."""
    service = 0.002
    served = open_loop(poisson_arrivals(3500.0, 0.5, seed=3, min_requests=200), [Later(service) for _ in range(8)])
    assert min(d - i for i, d in zip(served.issue_s, served.done_s, strict=True)) >= service


def test_the_achieved_rate_is_the_runs_not_its_last_requests():
    """n / the last issue time let one request decide: a server holding its queue was invalid
    whenever its last request happened to wait 1% of the run (a fifth of the points at 75% of
    capacity, on the virtual clock). The wait's growth over the run decides."""
    from runner.load import Served

    arrivals = [0.005 * (k + 1) for k in range(200)]  # 200/s over 1 s
    waits = [0.002 * (k % 3) for k in range(199)] + [0.02]  # a steady queue; the last one waited 2% of the run
    issued = [a + w for a, w in zip(arrivals, waits, strict=True)]
    served = Served(arrivals, issued, [i + 0.001 for i in issued], [w > 0 for w in waits], requests=200)
    point = judge(200.0, served, p99_ms=None)
    assert point.valid, point.why
    assert point.achieved == pytest.approx(point.offered, rel=0.01)
    # Falling behind by 3%: each request waits 3% of its arrival time longer than the one before.
    behind = Served(arrivals, [a * 1.03 for a in arrivals], [a * 1.03 + 0.001 for a in arrivals], [True] * 200,
                    requests=200)
    point = judge(200.0, behind, p99_ms=None)
    assert not point.valid and point.achieved == pytest.approx(point.offered / 1.03, rel=1e-6)


@pytest.mark.parametrize("server", [Busy, Later])
def test_an_overloaded_rate_ends_at_its_deadline_and_drops_its_queue(server):
    """A rate far above capacity queued more work than the time left: at 6x capacity a CPU job
    of a 2 s budget measured 7.6 s, its synchronous server draining the whole queue before
    the loop looked at the clock again. At the deadline the waiting requests are dropped,
    counted, and make the point invalid; those in flight finish."""
    service = 0.005  # capacity 200/s
    start = time.perf_counter()
    served = open_loop(poisson_arrivals(1000.0, 0.3, seed=5), [server(service)], deadline_s=0.4)
    took = time.perf_counter() - start
    assert took < 1.0, took  # stopped at its deadline (0.4 s), not after the 1.5 s the 300 requests would take
    assert served.dropped > 100 and served.requests + served.dropped > 250
    assert served.requests == len(served.done_s) and all(d > 0 for d in served.done_s)
    point = judge(1000.0, served, p99_ms=None)
    assert not point.valid and f"{served.dropped:,} requests still queued when its time ran out" in point.why
    assert point.as_dict()["dropped"] == served.dropped  # in the record too


def test_a_healthy_rate_serves_its_few_waiting_requests_at_the_deadline():
    """Below capacity the queue at the deadline holds a few requests: they are served, not
    dropped (the deadline falls at the last arrival when the budget is spent)."""
    arrivals = poisson_arrivals(100.0, 0.5, seed=6)
    served = open_loop(arrivals, [Busy(0.002)], deadline_s=arrivals[-1])  # as measure passes it, the budget spent
    assert served.dropped == 0 and served.requests == len(arrivals)


def test_a_stall_at_the_deadline_does_not_drop_a_healthy_rates_queue():
    """The host stalls for 150 ms just before the deadline (here: inside one request's issue),
    and ten requests queue meanwhile. Two servers of 2 ms serve them in about 10 ms: they are
    served, not dropped. (Measured by the pace served so far, about the arrival rate, the queue
    had looked like 100 ms of work.)"""
    arrivals = poisson_arrivals(100.0, 1.0, seed=9)
    stall_at = next(j for j, t in enumerate(arrivals) if t > arrivals[-1] - 0.1)

    class Stalls(Later):
        def start(self, j: int) -> None:
            if j == stall_at:
                time.sleep(0.15)
            super().start(j)

    served = open_loop(arrivals, [Stalls(0.002), Stalls(0.002)], deadline_s=arrivals[-1])
    assert served.dropped == 0 and served.requests == len(arrivals)
    assert sum(served.queued) >= 5  # the stall did queue requests at the deadline


def test_requests_go_to_the_first_free_server():
    servers = [Later(0.05), Later(0.05), Later(0.05)]
    started = []
    for k, s in enumerate(servers):
        original = s.start
        s.start = lambda j, k=k, original=original: (started.append(k), original(j))
    open_loop([0.0, 0.001, 0.002, 0.2], servers)  # three at once, then one when all are free again
    assert started == [0, 1, 2, 0]


def test_the_search_brackets_the_capacity_of_a_model_slowed_down_on_purpose(virtual_clock):
    service = 0.004  # one synchronous server: at most 250 requests/s

    def run(rate):
        return judge(rate, open_loop(poisson_arrivals(rate, 0.4, seed=int(rate), min_requests=200), [Busy(service)]),
                     p99_ms=40)

    found = search_rate(run, start=60.0, resolution=0.1, deadline=virtual_clock.t + 60)
    assert found.stopped_by == "resolution"
    assert found.best is not None and found.failed is not None
    assert 100 <= found.best <= 250 < found.failed * 1.6  # under capacity, and not far under it
    assert (found.failed - found.best) / found.best <= 0.1
    rates = [p.rate for p in found.points]
    assert rates[:2] == [60.0, 120.0]  # doubled while valid


def test_a_search_point_that_cannot_fit_in_the_time_left_is_not_started(monkeypatch):
    """Halving toward a low rate makes a point long (200 arrivals at 79/s: 2.5 s): started with
    little time left, it ran the job 1.7 s past a 4 s budget. A point after the first starts
    only when its least length fits. (A clock of the test's own: each point takes its length.)"""
    from runner import load

    clock = [0.0]
    monkeypatch.setattr(load, "perf_counter", lambda: clock[0])
    calls = []
    least = lambda rate: 200 / rate  # noqa: E731

    def run(rate):
        calls.append(rate)
        clock[0] += least(rate)
        return Point(rate, rate, rate, 200, {"p99": 1e6}, {}, {}, False, "p99 too high")  # every rate fails

    found = search_rate(run, start=1000.0, resolution=0.05, deadline=1.0, least_s=least)
    assert found.stopped_by == "budget"
    assert calls == [1000.0, 500.0]  # 0.2 s, then 0.4 s: 0.6 s; 250/s would end at 1.4 s
    # The first point always runs: without it the search measured nothing.
    calls.clear()
    clock[0] = 0.0
    first = search_rate(run, start=10.0, resolution=0.05, deadline=1.0, least_s=least)
    assert calls == [10.0] and first.stopped_by == "budget"
    # Even when the phases before left no time at all (a slow check): one point, not none.
    calls.clear()
    clock[0] = 5.0
    late = search_rate(run, start=10.0, resolution=0.05, deadline=1.0, least_s=least)
    assert calls == [10.0] and late.stopped_by == "budget" and len(late.points) == 1


QUICK = ("measure=quick", "device=cpu", "model.batch=2")


def test_a_server_job_on_the_cpu_records_its_points_and_curve(make_cfg, tmp_path):
    """At 20 requests/s the point's 200 requests arrive over about 10 s, past the 3 s budget and,
    with this seed, 27 of them past 10 s (to 11.3 s): every one is admitted (a deadline at the
    point's nominal 10 s would cut those off)."""
    overrides = [*QUICK, "load.scenario=server", "load.rate=20", "load.duration_s=0.5", "measure.budget_s=3", "seed=15"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    point = f["load"]["runner"]["points"][0]
    # Every arrival admitted: served, or (on a host so busy that the queue outgrew a tenth of
    # the point's time, an invalid point anyway) dropped at the deadline and counted.
    assert point["requests"] + point["dropped"] >= 200 and point["rate"] == 20
    assert point["dropped"] == 0 or not point["valid"]
    assert f["server_valid"] is point["valid"] and f["server_latency_us"]["p99"] > 0
    assert f["server_max_rate"] is None and f["throughput_requests_per_s"] is None  # not of this job: null
    # Other processes are watched around the load's passes, whose figures these are (no
    # throughput pass ran to watch): a reading over this job's CPUs, its grain beside it.
    assert f["host_others_cores_load"] is not None and f["host_others_cores_load"] >= 0
    assert f["host_others_tick_cores_load"] > 0 and f["host_others_cpus"] >= 1
    assert f["host_others_cores"] is None  # the throughput's: none ran
    assert (tmp_path / "load_curve.png").stat().st_size > 0 and result["files"]["load_curve"] == "load_curve.png"
    assert result["load"]["scenario"] == "server"
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["figures"]["load"]["runner"]["points"][0]["latency_us"] == point["latency_us"]


def test_single_stream_reports_pure_latency(make_cfg, tmp_path):
    # Room for all 50 (on a busy host the quick budget's share cut the pass to its 10-request floor).
    overrides = [*QUICK, "load.scenario=single_stream", "load.requests=50", "measure.budget_s=30"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    assert result["status"] == "ok", result["reason"]
    s = result["figures"]["single_stream_latency_us"]
    assert s["n"] == 50 and 0 < s["p50"] <= s["p99"] <= s["max"]
    f = result["figures"]
    assert f["throughput_requests_per_s"] is None  # no closed-loop pass ran: null, never missing
    assert f["host_others_cores_load"] is not None and f["host_others_tick_cores_load"] > 0  # its one pass watched
    assert set(f) >= {"baseline_single_stream_latency_us", "single_stream_speedup"}
    # Every headline key of every scenario, null where not measured (the closed loop's speedup
    # and latency stages had been missing: a KeyError for a script reading results of both).
    for key in ("speedup_vs_baseline", "efficiency_vs_ceiling_interval", "latency_e2e_us", "baseline_requests",
                "throughput_cv_all_repeats", "server_max_rate", "server_valid"):
        assert key in f and f[key] is None, key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("load.scenario=server",), r"load.rate: the server scenario needs a rate"),
        (("load.scenario=server", "load.rate=max"), r"load.rate=max: the search needs a latency bound; add load.p99_ms"),
        (("load.rate=100",), r"load.rate=100: a rate applies to load.scenario=server"),
        (("load.scenario=server", "load.rate=-5"), r"load.rate=-5: use requests per second > 0"),
        (("load.scenario=server", "load.rate=fast"), r"load.rate=fast: use requests per second > 0, or max"),
        (("load.scenario=server", "load.rate=10", "load.p99_ms=0"), r"load.p99_ms=0.0: use a bound in milliseconds > 0"),
        (("load.scenario=server", "load.rate=10", "load.p99_ms=inf"), r"^load.p99_ms=inf: use a bound in milliseconds > 0"),
        # A resolution of 5 (meant as 5%) would end a search at its first bracket, twice wide.
        (("load.scenario=server", "load.rate=max", "load.p99_ms=2", "load.resolution=5"),
         r"^load.resolution=5.0: use a fraction in \(0, 1\), e.g. 0.05"),
        # Far past the budget, or past memory: refused before anything runs (one took 12 GB in a
        # minute, another would have run 5.5 hours).
        (("measure=quick", "load.scenario=server", "load.rate=1e8"),
         r"^load.rate=1e\+08 x load.duration_s=1: 100,000,000 arrivals to draw, over 10,000,000; lower load.rate"),
        (("measure=quick", "load.scenario=server", "load.rate=0.01"),
         r"^load.rate=0.01: a point needs 200 arrivals at least, 20,000 s at that rate, over 20 times "
         r"measure.budget_s=2; raise load.rate to 4 or more, or measure.budget_s"),
        (("measure=quick", "load.scenario=server", "load.rate=max", "load.p99_ms=2", "load.duration_s=1e7"),
         r"^load.duration_s=1e\+07: each server point runs that long at least, over 20 times measure.budget_s=2"),
    ],
)
def test_bad_load_keys_are_one_line(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(make_cfg("device=cpu", *overrides))


def _fake_job(folder, num, overrides, max_rate, baseline_rate):
    folder.mkdir(parents=True)
    result = {
        "schema": SCHEMA, "status": "ok", "model": "MLP", "mode": "graph x4 pinned", "overrides": overrides,
        "job": {"num": num}, "effective": {"device": "cuda:0", "streams": 4},
        "figures": {"server_max_rate": max_rate, "baseline_server_max_rate": baseline_rate,
                    "load": {"scenario": "server", "rate": "max", "p99_ms": 2.0}},
    }
    (folder / "result.json").write_text(json.dumps(result))


def test_no_best_across_bounds_and_samples_across_batch_sizes(tmp_path):
    """From a review: a rate under 50 ms was ranked above one under 5 ms, and batch 1's 25k
    requests/s above batch 256's 658 (168k samples/s)."""
    from runner.report import sweep_notes

    _fake_job(tmp_path / "a" / "0", 0, ["load.p99_ms=5"], 1000.0, None)
    _fake_job(tmp_path / "a" / "1", 1, ["load.p99_ms=50"], 3000.0, None)
    for num, bound in ((0, 5.0), (1, 50.0)):
        path = tmp_path / "a" / str(num) / "result.json"
        result = json.loads(path.read_text())
        result["figures"]["load"]["p99_ms"] = bound
        path.write_text(json.dumps(result))
    rows = collect([tmp_path / "a"])
    assert [r.best for r in rows] == ["", ""]
    assert "sweep: no best: its rate searches ran under different p99 bounds (5, 50 ms), and a rate under one says " \
        "nothing of another" in sweep_notes(rows)
    for num, batch, rate in ((0, 1, 24999.0), (1, 256, 658.0)):
        _fake_job(tmp_path / "b" / str(num), num, [f"model.batch={batch}"], rate, None)
        path = tmp_path / "b" / str(num) / "result.json"
        result = json.loads(path.read_text())
        result["config"] = {"model": {"batch": batch}}
        path.write_text(json.dumps(result))
    rows = collect([tmp_path / "b"])
    assert [r.best for r in rows] == ["", "best"]
    assert "best under p99 <= 2 ms: job 1 (model.batch=256) at 658 requests/s (168,448 samples/s, the most of the " \
        "jobs' differing batch sizes)" in text_table(rows)


def test_a_sweep_over_models_names_a_best_per_model(tmp_path):
    """Two models' requests are not one work: a sweep over model=a,b had named one "best" of both."""
    for num, (preset, rate) in enumerate((("model=mlp", 14000.0), ("model=mlp", 9000.0), ("model=bert", 800.0))):
        _fake_job(tmp_path / str(num), num, [preset, f"streams={num + 1}"], rate, None)
        path = tmp_path / str(num) / "result.json"
        result = json.loads(path.read_text())
        result["model"] = "MLP" if preset == "model=mlp" else "BertModel"
        result["effective"]["streams"] = num + 1
        path.write_text(json.dumps(result))
    rows = collect([tmp_path])
    assert [r.best for r in rows] == ["best", "", "best"]
    assert ("best of MLP (model=mlp) under p99 <= 2 ms: job 0 (model=mlp streams=1) at 14,000 requests/s; best of "
            "BertModel (model=bert) under p99 <= 2 ms: job 2 (model=bert streams=3) at 800 requests/s") in text_table(rows)
    # A model whose search held no rate: the other's best is still named by its model.
    bert = json.loads((tmp_path / "2" / "result.json").read_text())
    bert["figures"]["server_max_rate"] = None
    (tmp_path / "2" / "result.json").write_text(json.dumps(bert))
    assert "best of MLP (model=mlp) under p99 <= 2 ms: job 0" in text_table(collect([tmp_path]))


def test_the_sweep_table_marks_the_configuration_that_holds_the_highest_rate(tmp_path):
    _fake_job(tmp_path / "0", 0, ["streams=1", "graph=false"], 4000.0, 3900.0)
    _fake_job(tmp_path / "1", 1, ["streams=4", "graph=true"], 52000.0, 4100.0)
    _fake_job(tmp_path / "2", 2, ["streams=8", "graph=true"], 47000.0, 4000.0)
    rows = collect([tmp_path])
    assert [r.best for r in rows] == ["", "best", ""]
    assert "| eager max rate/s | best |" in markdown(rows)  # every column has its title
    table = text_table(rows)
    assert "max rate/s" in table and "52,000" in table
    assert "best under p99 <= 2 ms: job 1 (streams=4 graph=true) at 52,000 requests/s, 12.68x its eager baseline's 4,100/s" in table
    assert "**best under p99 <= 2 ms: job 1" in markdown(rows)
    # These fakes all record the same effective settings: which one is best is then noise.
    assert "(jobs #0, #1, #2 ran the same settings: which of them is best is noise)" in table
    # The baseline's search cut by the budget found a floor: the ratio is at most that (review).
    cut_base = json.loads((tmp_path / "1" / "result.json").read_text())
    cut_base["figures"]["load"]["baseline"] = {"stopped_by": "budget"}
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "result.json").write_text(json.dumps(cut_base))
    assert ("12.68x its eager baseline's 4,100/s (at most: the baseline's search was cut by the budget, its rate a "
            "floor)") in text_table(collect([tmp_path / "cut"]))
    from runner.printer import _load_lines

    lines = _load_lines({"scenario": "server", "rate": "max", "p99_ms": 2.0,
                         "runner": {"max_rate": 52000.0, "stopped_by": "budget", "points": []},
                         "baseline": {"max_rate": 4100.0, "stopped_by": "resolution", "points": []}})
    assert lines[-1] == ("  the runner holds 12.68x the baseline's rate under the bound (at least: the runner's search "
                         "was cut by the budget, its rate a floor)")
    # A search the budget cut short found a floor (the job's own warning said so; the line did not).
    result = json.loads((tmp_path / "1" / "result.json").read_text())
    result["figures"]["load"]["runner"] = {"stopped_by": "budget", "lowest_invalid_rate": None}
    (tmp_path / "1" / "result.json").write_text(json.dumps(result))
    assert ("at 52,000 requests/s or more (its search was cut short by the budget), 12.68x"
            in text_table(collect([tmp_path])))
    result["figures"]["load"]["runner"] = {"stopped_by": "budget", "lowest_invalid_rate": 80000.0}
    (tmp_path / "1" / "result.json").write_text(json.dumps(result))
    assert "at 52,000 requests/s or more, below 80,000 (its search was cut short" in text_table(collect([tmp_path]))


def test_no_best_among_searches_whose_floors_and_brackets_overlap(tmp_path):
    """Two searches the budget cut before any rate failed (floors): the higher figure was named
    best "or more", where the other's true rate may lie higher still (new-user walk: 246 vs 661
    requests/s, both floors). A bracket of a cut search reaching past the best's figure leaves it
    undecided too; one wholly below it does not."""
    _fake_job(tmp_path / "0", 0, ["streams=1"], 4000.0, 3900.0)
    _fake_job(tmp_path / "1", 1, ["streams=4"], 52000.0, 4100.0)

    def cut(job: str, lowest_invalid) -> None:
        result = json.loads((tmp_path / job / "result.json").read_text())
        result["figures"]["load"]["runner"] = {"stopped_by": "budget", "lowest_invalid_rate": lowest_invalid}
        (tmp_path / job / "result.json").write_text(json.dumps(result))

    cut("0", None)  # 4,000 or more: it may hold more than job 1's 52,000
    rows = collect([tmp_path])
    assert [r.best for r in rows] == ["", ""]
    assert "best under" not in text_table(rows)
    assert ("sweep: no best: the budget cut the rate searches short, and their requests/s overlap (job 1 (streams=4) "
            "52,000; job 0 (streams=1) 4,000 or more); raise measure.budget_s to tell them apart") in sweep_notes(rows)
    assert "sweep: no best: the budget cut" in markdown(rows)
    cut("0", 60000.0)  # below 60,000: still maybe above 52,000
    assert [r.best for r in collect([tmp_path])] == ["", ""]
    cut("0", 8000.0)  # below 8,000: job 1 holds more
    rows = collect([tmp_path])
    assert [r.best for r in rows] == ["", "best"] and not [n for n in sweep_notes(rows) if "no best" in n]
    # A cut search that held no rate yet may hold more than the best's figure (review): its
    # one point failed at 80,000, and below that its rate is unknown.
    result = json.loads((tmp_path / "0" / "result.json").read_text())
    result["figures"]["server_max_rate"] = None
    result["figures"]["load"]["runner"] = {"stopped_by": "budget", "lowest_invalid_rate": 80000.0, "points": [{}]}
    (tmp_path / "0" / "result.json").write_text(json.dumps(result))
    rows = collect([tmp_path])
    assert [r.best for r in rows] == ["", ""]
    assert "job 0 (streams=1) no rate held yet (below 80,000)" in " ".join(sweep_notes(rows))
    cut("0", 8000.0)
    result = json.loads((tmp_path / "0" / "result.json").read_text())
    result["figures"]["load"]["runner"]["points"] = [{}]
    (tmp_path / "0" / "result.json").write_text(json.dumps(result))
    assert [r.best for r in collect([tmp_path])] == ["", "best"]  # below 8,000: no rival to 52,000
    # sweep.csv: a search's flags say what they know; no baseline search held a rate (on the CPU
    # none runs): its flag empty, not "False" (new-user walk).
    import csv
    import io

    from runner.report import csv_text

    _fake_job(tmp_path / "2", 2, ["streams=8"], 9000.0, None)
    cells = {r["job"]: (r["max_rate_cut"], r["baseline_max_rate_cut"])
             for r in csv.DictReader(io.StringIO(csv_text(collect([tmp_path]))))}
    assert cells == {"0": ("True", "False"), "1": ("False", "False"), "2": ("False", "")}


def test_a_search_where_no_rate_held_the_bound_says_so_plainly():
    """It read "highest rate no rate held the bound"."""
    from runner.printer import _load_lines

    point = {"rate": 156.0, "offered": 156.0, "achieved": 155.0, "latency_us": {"p50": 900.0, "p99": 6100.0},
             "queue_us": {"p99": 10.0}, "valid": False, "why": "p99 over the bound"}
    load = {"scenario": "server", "rate": "max", "p99_ms": 5.0,
            "runner": {"max_rate": None, "stopped_by": "budget", "points": [point, {**point, "rate": 312.0}]}}
    lines = _load_lines(load)
    assert "  runner: no rate tried held the bound (search: budget, 2 points)" in lines
    assert lines[2].split()[-2:] == ["p99", "verdict"] and "slack p99" in lines[2]
    assert lines[3].split()[6] == "-"  # a point recorded without slack figures
    point["slack_us"] = {"p99": 1962.0}
    assert _load_lines(load)[3].split()[6] == "1,962.0"  # the loop's lateness, beside the latency
    # The runner's search used the baseline's time too (H200, measure=short): no point at all.
    load["baseline"] = {"max_rate": None, "stopped_by": "budget", "points": []}
    lines = _load_lines(load)
    assert lines[-1] == "  baseline (eager): not measured: the budget ran out before its first point (search: budget, 0 points)"
    load["runner"]["max_rate"] = 437.0
    assert "  runner: highest rate 437 requests/s (search: budget, 2 points)" in _load_lines(load)
    # A slow model's rates keep their digits, as in the line above them (they read "0" and "1"),
    # and a point that served no request has no latency ("-", it read 0.0).
    slow = {**point, "rate": 0.48, "offered": 0.48, "achieved": 0.5, "latency_us": {"p50": None, "p99": None},
            "queue_us": {"p99": None}}
    row = _load_lines({**load, "runner": {"max_rate": 0.48, "stopped_by": "budget", "points": [slow]}})[3].split()
    assert row[:6] == ["0.48", "0.48", "0.5", "-", "-", "-"], row


def test_fixed_rate_and_single_stream_jobs_fill_the_sweep_table(tmp_path):
    """Their tables were all "-": the throughput columns are empty for these scenarios. The rate
    achieved and the latency (arrival to completion; one request at a time) fill them, and a
    `load` column says which, with the server's verdict."""
    from runner import report

    def job(num, overrides, figures):
        folder = tmp_path / "sw" / str(num)
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({
            "schema": SCHEMA, "status": "ok", "model": "MLP", "mode": "eager x1", "overrides": overrides,
            "job": {"num": num}, "effective": {"device": "cpu", "streams": 1}, "figures": figures}))

    job(0, ["load.rate=500"], {"load": {"scenario": "server", "rate": 500.0}, "server_valid": True,
                               "server_achieved_rate": 499.2, "server_latency_us": {"p50": 1555.9, "p99": 6362.6}})
    # The arrivals drawn for the asked rate offer a little more or less: the row says both.
    job(1, ["load.rate=2000"], {"load": {"scenario": "server", "rate": 2000.0,
                                         "runner": {"points": [{"offered": 2043.7}]}}, "server_valid": False,
                                "server_achieved_rate": 803.0, "server_latency_us": {"p50": 9e5, "p99": 1.4e6}})
    job(2, ["load.scenario=single_stream"], {"load": {"scenario": "single_stream"},
                                             "single_stream_latency_us": {"p50": 1154.6, "p99": 1314.5}})
    # A rate=max search in which no rate held the bound: said in its row, not a row of blanks.
    job(3, ["load.rate=max"], {"load": {"scenario": "server", "rate": "max", "p99_ms": 5.0,
                                        "runner": {"lowest_invalid_rate": 79.0, "points": [{}]}},
                               "server_max_rate": None})
    rows = report.collect([tmp_path / "sw"])
    assert [(r.requests_per_s, r.latency_p50_us, r.load) for r in rows] == [
        (499.2, 1555.9, "server: valid at load.rate=500/s"),
        (803.0, 9e5, "server: INVALID at load.rate=2,000/s (2,044/s offered)"),
        (None, 1154.6, "single stream"), (None, None, "server: no rate held p99 <= 5 ms (lowest tried 79/s)")]
    assert "| server: INVALID at load.rate=2,000/s (2,044/s offered) |" in report.markdown(rows)
    assert "| server: no rate held p99 <= 5 ms (lowest tried 79/s) |" in report.markdown(rows)
    # A search that held no rate still brings the search's columns (a sweep where none held had
    # shown none of them).
    assert "max rate/s" in report.text_table(rows) and "| max rate/s |" in report.markdown(rows)
    assert report._no_rate_held({"points": []}, 5.0) == "server: not measured (the budget ran out before its first point)"
    # Cut by the budget after a point that failed: no rate held yet, a lower one may.
    assert report._no_rate_held({"points": [{}], "lowest_invalid_rate": 2652.0, "stopped_by": "budget"}, 0.3) == (
        "server: no rate held p99 <= 0.3 ms before the budget cut its search (lowest tried 2,652/s; a lower rate may "
        "hold: raise measure.budget_s)")


def test_requests_that_came_during_a_synchronous_request_count_as_queued_not_as_slack():
    """On the CPU a request runs on the loop's own thread: a request that arrives meanwhile
    waits for it, which is queueing. It was counted as the loop's timer slack (804 ms of
    "slack" under overload, against a definition of a few microseconds)."""
    service = 0.02
    served = open_loop(poisson_arrivals(100.0, 1.0, seed=3, min_requests=100), [Busy(service)])  # 2x capacity
    point = judge(100.0, served, p99_ms=None)
    assert sum(served.queued) > len(served.queued) // 2
    assert point.slack_us["max"] < 0.5 * service * 1e6, point.slack_us  # the loop's lateness, not a request's
    assert point.queue_us["p99"] > 10 * service * 1e6
    # Far below capacity most requests find the server free, and are not queued.
    light = open_loop(poisson_arrivals(5.0, 2.0, seed=4, min_requests=20), [Busy(0.002)])
    assert sum(light.queued) <= 2


def test_a_search_the_budget_cut_short_says_what_its_figure_is_known_to_be(make_cfg):
    """measure=quick with rate=max: two points of about a second each, then the budget ends the
    search. The figure is a bracket, not a maximum, and the warning says so."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK, "load.scenario=server", "load.rate=max", "load.p99_ms=50"))

    def search(points: int, best, failed) -> dict:
        rates = [r for r in (best, failed) if r is not None]
        return {"points": [{"rate": rates[i % len(rates)]} for i in range(points)], "max_rate": best,
                "lowest_invalid_rate": failed, "stopped_by": "budget"}

    load = {"scenario": "server", "rate": "max", "p99_ms": 50.0, "runner": search(2, 400.0, 800.0),
            "baseline": search(1, 100.0, None)}
    warnings = summarize_measurement(spec, Measurement(load=load)).warnings
    [runner, baseline] = [w for w in warnings if w.startswith("load: the budget")]
    assert runner == ("load: the budget (measure.budget_s=2) ended the runner's rate search after 2 points, short of "
                      "load.resolution=0.05: the highest valid rate is between 400 and 800 requests/s; raise "
                      "measure.budget_s, or lower load.duration_s")
    assert "baseline's rate search after 1 point," in baseline and "100 requests/s or more" in baseline
    # Its one point at 100/s ran 200 arrivals, 2 s, past load.duration_s=1: a shorter one would
    # not shorten it, and is not offered.
    assert baseline.endswith("raise measure.budget_s")
    load["runner"]["stopped_by"] = "resolution"
    load["baseline"] = search(3, None, 50.0)
    [only] = [w for w in summarize_measurement(spec, Measurement(load=load)).warnings if w.startswith("load:")]
    assert "no rate tried held the bound (the lowest, 50 requests/s, did not)" in only
    assert "fastest request" not in only
    # One point whose fastest request took longer than the bound (two in a row end the search):
    # said as the likely cause, not only "raise measure.budget_s" (a 1 us bound on the GPU).
    load["baseline"]["points"][-1]["service_min_us"] = 60_000.0
    [only] = [w for w in summarize_measurement(spec, Measurement(load=load)).warnings if w.startswith("load:")]
    assert ("; even its fastest request took 60,000.0 us from issue to completion, past the bound: load.p99_ms may be "
            "below one request's own latency; raise measure.budget_s") in only, only



def test_points_failed_while_the_runners_own_timer_ran_late_are_said(make_cfg):
    """On a busy VM a model 7% busy (341 us a request at 200/s) was INVALID at p99 2 ms: the
    loop's timer issued requests 3 ms late at p99 (its slack), and nothing said so."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK, "load.scenario=server", "load.rate=200", "load.p99_ms=2"))

    def point(slack_p99_us: float, valid: bool = False, why: str = "p99 4.4 ms > 2 ms") -> dict:
        return {"rate": 200.0, "valid": valid, "why": "" if valid else why, "slack_us": {"p99": slack_p99_us},
                "latency_us": {"p50": 341.0, "p99": 4396.0}, "achieved": 200.0}

    def said(*points: dict) -> list[str]:
        load = {"scenario": "server", "rate": 200.0, "p99_ms": 2.0, "runner": {"points": list(points)}}
        return [w for w in summarize_measurement(spec, Measurement(load=load)).warnings if "own timer" in w]

    assert said(point(2999.0), point(3100.0)) == [
        "load: at 2 of the runner's points that failed on p99, the runner's own timer issued requests late by up to "
        "3.1 ms at p99 (slack: how late a request that found a free server was issued), 50% of load.p99_ms=2 or "
        "more: the host ran the runner's loop late (a busy host?), so the bound may have failed on the host, not on "
        "the model; measure on a quiet host"]
    # A prompt timer, a valid point, or a point failed on its rate alone: nothing said.
    assert said(point(80.0)) == [] and said(point(3000.0, valid=True)) == []
    assert said(point(3000.0, why="achieved 150/s of 200/s offered")) == []
    # Lateness that cannot account for the failure (p99 345 us for a 10 us bound, 15 us late, walk):
    # the model's own latency failed it, not the host.
    far = point(3000.0)
    far["latency_us"] = {"p50": 30_000.0, "p99": 40_000.0}
    assert said(far) == []

def test_a_single_stream_the_budget_cut_short_says_what_its_p99_rests_on(make_cfg):
    """model=tiny_llm on a 2-core CPU under measure=quick: 36 of 1,000 requests, and its p99
    printed with no word that it is its largest latency but one."""
    from runner.measure import Measurement
    from runner.stats import summarize
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK, "load.scenario=single_stream"))
    load = {"scenario": "single_stream", "runner": summarize(range(1000, 1036)), "baseline": summarize(range(1000))}
    said = [w for w in summarize_measurement(spec, Measurement(load=load)).warnings if w.startswith("load:")]
    assert said == ["load: the runner's single stream ran 36 of load.requests=1000 requests in its share of the budget "
                    "(measure.budget_s=2): its p99 lies between its two largest latencies; raise measure.budget_s for more"]


def test_a_fixed_rate_whose_least_arrivals_overrun_the_budget_says_so_before(make_cfg, tmp_path):
    """load.rate=20 measured 10 s on a 2 s budget with no warning: a point waits for its 200
    arrivals. (Here 50/s: 4 s at least, on a 2 s budget.)"""
    result = run_job(make_cfg(*QUICK, "load.scenario=server", "load.rate=50", "baseline=false"),
                     JobInfo(output_dir=tmp_path))
    assert result["status"] in ("ok", "invalid"), result["reason"]
    assert any(w.startswith("load: a point at load.rate=50 runs 4.0 s at least (200 arrivals, load.duration_s=1), "
                            "past its ") and w.endswith("share of measure.budget_s=2; it runs whole")
               for w in result["warnings"]), result["warnings"]


def test_a_latency_pass_makes_no_more_records_than_its_time_can_fill(make_cfg, tmp_path, monkeypatch):
    """measure.latency_requests=1e9 allocated its per-request records for minutes before the
    pass began (the pass ends at its time anyway)."""
    from runner import schedule

    asked = []
    real = schedule.enqueue_pass

    def enqueue_pass(lanes, sources, keys, requests, *args, **kwargs):
        asked.append(requests)
        assert requests < 10**7, requests  # never allocate for the 1e9
        return real(lanes, sources, keys, requests, *args, **kwargs)

    monkeypatch.setattr(schedule, "enqueue_pass", enqueue_pass)
    result = run_job(make_cfg(*QUICK, "measure.latency_requests=1000000000"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    assert asked and 2 <= asked[0] < 10**7 and result["figures"]["latency_e2e_us"]["n"] <= asked[0]
    n = result["figures"]["latency_e2e_us"]["n"]  # and the cut is said, with what its p99 rests on
    assert any(w.startswith(f"the latency pass served {n} of measure.latency_requests=1000000000 requests in its "
                            "share of the budget") for w in result["warnings"]), result["warnings"]


SLOW_MODEL = ("model=linear", "~model.module.in_features", "~model.module.out_features", "+model.module.features=8",
              "model.inputs.input.shape=[8]", "model.module._target_=tests.faulty_models.Slow")


def test_a_rate_search_whose_first_point_is_far_past_the_budget_is_refused(make_cfg, tmp_path, monkeypatch):
    """A search starts at half the closed loop's rate, and its first point waits for 200
    arrivals: tiny_llm on 2 cores ran 118 s of a 2 s budget in silence (about 200 s to go).
    Counted in the least this job can do, it is refused before measuring; and after the
    warm-up, with the rate measured, refused there too (here scaled down: 20 ms forwards)."""
    from runner import measure
    from runner import spec as rules

    monkeypatch.setattr(rules, "REFUSE_FACTOR", 1.5)
    monkeypatch.setattr(rules, "REFUSE_MIN_S", 0.1)
    import runner.job as job

    monkeypatch.setattr(job, "probe_limit", lambda spec: None)
    cfg = make_cfg(*QUICK, *SLOW_MODEL, "+model.module.calls=20", "measure.budget_s=0.4", "measure.warmup_ms=0",
                   "load.scenario=server", "load.rate=max", "load.p99_ms=500", "load.duration_s=0.1")
    with pytest.raises(ConfigError) as refused:
        run_job(cfg, JobInfo(output_dir=tmp_path / "before"))
    assert "the rate search's first point: 200 arrivals at half the closed loop's rate) takes about" in str(refused.value)
    # Past that estimate (it had said nothing), from the rate the warm-up measured.
    monkeypatch.setattr(measure, "_tell_if_slow", lambda *args: None)
    with pytest.raises(ConfigError) as refused:
        run_job(cfg, JobInfo(output_dir=tmp_path / "after"))
    assert re.match(r"load\.rate=max: the load's rate search starts at half the closed loop's rate, [\d.]+/s, and its "
                    r"first point needs 200 arrivals at least, \d+ s at that rate, over 1\.5 times measure\.budget_s=0\.4: "
                    r"not measured; raise measure\.budget_s to \d+ or more", str(refused.value)), str(refused.value)
    assert not (tmp_path / "after" / "result.json").exists()


def test_a_rate_search_keeps_its_share_and_runs_one_point_at_least(make_cfg, tmp_path, monkeypatch):
    """A BERT search whose check overran its share ended "not measured: the budget ran out before
    its first point" with status ok. The load keeps its share past the budget's end, as the
    timed passes do, and a search measures one point at least; a first point longer than its
    share is said before it runs."""
    from runner import measure

    real = measure.Budget.allowance
    # The phases before ate the load's time (its share of what is left: none).
    monkeypatch.setattr(measure.Budget, "allowance", lambda self, *names: 0.0 if names == ("load",) else real(self, *names))
    cfg = make_cfg(*QUICK, *SLOW_MODEL, "+model.module.calls=5", "measure.budget_s=1", "measure.warmup_ms=0",
                   "load.scenario=server", "load.rate=max", "load.p99_ms=500", "load.duration_s=0.1")
    result = run_job(cfg, JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    points = result["figures"]["load"]["runner"]["points"]
    assert len(points) >= 1 and points[0]["requests"] >= 200  # the first point ran, whole, past the share
    said = result["warnings"]
    assert any(w.startswith("the phases before the load overran their shares of measure.budget_s=1: the load kept its ")
               for w in said), said
    # 200 arrivals at half of about 200/s: 2 s at least, past its share: said before it ran.
    assert any(re.match(r"load: the rate search's first point, at half the closed loop's rate \([\d.]+/s\), runs "
                        r"[\d.]+ s at least \(200 arrivals\), past its [\d.]+ s share of measure\.budget_s=1; it runs "
                        r"whole$", w) for w in said), said


def test_a_searchs_points_are_fitted_by_their_stretched_arrivals(make_cfg, tmp_path, monkeypatch):
    """A point runs to its last arrival, and stretched to its rate that lies up to 16% past
    load.duration_s (review): the search fits its next point by that, not by the nominal length."""
    from runner import measure
    from runner.load import at_rate

    fitted = {}

    def search(run, start, resolution, deadline, floor=1.0, least_s=lambda rate: 0.0, **more):
        fitted.update({rate: least_s(rate) for rate in (50.0, 300.0, 5000.0)})
        return search_rate(run, start, resolution, deadline, floor, least_s, **more)

    monkeypatch.setattr(measure, "search_rate", search)
    overrides = [*QUICK, "load.scenario=server", "load.rate=max", "load.p99_ms=1000", "load.duration_s=0.5", "seed=26"]
    assert run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))["status"] == "ok"
    for rate, seconds in fitted.items():
        drawn = at_rate(poisson_arrivals(rate, max(0.5, 200 / rate), 26 * 1_000_003, 200), rate)
        assert seconds == pytest.approx(drawn[-1], rel=1e-12), rate


def test_a_searchs_points_draw_no_more_than_the_arrivals_cap(make_cfg, tmp_path, monkeypatch):
    """A fixed rate past MAX_ARRIVALS is refused, but a search's doubling rates had no cap: at a
    long load.duration_s a point drew 10 million arrivals in 1.5 s and about 800 MB (review).
    Points above the cap's rate run shorter than load.duration_s, and the job says so."""
    from runner import load, measure

    monkeypatch.setattr(load, "MAX_ARRIVALS", 300)
    monkeypatch.setattr(measure, "MAX_ARRIVALS", 300)
    overrides = [*QUICK, "load.scenario=server", "load.rate=max", "load.p99_ms=1000", "load.duration_s=0.5"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    assert result["status"] == "ok", result["reason"]
    points = result["figures"]["load"]["runner"]["points"]
    # The first point, at half the closed loop's thousands/s, would draw over a thousand in 0.5 s.
    assert points and points[0]["rate"] * 0.5 > 600, points[0]["rate"]
    assert all(200 <= p["requests"] <= 300 for p in points), [p["requests"] for p in points]
    assert "load: a point draws 300 arrivals at most: those above 600/s run shorter than load.duration_s=0.5" \
        in result["warnings"], result["warnings"]


@pytest.mark.parametrize("where", ["runner", pytest.param("baseline", marks=pytest.mark.cuda)])  # CPU: no baseline
def test_a_ctrl_c_during_a_rate_search_keeps_the_points_that_finished(make_cfg, tmp_path, monkeypatch, where):
    """A Ctrl-C in a load job kept `figures.load = None`: the search's finished points lived in
    search_rate until it returned (walk). They are kept, the search said interrupted, and the
    runner's whole search where the baseline's was interrupted."""
    import json

    from runner import measure, schedule

    calls = {"runner": 0, "baseline": 0}
    real = measure.open_loop

    def open_loop(arrivals, servers, deadline_s=math.inf):
        who = "baseline" if isinstance(servers[0], schedule.BaselineServer) else "runner"
        calls[who] += 1
        if who == where and calls[who] == 3:
            raise KeyboardInterrupt
        return real(arrivals, servers, deadline_s)

    monkeypatch.setattr(measure, "open_loop", open_loop)
    overrides = [*QUICK, "load.scenario=server", "load.rate=max", "load.p99_ms=1000", "load.duration_s=0.05",
                 "measure.budget_s=30", f"device={'cuda' if where == 'baseline' else 'cpu'}"]
    with pytest.raises(KeyboardInterrupt):
        run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "interrupted"
    load = result["figures"]["load"]
    cut = load[where]
    assert cut["stopped_by"] == "interrupted" and len(cut["points"]) == 2, cut
    assert cut["max_rate"] == max(p["rate"] for p in cut["points"] if p["valid"])  # every rate held: p99 <= 1 s
    if where == "baseline":
        assert load["runner"]["stopped_by"] in ("resolution", "budget") and result["figures"]["server_max_rate"]
        assert result["figures"]["baseline_server_max_rate"] == cut["max_rate"]
    else:
        assert "baseline" not in load and result["figures"]["server_max_rate"] == cut["max_rate"]
    points = len(load["runner"]["points"]) + len((load.get("baseline") or {}).get("points") or [])
    assert result["reason"] == f"interrupted (Ctrl-C) before the job finished; the figures hold the {points} load point(s) that finished"


@pytest.mark.parametrize("how", ["Ctrl-C", "failure"])
def test_a_fixed_rate_or_a_search_stopped_mid_point_records_what_it_has(make_cfg, tmp_path, monkeypatch, how):
    """A Ctrl-C in a fixed rate's only point left a placeholder runner without a verdict, and the
    console's table crashed on it ('valid', exit 1; review). A failure at a later rate of a
    search (out of memory) kept no point, where a Ctrl-C kept them."""
    from runner import measure, report
    from runner.printer import render

    calls = []
    real = measure.open_loop

    def open_loop(arrivals, servers, deadline_s=math.inf):
        calls.append(1)
        if len(calls) == 2 or how == "Ctrl-C":
            raise KeyboardInterrupt if how == "Ctrl-C" else RuntimeError("planted failure at a later rate")
        return real(arrivals, servers, deadline_s)

    monkeypatch.setattr(measure, "open_loop", open_loop)
    if how == "Ctrl-C":
        overrides = [*QUICK, "load.scenario=server", "load.rate=200", "load.duration_s=0.5"]
        with pytest.raises(KeyboardInterrupt):
            run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    else:
        overrides = [*QUICK, "load.scenario=server", "load.rate=max", "load.p99_ms=1000", "load.duration_s=0.05"]
        run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == ("interrupted" if how == "Ctrl-C" else "failed"), result["reason"]
    render(result)  # the console's table of it does not fail
    [row] = report.collect([tmp_path])
    if how == "Ctrl-C":
        assert result["figures"].get("load") is None and "INVALID" not in row.load and row.status == "interrupted", row
    else:
        search = result["figures"]["load"]["runner"]
        assert search["stopped_by"] == "failed" and len(search["points"]) == 1, search
        assert result["reason"].endswith("; the figures hold the 1 load point(s) that finished before it"), result["reason"]


def test_a_bound_below_one_requests_latency_ends_the_search_and_says_so(make_cfg, tmp_path):
    """A 10 us bound on a model whose requests take 50 us: the search had halved down to 299/s,
    then advised a larger budget, and blamed the host's timer (walk). Where even the fastest
    request, issue to completion, took longer than the bound, no lower rate can hold it."""
    from runner.load import Point, Served, past_one_request

    def point(fastest_us):
        return Point(100.0, 100.0, 100.0, 200, {"p50": 50.0, "p99": 200.0}, {"p50": 30.0}, {"p99": 1.0}, False,
                     "p99 > bound", 0, fastest_us)

    assert past_one_request(point(12.0), 0.01) and not past_one_request(point(12.0), None)
    assert not past_one_request(point(8.0), 0.01)  # one request came in under the bound
    assert not past_one_request(point(None), 0.01)
    # The fastest request's own time is issue to completion: a request that waited long still
    # ran fast, and a lower rate would take its wait away.
    served = Served(arrival_s=[0.0, 0.001], issue_s=[0.0, 0.004], done_s=[0.002, 0.0045], queued=[False, True],
                    requests=2)
    assert judge(500.0, served, 1.0).service_min_us == pytest.approx(500.0)
    runs = []

    def run(rate):
        runs.append(rate)
        return point(50.0)

    found = search_rate(run, 1000.0, 0.05, time.perf_counter() + 60, hopeless=lambda p: past_one_request(p, 0.01))
    assert found.stopped_by == "bound" and runs == [1000.0, 500.0] and found.best is None  # two in a row
    # In a row: a point with a fast request between two hopeless ones starts the count again.
    fastest = {1000.0: 5.0, 500.0: 50.0, 250.0: 50.0}
    runs.clear()
    found = search_rate(lambda rate: runs.append(rate) or point(fastest[rate]), 1000.0, 0.05,
                        time.perf_counter() + 60, hopeless=lambda p: past_one_request(p, 0.01))
    assert found.stopped_by == "bound" and runs == [1000.0, 500.0, 250.0]
    # No lower rate to confirm with (a slow model's search starting under 2/s): the bound, not the floor.
    runs.clear()
    found = search_rate(run, 1.5, 0.05, time.perf_counter() + 60, hopeless=lambda p: past_one_request(p, 0.01))
    assert found.stopped_by == "bound" and runs == [1.5]
    overrides = [*QUICK, "model=linear", "load.scenario=server", "load.rate=max", "load.p99_ms=0.001",
                 "load.duration_s=0.05"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    search = result["figures"]["load"]["runner"]
    assert search["stopped_by"] == "bound" and len(search["points"]) == 2, search
    assert any(re.match(r"load: no rate can hold load\.p99_ms=0\.001 for the runner: at [\d,.]+ requests/s even its "
                        r"fastest request took [\d,.]+ us from its issue to its completion, so one request's own latency "
                        r"is past the bound and a lower rate, which only shortens the queue, would not bring it under; "
                        r"raise load\.p99_ms$", w) for w in result["warnings"]), result["warnings"]
    assert not any("raise measure.budget_s" in w or "own timer" in w for w in result["warnings"]), result["warnings"]


def test_a_verdict_shows_its_p99_past_the_bound_and_wide_rates_keep_their_columns():
    """"p99 1 ms > 1 ms" for 1,003.8 us; and at load.rate=1e7 the rate and offered columns ran
    together as "10,000,00010,006,875" (walk)."""
    from runner.load import Served, judge
    from runner.printer import render

    times = [i / 1000 for i in range(1, 301)]
    served = Served(arrival_s=times, issue_s=times, done_s=[t + 0.0010038 for t in times], queued=[False] * 300,
                    requests=300)
    point = judge(1000.0, served, 1.0)
    assert not point.valid and point.why == "p99 1.004 ms > 1 ms", point.why
    wide = {**point.as_dict(), "rate": 10_000_000.0, "offered": 10_006_875.0, "achieved": 19_838.0}
    result = {"status": "ok", "figures": {"load": {"scenario": "server", "rate": 1e7, "p99_ms": 1.0,
                                                   "runner": {"points": [wide], "valid": False, "rate": 1e7}}}}
    [row] = [line for line in render(result).splitlines() if "10,006,875" in line]
    assert row.split()[:3] == ["10,000,000", "10,006,875", "19,838"], row


def test_a_load_key_the_scenario_does_not_read_gets_a_notice(make_cfg):
    """load.duration_s=3 with the offline scenario, or load.requests=5 with server, ran without a
    word, where load.rate in the wrong scenario is refused (walk)."""
    def said(*overrides: str) -> list[str]:
        return [n for n in resolve(make_cfg(*QUICK, *overrides)).notices if n.startswith("load.")]

    assert said("load.duration_s=3") == [
        "load.duration_s=3: only load.scenario=server uses it (this job: load.scenario=offline): not used"]
    assert said("load.scenario=server", "load.rate=500", "load.requests=5", "load.resolution=0.1") == [
        "load.resolution=0.1: only load.scenario=server with load.rate=max uses it (this job: load.scenario=server "
        "load.rate=500): not used",
        "load.requests=5: only load.scenario=single_stream uses it (this job: load.scenario=server load.rate=500): "
        "not used"]
    assert said("load.scenario=single_stream", "load.requests=5") == []
    assert said("load.scenario=server", "load.rate=max", "load.p99_ms=2", "load.duration_s=0.5",
                "load.resolution=0.1") == []


def test_the_load_percentiles_are_by_nearest_rank():
    """A latency some request had: of 1..200, p50 is the 100th and p99 the 198th."""
    from runner.load import _percentiles

    got = _percentiles([float(i) for i in range(1, 201)])
    assert (got["p50"], got["p99"], got["max"]) == (100.0, 198.0, 200.0)


def test_a_point_of_too_few_requests_is_not_valid():
    """200 requests at least: a p99 of fewer is a guess, however fast each was."""
    from runner.load import MIN_REQUESTS, Served

    n = MIN_REQUESTS - 50
    arrivals = [0.01 * (k + 1) for k in range(n)]
    served = Served(arrivals, arrivals, [a + 1e-4 for a in arrivals], [False] * n, requests=n)
    point = judge(100.0, served, p99_ms=None)
    assert not point.valid and f"only {n} requests" in point.why


def test_a_moderate_overload_drops_its_queue_at_the_deadline(virtual_clock):
    """1.5x capacity for 1 s: about 100 requests wait at the deadline, half a second of work,
    past the share of the deadline a point may drain (a far looser share passed the 5x test)."""
    served = open_loop(poisson_arrivals(300.0, 1.0, seed=3), [Busy(0.005)], deadline_s=1.0)
    assert served.dropped > 50
