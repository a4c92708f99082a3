"""Load like production: open-loop arrivals, latency under load, and the highest rate that
keeps its p99 under a bound (MLPerf LoadGen's Server and SingleStream scenarios).

Server: requests arrive on a Poisson process drawn ahead of the pass from the seed, whatever
the completions do (open loop). The submitting loop issues each request at its arrival time to
the first free server (a slot of the runner's lanes, or the eager baseline's one synchronous
server), and queues it while every server is busy. Completion is seen on the host: a slot's
`done` event has completed (polled between issues), or the synchronous call has returned.
Latency is completion minus arrival, so it includes queueing.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

perf_counter = time.perf_counter
MIN_REQUESTS = 200  # a point's p99 needs this many requests at least
# Arrival times a server point draws before it starts (8 bytes each, and a record per request
# served): load.rate=1e8 grew a job to 12 GB in a minute; a search's doubling rates at a long
# load.duration_s drew 10 million in 1.5 s and about 800 MB.
MAX_ARRIVALS = 10_000_000


def least_length_s(rate: float, duration_s: float) -> float:
    """How long a server point at `rate` runs at least: `duration_s`, and MIN_REQUESTS arrivals."""
    return max(duration_s, MIN_REQUESTS / rate)


def search_length_s(rate: float, duration_s: float) -> float:
    """How long a rate search's point at `rate` draws arrivals for: its least length, cut to
    MAX_ARRIVALS arrivals (a fixed rate past them is refused; a search cannot foresee its rates)."""
    return min(least_length_s(rate, duration_s), MAX_ARRIVALS / rate)


SLEEP_AHEAD_S = 0.002  # gaps longer than this are slept through (less 1 ms), shorter ones spun


def poisson_arrivals(rate: float, duration_s: float, seed: int, min_requests: int = 1) -> list[float]:
    """Arrival times (s from the start) of a Poisson process at `rate` per second over
    `duration_s`, at least `min_requests` of them. Reproducible from `seed`; one seed at two
    rates gives the same gaps scaled by the rates' ratio (each gap is one uniform draw's
    -log(1 - u) / rate), so a search's points differ in their rate alone."""
    draw = random.Random(seed)
    times, t = [], 0.0
    while True:
        t += draw.expovariate(rate)
        if t > duration_s and len(times) >= min_requests:
            return times
        times.append(t)


class Server:
    """One place a request can run: `start(j)` issues request j; `done()` says whether the
    last one has finished. A synchronous server has finished when `start` returns."""

    sync = False

    def start(self, j: int) -> None:
        raise NotImplementedError

    def done(self) -> bool:
        return True


@dataclass
class Served:
    """What an open-loop pass saw, per request: host times in seconds since its start."""

    arrival_s: list[float]
    issue_s: list[float]
    done_s: list[float]
    queued: list[bool]  # found every server busy when it arrived
    requests: int = 0
    dropped: int = 0  # admitted, still waiting for a server at the deadline, and not served

    def latency_us(self) -> list[float]:
        return [(d - a) * 1e6 for a, d in zip(self.arrival_s, self.done_s, strict=True)]

    def queue_us(self) -> list[float]:
        return [(i - a) * 1e6 for a, i in zip(self.arrival_s, self.issue_s, strict=True)]

    def slack_us(self) -> list[float]:
        """How late each request that found a free server was issued: the loop's timer slack."""
        return [(i - a) * 1e6 for a, i, q in zip(self.arrival_s, self.issue_s, self.queued, strict=True) if not q]


# At the deadline, requests still waiting for a server are dropped (and counted) when serving
# them would take more than this share of the deadline at the servers' capacity (all servers
# busy, each request taking the mean issue-to-completion time seen so far): an overloaded rate's
# queue grows without bound (at 6x its capacity, a 1 s point queued 5 s of work), a healthy
# one's holds a few requests, which are served.
DRAIN_SHARE = 0.1


def _drain_s(issue: list[float], done: list[float], issued: int, waiting: int, servers: int) -> float:
    """Seconds to serve `waiting` requests with every server busy, each taking the mean
    issue-to-completion time of the `issued` ones (first in, first issued) that completed;
    never, when none has. Read once, at the deadline, and only with a queue: nothing in the
    loop keeps it."""
    times = [done[j] - issue[j] for j in range(issued) if done[j]]
    return waiting * sum(times) / (servers * len(times)) if times else math.inf


