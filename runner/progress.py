"""Where a job's measurement stands, told between passes and never inside one.

- On a terminal: one bar on stderr that fills with the measuring time against the budget and
  names the phase and the last figure (tqdm); the per-repeat log lines then go to the log file
  only, not to the console as well.
- Elsewhere (a log file, a pipe, a sweep's console.log): the plain log lines alone.
- Always: how long each phase took, for result.json (`measure_phases_s`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

from runner.trace import phase as nvtx_phase

log = logging.getLogger(__name__)

PROGRESS = {"progress": True}  # `extra=` for log records the bar stands for on a terminal
# A phase that has run this long (and this many times the budget) is said to be still running,
# and again as often: a forward that hung printed nothing for as long as it hung (walk).
WATCH_MIN_S = 30.0
WATCH_FACTOR = 5.0


class _NotOnTerminal(logging.Filter):
    """Drops the records the bar stands for; before any other record, clears the bar, so the
    line is not written over it (the next redraw brings the bar back under it)."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: Any = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "progress", False):
            return False
        if self.bar is not None:
            self.bar.clear()
        return True


def _console_handlers() -> list[logging.Handler]:
    """Handlers that write to a terminal (Hydra's console handler in a terminal session)."""
    found = []
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.FileHandler) or stream is None:
            continue
        with contextlib.suppress(Exception):
            if stream.isatty():
                found.append(handler)
    return found


@contextlib.contextmanager
def failing_in(phase: str) -> Iterator[None]:
    """Mark an exception raised inside with `phase` (the innermost one, if phases nest): a
    job's failure then says where it happened, not only what."""
    try:
        yield
    except (Exception, SystemExit) as exc:
        if getattr(exc, "runner_phase", None) is None:
            try:
                exc.runner_phase = phase  # type: ignore[attr-defined]
            except AttributeError:  # an exception type with __slots__: then unnamed
                pass
        raise


class Progress:
    def __init__(self, budget_s: float, bar: Optional[bool] = None) -> None:
        self.budget_s = budget_s
        self.start = time.perf_counter()
        self.phases_s: dict[str, float] = {}
        self._bar: Any = None
        self._filter = _NotOnTerminal()
        self._filtered: list[logging.Handler] = []
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            self._open_bar()
        # One thread for the whole measurement, asleep until the phase running then would reach
        # the limit: no wake-ups in normal passes, nothing made or started per phase.
        self._current: Optional[tuple[str, float, float]] = None  # label, began, how long it may run unsaid
        self._closed = False
        self._poke = threading.Event()  # set to wake the watch early: closed, or a deadline before its own
        self._asleep_until = 0.0  # when the watch wakes next (perf_counter)
        threading.Thread(target=self._watch, name="runner-watch", daemon=True).start()

    def _watch(self) -> None:
        wait = self._limit_s()
        while True:
            self._asleep_until = time.perf_counter() + wait
            self._poke.wait(wait)
            self._poke.clear()
            if self._closed:
                return
            current = self._current
            if current is None:
                wait = self._limit_s()
                continue
            label, begin, limit = current
            ran = time.perf_counter() - begin
            if ran >= limit:
                log.warning("the phase '%s' has run %.0f s (measure.budget_s=%g) and goes on: a forward may be slow "
                            "or stuck; Ctrl-C ends the job and keeps what finished", label, ran, self.budget_s)
                wait = limit
            else:
                wait = limit - ran

    def _limit_s(self, expected_s: float = 0.0) -> float:
        """How long a phase runs before it is said to go on: WATCH_FACTOR budgets (WATCH_MIN_S at
        least), or twice what it is expected to take (a server point of load.duration_s=100 is
        long by design, and said before it runs)."""
        return max(WATCH_MIN_S, WATCH_FACTOR * self.budget_s, 2.0 * expected_s)

    def _open_bar(self) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # plain lines only
            return
        tqdm.monitor_interval = 0  # no monitor thread waking up during the timed passes
        self._bar = tqdm(total=round(self.budget_s, 1), unit="s", leave=False, dynamic_ncols=True, file=sys.stderr,
                         bar_format="measuring {bar} {n:.1f}/{total:g} s budget | {desc}")
        self._filter.bar = self._bar
        self._filtered = _console_handlers()
        for handler in self._filtered:
            handler.addFilter(self._filter)

    @property
    def has_bar(self) -> bool:
        return self._bar is not None

    @contextlib.contextmanager
    def phase(self, name: str, label: Optional[str] = None, expected_s: float = 0.0) -> Iterator[None]:
        """Time one phase (summed when it comes back) under an NVTX range of the same name;
        `expected_s`: how long it is meant to run (the watch allows twice that)."""
        self.show(label or name)
        begin = time.perf_counter()
        limit = self._limit_s(expected_s)
        self._current = (label or name, begin, limit)
        if begin + limit < self._asleep_until:
            # The watch sleeps past this phase's deadline (after a long server point): woken to
            # reckon with it. Passes of equal limits never get here: no wake-up as a pass starts.
            self._poke.set()
        try:
            with failing_in(name), nvtx_phase(label or name):
                yield
        finally:
            self._current = None
            self.phases_s[name] = self.phases_s.get(name, 0.0) + time.perf_counter() - begin
            self.show(label or name)

    def show(self, text: str) -> None:
        """Redraw the bar (if any) with the time spent so far and `text`."""
        if self._bar is None:
            return
        self._bar.n = round(min(time.perf_counter() - self.start, 10 * self.budget_s), 1)
        self._bar.set_description_str(text, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._closed = True
        self._poke.set()
        for handler in self._filtered:
            handler.removeFilter(self._filter)
        self._filtered = []
        self._filter.bar = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
