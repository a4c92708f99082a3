"""Looking inside a run: NVTX ranges for the phases, a profiler trace from a separate untimed
pass, and the per-request timestamps of the latency pass as CSV or JSON."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from runner.inputs import Size
from runner.lanes import Lanes
from runner.protocol import serve
from runner.record import write_atomic

TIMESTAMP_COLUMNS = (
    "request", "lane", "enqueue_start_us", "enqueue_end_us",
    "h2d_start_us", "h2d_end_us", "compute_end_us", "d2h_end_us",
)
# On the CPU the marks are around host copies, named as the latency figures name them there.
HOST_TIMESTAMP_COLUMNS = (*TIMESTAMP_COLUMNS[:4], "copy_in_start_us", "copy_in_end_us", "compute_end_us",
                          "copy_out_end_us")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """An NVTX range around one phase, for Nsight Systems; nothing without CUDA."""
    if torch.cuda.is_available():
        torch.cuda.nvtx.range_push(f"runner/{name}")
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()
    else:
        yield


def profile_schedule(lanes: Lanes, sources: Sequence[torch.Tensor], keys: Sequence[Size], requests: int,
                     path: Path) -> Path:
    """Run `requests` through the schedule under torch.profiler and write a Chrome trace
    (Perfetto opens it): each stream's copies and graph replays land on their own rows, each
    request is a labelled range on the host."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if lanes.is_cuda else [])
    n_lanes = len(lanes)
    # On the CPU there are no streams: a request's range is named by its number alone.
    names = [f"request {j} (stream {j % n_lanes})" if lanes.is_cuda else f"request {j}" for j in range(requests)]
    with profile(activities=activities) as prof, serve(lanes, sources, keys) as session:
        for j in range(requests):
            with record_function(names[j]):
                session.launch(session.acquire(j))
        lanes.synchronize()
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    return path


def timestamp_rows(latency: dict, columns: tuple[str, ...] = TIMESTAMP_COLUMNS) -> list[dict]:
    rows = []
    for j, (device, host, lane) in enumerate(zip(latency["device_us"], latency["host_us"], latency["lane"], strict=True)):
        rows.append(dict(zip(columns, (j, lane, *host, *device), strict=True)))
    # With buckets, each request's (its latency per bucket is in the figures; the rows had no
    # way to be grouped so).
    for row, bucket in zip(rows, latency.get("bucket") or [], strict=False):
        row["bucket"] = bucket
    return rows


def write_timestamps(latency: dict, fmt: str, out_dir: Path, is_cuda: bool = True) -> Path:
    """Per request of the latency pass: host enqueue start/end (host clock) and the device
    marks (CUDA events; on the CPU, host-clock marks around the copies and the forward), all
    in microseconds since one origin taken just before the pass."""
    columns = TIMESTAMP_COLUMNS if is_cuda else HOST_TIMESTAMP_COLUMNS
    rows = timestamp_rows(latency, columns)
    if "bucket" in latency:
        columns = (*columns, "bucket")
    if fmt == "json":
        path = out_dir / "timestamps.json"
        clocks = ("enqueue_* from the host clock; h2d/compute/d2h from CUDA events" if is_cuda else
                  "all from the host clock; copy_in_* and copy_out_end mark the host copies in and out")
        doc = {
            "unit": "microseconds since the start of the latency pass",
            "clocks": clocks + " (NaN written as null)",
            "columns": list(columns),
            "rows": [[None if isinstance(v, float) and v != v else v for v in r.values()] for r in rows],
        }
        write_atomic(path, json.dumps(doc) + "\n")
        return path
    path = out_dir / "timestamps.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(v, float) and v != v else (f"{v:.3f}" if isinstance(v, float) else v)) for k, v in r.items()})
    write_atomic(path, buffer.getvalue())
    return path