def open_loop(arrivals_s: Sequence[float], servers: Sequence[Server], deadline_s: float = math.inf) -> Served:
    """Issue request j at arrivals_s[j] to the first free server (in `servers` order), queue
    it while all are busy. Stops admitting after `deadline_s` from the start; what was admitted
    finishes, unless its queue is too long to drain (DRAIN_SHARE), when the waiting requests
    are dropped."""
    n = len(arrivals_s)
    issue, done, queued = [0.0] * n, [0.0] * n, [False] * n
    free = list(range(len(servers)))  # ascending: the first free server is free[0]
    busy: dict[int, int] = {}  # server -> request in flight
    waiting: deque[int] = deque()
    start = perf_counter()
    due = [start + a for a in arrivals_s]
    end = start + deadline_s
    # A synchronous server holds the loop while it serves: requests that came due then, with
    # every server busy, were queued behind it, however late the loop admits them.
    blocked_until = -math.inf
    i = completed = dropped = 0
    closed = False  # the deadline has passed
    while completed < i or i < n:
        now = perf_counter()
        if busy:
            for s, j in list(busy.items()):
                if servers[s].done():
                    # Its own clock reading: one taken before the poll of the servers ahead of
                    # it had stamped a completion seen later (latency understated by a sweep).
                    done[j] = perf_counter()
                    del busy[s]
                    bisect.insort(free, s)
                    completed += 1
        while i < n and due[i] <= now and due[i] <= end:  # seen late or not, due by the deadline
            queued[i] = not free or bool(waiting) or due[i] < blocked_until
            waiting.append(i)
            i += 1
        if now >= end and not closed:
            closed, n = True, i  # the deadline: no more admissions
            if waiting and _drain_s(issue, done, i - len(waiting), len(waiting), len(servers)) > DRAIN_SHARE * deadline_s:
                # The waiting requests are the admitted ones' tail (first in, first issued).
                dropped = len(waiting)
                waiting.clear()
                i = n = n - dropped
        while waiting and free:
            j = waiting.popleft()
            s = free.pop(0)
            server = servers[s]
            issue[j] = perf_counter()
            server.start(j)
            if server.sync:
                done[j] = perf_counter()
                if not free:
                    blocked_until = done[j]
                bisect.insort(free, s)
                completed += 1
                break  # the clock moved while it served: admit what came due, mind the deadline
            busy[s] = j
        if not busy and not waiting and i < n:
            gap = due[i] - perf_counter()
            if gap > SLEEP_AHEAD_S:
                time.sleep(gap - 0.001)
    return Served(
        arrival_s=list(arrivals_s[:n]),
        issue_s=[t - start for t in issue[:n]],
        done_s=[t - start for t in done[:n]],
        queued=queued[:n],
        requests=n,
        dropped=dropped,
    )


def _percentiles(values: list[float]) -> dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


@dataclass
class Point:
    """One server run at one offered rate."""

    rate: float  # asked, requests/s
    offered: float  # as drawn: requests / last arrival
    achieved: float  # offered / (1 + how fast the requests' wait grew over the run): below it when they fell behind
    requests: int
    latency_us: dict[str, Optional[float]]
    queue_us: dict[str, Optional[float]]
    slack_us: dict[str, Optional[float]]
    valid: bool
    why: str  # what made it invalid ("" when valid)
    dropped: int = 0  # requests still queued at the deadline, not served (an overloaded rate)
    service_min_us: Optional[float] = None  # the fastest request's issue to completion: no queue in it

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def offered_rate(arrival_s: Sequence[float]) -> float:
    """The rate the arrivals came at: (n - 1) / the last one's time. The time to the nth of a
    Poisson process's arrivals is a sum of n gaps, so n over it reads high by 1 / (n - 1) on
    average (0.5% at 200 arrivals, 5% at 20); 0 for fewer than two."""
    n = len(arrival_s)
    return (n - 1) / arrival_s[-1] if n > 1 and arrival_s[-1] > 0 else 0.0


def at_rate(arrival_s: list[float], rate: float) -> list[float]:
    """The arrivals stretched or squeezed so that they come at `rate` exactly (offered_rate):
    one draw shared by a search's points offers every point its rate times the same factor
    (0.96 at seed 0, 0.85 at seed 2), which would have read as a rate that much higher in every
    run; a draw per point strays as far, at random. The gaps keep their draw's shape."""
    drawn = offered_rate(arrival_s)
    if drawn <= 0:
        return list(arrival_s)
    stretch = drawn / rate
    return [t * stretch for t in arrival_s]


def judge(rate: float, served: Served, p99_ms: Optional[float]) -> Point:
    """LoadGen's valid Server run: the achieved rate within 1% of the offered one, and the p99
    latency within the bound (if one is set)."""
    n = served.requests
    offered = offered_rate(served.arrival_s[:n])
    achieved = offered / (1.0 + max(0.0, _wait_growth(served)))
    latency = _percentiles(served.latency_us())
    why = []
    if n < MIN_REQUESTS:
        why.append(f"only {n} requests")
    if offered and achieved < 0.99 * offered:
        why.append(f"achieved {achieved:,.0f}/s of {offered:,.0f}/s offered")
    if served.dropped:
        why.append(f"{served.dropped:,} requests still queued when its time ran out, not served")
    if p99_ms is not None and latency["p99"] is not None and latency["p99"] > p99_ms * 1e3:
        why.append(f"p99 {_past(latency['p99'] / 1e3, p99_ms)} ms > {p99_ms:g} ms")
    fastest = min((d - i for i, d in zip(served.issue_s[:n], served.done_s[:n], strict=True)), default=None)
    return Point(rate, offered, achieved, n, latency, _percentiles(served.queue_us()),
                 _percentiles(served.slack_us()), not why, "; ".join(why), served.dropped,
                 None if fastest is None else fastest * 1e6)


