"""Does a config's rate depend on how long a throughput pass runs? For each config, builds the
runner's lanes once, then runs rounds of passes of each length (in a rotated order, the host
canary timed before each), and one long pass timed turn by turn: the rate over each tenth of
it. If the rate falls as a pass goes on, a budget with longer passes reads a lower figure for
the same config. Prints figures; asserts nothing.

    python benchmarks/pass_length.py [--lengths-ms 100 200 500 1000 2000] [--rounds 3] [--] [config...]

A config is a comma-separated override list, e.g. streams=8,graph=true.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from time import perf_counter

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from host_noise import lanes_for  # noqa: E402 - beside this script
from hydra import initialize_config_module  # noqa: E402

from runner import schedule  # noqa: E402
from runner.environment import canary_s  # noqa: E402
from runner.protocol import serve  # noqa: E402
from runner.schedule import no_gc  # noqa: E402
from runner.schema import register  # noqa: E402

DEFAULT = ["streams=8,graph=true", "streams=2,graph=true", "streams=4,graph=true"]


def timed_turns(lanes, sources, keys, seconds: float) -> list[tuple[int, float]]:
    """The throughput loop for `seconds`, with the clock read after every turn of the ring (as
    schedule.throughput_pass reads it): (requests so far, seconds since the start) per turn."""
    marks: list[tuple[int, float]] = []
    with no_gc(), serve(lanes, sources, keys) as session:
        acquire, launch, turn = session.acquire, session.launch, session.size
        j, start = 0, perf_counter()
        end = start + seconds
        while True:
            for k in range(j, j + turn):
                launch(acquire(k))
            j += turn
            now = perf_counter()
            marks.append((j, now - start))
            if now >= end:
                break
        lanes.synchronize()
    return marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths-ms", type=float, nargs="+", default=[100, 200, 500, 1000, 2000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-ms", type=float, default=2000, help="the pass timed turn by turn")
    parser.add_argument("configs", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    register()
    with initialize_config_module(version_base="1.3", config_module="runner.configs"):
        for config in args.configs:
            workload, lanes = lanes_for(config)
            sources, keys = workload.sources, workload.keys
            lengths = [ms / 1e3 for ms in args.lengths_ms]
            rates: dict[float, list[float]] = {s: [] for s in lengths}
            speeds: dict[float, list[float]] = {s: [] for s in lengths}
            with torch.no_grad():
                schedule.throughput_pass(lanes, sources, keys, 1, 0.3, 0.3)  # warm-up
                for r in range(args.rounds):
                    order = lengths[r % len(lengths):] + lengths[: r % len(lengths)]
                    for seconds in order:
                        speeds[seconds].append(1 / canary_s())
                        n, s = schedule.throughput_pass(lanes, sources, keys, 1, seconds, seconds)
                        rates[seconds].append(n / s)
                marks = timed_turns(lanes, sources, keys, args.profile_ms / 1e3)
            print(f"{config}: rate by pass length (median of {args.rounds}; each pass, then the canary's speed "
                  "relative to the config's median)", flush=True)
            all_speeds = statistics.median([v for vs in speeds.values() for v in vs])
            for seconds in lengths:
                print(f"  {seconds * 1e3:6.0f} ms  {statistics.median(rates[seconds]):>10,.0f}/s   "
                      + " ".join(f"{x:,.0f}" for x in rates[seconds])
                      + "   canary " + " ".join(f"{v / all_speeds:.2f}" for v in speeds[seconds]))
            first, last = statistics.median(rates[lengths[0]]), statistics.median(rates[lengths[-1]])
            print(f"  longest / shortest: {last / first:.3f}")
            # The profile: the rate over each tenth of the long pass.
            total_s = marks[-1][1]
            tenths, prev_n, prev_t, edge = [], 0, 0.0, total_s / 10
            for n, t in marks:
                if t >= edge or (n, t) == marks[-1]:
                    tenths.append((n - prev_n) / max(t - prev_t, 1e-9))
                    prev_n, prev_t = n, t
                    while edge <= t:  # a turn of a slow model can span several tenths
                        edge += total_s / 10
            print(f"  one {total_s:.1f} s pass, rate per tenth: " + " ".join(f"{x:,.0f}" for x in tenths), flush=True)
            lanes.synchronize()
            del lanes, workload, sources, keys  # the inputs too, before the next config's
            if torch.cuda.is_available():
                torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