def _past(value: float, bound: float) -> str:
    """`value` to 3 significant digits, or as many more as show it past `bound` (1,003.8 us
    against 1 ms had read "p99 1 ms > 1 ms")."""
    for digits in range(3, 10):
        text = f"{value:.{digits}g}"
        if float(text) > bound:
            return text
    return f"{value:.10g}"


def _wait_growth(served: Served) -> float:
    """Seconds of wait (issue - arrival) gained per second of the run: the least-squares slope
    over every request. A server that keeps up holds its queue (0, give or take); one that
    falls behind by 2% gains 0.02 s a second. (Taken from the last request alone, n / its issue
    time, one request that happened to wait 1% of the run had made a point invalid: a fifth of
    the points at 75% of capacity.)"""
    arrivals, waits = served.arrival_s, [i - a for a, i in zip(served.arrival_s, served.issue_s, strict=True)]
    if len(arrivals) < 3:
        return (waits[-1] / arrivals[-1]) if arrivals and arrivals[-1] > 0 else 0.0
    mean_a, mean_w = statistics.fmean(arrivals), statistics.fmean(waits)
    spread = sum((a - mean_a) ** 2 for a in arrivals)
    return sum((a - mean_a) * (w - mean_w) for a, w in zip(arrivals, waits, strict=True)) / spread if spread else 0.0


@dataclass
class Search:
    """The highest valid rate: doubled until a rate fails, then bisected to `resolution`."""

    best: Optional[float] = None  # the highest rate found valid
    failed: Optional[float] = None  # the lowest rate found invalid
    points: list[Point] = field(default_factory=list)
    stopped_by: str = ""  # "resolution", "budget", "floor", "bound" (see past_one_request), "interrupted" or "failed"


# How a search that did not reach its resolution ended: its figure is a bound, not a bracket.
CUT_SHORT = ("budget", "interrupted", "failed")


def past_one_request(point: Point, p99_ms: Optional[float]) -> bool:
    """Whether the bound lies below one request's own latency: even the point's fastest request,
    from its issue to its completion (no host queue in that), took longer than the bound, so no
    rate, however low, can bring the p99 under it (a lower rate only shortens the queue). A
    search had halved down to 299/s for a 10 us bound on a 62 us model, then advised a larger
    budget. (The median request's latency with little queueing had been the test: on a GPU's
    lanes at half their capacity the queue was never that short.)"""
    return p99_ms is not None and point.service_min_us is not None and point.service_min_us > p99_ms * 1e3


def search_rate(run: Callable[[float], Point], start: float, resolution: float, deadline: float,
                floor: float = 1.0, least_s: Callable[[float], float] = lambda rate: 0.0,
                found: Optional[Search] = None, hopeless: Callable[[Point], bool] = lambda point: False) -> Search:
    """Find the highest rate `run` judges valid, starting at `start` requests/s. The first point
    runs whatever the time (a search measures one point at least, as a pass runs its least); a
    point after it starts only when its least length (`least_s(rate)`: its arrivals take that
    long at the least) fits before the deadline: halving toward a low rate makes points long.
    `found`, where given, is filled as the points finish (a Ctrl-C keeps those). Before any rate
    held, two failed points in a row that `hopeless` says no lower rate can mend end it ("bound")."""
    found = found if found is not None else Search()
    rate = start
    while True:
        if found.points and perf_counter() + least_s(rate) > deadline:
            found.stopped_by = "budget"
            return found
        point = run(rate)
        found.points.append(point)
        if point.valid:
            found.best = rate if found.best is None else max(found.best, rate)
        else:
            found.failed = rate if found.failed is None else min(found.failed, rate)
            # Two in a row, the second at half the rate: on a GPU's lanes a request that overlaps
            # others' runs slower, and at half the rate fewer do (review).
            if found.best is None and hopeless(point) and len(found.points) >= 2 and hopeless(found.points[-2]):
                found.stopped_by = "bound"
                return found
        if found.best is not None and found.failed is not None:
            if (found.failed - found.best) / found.best <= resolution:
                found.stopped_by = "resolution"
                return found
            rate = (found.best + found.failed) / 2
        elif found.best is not None:
            rate = found.best * 2
        else:
            rate = found.failed / 2
            if rate < floor:
                # No lower rate to confirm a hopeless point with: said as the bound it is (review).
                found.stopped_by = "bound" if hopeless(point) else "floor"
                return found
