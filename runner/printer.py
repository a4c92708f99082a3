"""A result -> a short human table. Knows nothing about how the figures were measured."""

from __future__ import annotations

from typing import Any, Optional

from runner.load import CUT_SHORT


def rate_text(value: float) -> str:
    """A rate for people: thousands separated, and 3 digits below 10 (a slow model's 0.48
    requests/s is not "0")."""
    return format(value, ".3g") if 0 < abs(value) < 10 else format(value, ",.0f")


def _num(value: Optional[float], fmt: str = ",.0f") -> str:
    if value is not None and fmt == ",.0f":
        return rate_text(value)
    return "-" if value is None else format(value, fmt)


def search_ratio_known(runner_cut: bool, baseline_cut: bool) -> str:
    """What a ratio of two rate searches' highest rates is known to be: a search the budget cut
    found a floor (a bracket at best), so the ratio is a bound, or unknown."""
    if runner_cut and baseline_cut:
        return " (not known: both searches were cut by the budget, each rate a floor)"
    if baseline_cut:
        return " (at most: the baseline's search was cut by the budget, its rate a floor)"
    if runner_cut:
        return " (at least: the runner's search was cut by the budget, its rate a floor)"
    return ""


def _noise(f: dict[str, Any], name: str) -> str:
    """What the repeats say of a ratio's noise: within it, or unknown (one pass of a side)."""
    within = f.get(f"{name}_within_noise")
    return " (within noise)" if within else " (noise unknown: one pass of a side)" if within is None else ""


def _us_or_dash(value: Optional[float]) -> str:
    return "-" if value is None else _us(value)


def _us(value: float) -> str:
    """Microseconds in at most 10 characters: 1 decimal below 100 ms, whole numbers above."""
    return f"{value:,.1f}" if value < 1e5 else f"{value:,.0f}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1%}"


def _mib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _device_name(result: dict[str, Any]) -> str:
    env = result.get("env") or {}
    gpu = env.get("gpu") or {}
    device = (result.get("effective") or {}).get("device", "?")
    return f"{gpu['name']} ({device})" if gpu.get("name") else device


def _load_lines(load: Optional[dict[str, Any]]) -> list[str]:
    if not load:
        return []
    lines = []
    if load["scenario"] == "single_stream":
        lines.append(f"{'single stream latency (us)':28}{'p50':>11}{'p90':>11}{'p99':>11}{'max':>11}")
        for label, key in (("runner", "runner"), ("baseline (eager)", "baseline")):
            s = load.get(key)
            if s:
                lines.append("  " + f"{label:26}" + "".join(f"{_us(s[q]):>11}" for q in ("p50", "p90", "p99", "max")))
        return lines
    bound = f", p99 <= {load['p99_ms']:g} ms" if load.get("p99_ms") else ""
    lines.append(f"server (open loop, Poisson arrivals{bound}):")
    for label, key in (("runner", "runner"), ("baseline (eager)", "baseline")):
        part = load.get(key)
        if not part:
            continue
        if load["rate"] == "max":
            best = part.get("max_rate")
            stopped = part.get("stopped_by")
            found = f"highest rate {rate_text(best)} requests/s" if best else \
                "no rate can hold the bound" if stopped == "bound" else \
                "no rate tried held the bound" if part.get("points") else \
                f"not measured: {stopped} before its first point" if stopped in ("interrupted", "failed") else \
                "not measured: the budget ran out before its first point"
            lines.append(f"  {label}: {found} (search: {stopped}, {len(part['points'])} point{'s' if len(part['points']) != 1 else ''})")
        else:
            lines.append(f"  {label}: {'valid' if part.get('valid') else 'INVALID'} at {rate_text(part['rate'])} requests/s"
                         if part.get("points") else f"  {label}: not measured")
        if not part.get("points"):
            continue
        heads = ("rate/s", "offered", "achieved", "p50 us", "p99 us", "queue p99", "slack p99")
        rows = []
        for p in sorted(part["points"], key=lambda p: p["rate"]):
            lat, queue, slack = p["latency_us"], p["queue_us"], p.get("slack_us") or {}
            # Rates as everywhere (a slow model's 0.48/s is not "0"); a latency no request gave is "-", not 0.
            rows.append(((_num(p["rate"]), _num(p["offered"]), _num(p["achieved"]), _us_or_dash(lat["p50"]),
                          _us_or_dash(lat["p99"]), _us_or_dash(queue["p99"]), _us_or_dash(slack.get("p99"))),
                         "valid" if p["valid"] else p["why"]))
        # Each column as wide as its widest cell and two spaces (10,000,000/s had run into its
        # neighbour at a fixed width).
        widths = [max(9 if i < 3 else 10, len(head), *(len(cells[i]) for cells, _ in rows)) + 1
                  for i, head in enumerate(heads)]
        lines.append("    " + "".join(f"{head:>{w}}" for head, w in zip(heads, widths, strict=True)) + "  verdict")
        lines += ["    " + "".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True)) + f"  {verdict}"
                  for cells, verdict in rows]
    runner, baseline = load.get("runner") or {}, load.get("baseline") or {}
    if runner.get("max_rate") and baseline.get("max_rate"):
        known = search_ratio_known(runner.get("stopped_by") in CUT_SHORT, baseline.get("stopped_by") in CUT_SHORT)
        lines.append(f"  the runner holds {runner['max_rate'] / baseline['max_rate']:.2f}x the baseline's rate under the "
                     f"bound{known}")
    return lines


def render(result: dict[str, Any]) -> str:
    f = result.get("figures") or {}
    eff = result.get("effective") or {}
    dtype = f"{eff['dtype']}{'+tf32' if eff.get('tf32') and eff['dtype'] == 'fp32' else ''}" if eff.get("dtype") else None
    # A job that failed before it knew its mode or settings shows what it knew, not "None | ?".
    known = [str(x) for x in (result.get("model"), result.get("mode"), dtype, _device_name(result)) if x and x != "?"]
    lines = [f"runner: {' | '.join(known) or '?'}"]
    for notice in result.get("notices") or []:
        lines.append(f"note: {notice}")
    status = result.get("status", "?")
    reason = f": {result['reason']}" if result.get("reason") else ""
    lines.append(f"status: {status.upper() if status != 'ok' else status}{reason}")
    if f.get("check_requests") is not None:  # null: no check ran (check=false)
        verdict = "match eager" if not f.get("check_mismatches") else "DIFFER from eager"
        counted = f"{f['check_mismatches']} of {f['check_requests']}" if f.get("check_mismatches") else f["check_requests"]
        err = f.get("check_max_rel_err")
        # None with requests that differ: an error past every number (NaN, inf, or a response of
        # another shape), which result.json cannot hold; the log above had said "inf".
        shown = format(err, ".1e") if err is not None else ("inf" if f.get("check_mismatches") else "-")
        lines.append(
            f"check: {counted} requests {verdict} "
            f"(max rel err {shown}, tolerance {f['check_tolerance_rel']:.0e})"
        )
    if f.get("throughput_requests_per_s") is not None:
        lines.append(f"{'':24}{'requests/s':>12}{'samples/s':>14}{'cv':>8}")
        for label, key in (("runner", "throughput"), ("baseline (eager)", "baseline"), ("ceiling (device only)", "ceiling")):
            if f.get(f"{key}_requests_per_s") is not None:
                lines.append(
                    f"  {label:22}{_num(f[f'{key}_requests_per_s']):>12}"
                    f"{_num(f[f'{key}_samples_per_s']):>14}{_pct(f.get(f'{key}_cv')):>8}"
                )
        ratios = []
        if f.get("speedup_vs_baseline") is not None:
            ratios.append(f"speedup vs baseline {f['speedup_vs_baseline']:.2f}x{_noise(f, 'speedup_vs_baseline')}")
        if f.get("efficiency_vs_ceiling") is not None:
            ratios.append(f"efficiency vs ceiling {f['efficiency_vs_ceiling']:.0%}{_noise(f, 'efficiency_vs_ceiling')}")
        if ratios:
            lines.append("  " + "   ".join(ratios))
    on_device = f.get("latency_clock") == "cuda events"
    # Off CUDA one request runs at a time on the submitting thread: no slot to wait for, a copy
    # only in copy staging, and the "launch" is the rest of the request: the whole request is
    # the copy and the launch, host_enqueue_us (the method says so; the console's rows had named
    # a GPU's steps: "launch 1,484.8 us").
    if str(eff.get("device") or "").partition(":")[0] in ("cuda", ""):
        host_rows = [("host: wait for slot", "host_wait_us"), ("host: copy request", "host_copy_us"),
                     ("host: launch", "host_launch_us")]
    else:
        host_rows = [("host: copy request", "host_copy_us")] if eff.get("staging") == "copy" else []
        host_rows.append(("host: whole request", "host_enqueue_us"))
    rows = [
        # On a GPU the events time the request on its stream, from its H2D copy's start: its wait
        # behind the stream's previous request and the host's enqueue are not in it.
        ("device: H2D to D2H" if on_device else "end to end", "latency_e2e_us"),
        ("  H2D", "latency_h2d_us"),
        ("  copy in", "latency_copy_in_us"),
        ("  compute", "latency_compute_us"),
        ("  D2H", "latency_d2h_us"),
        ("  copy out", "latency_copy_out_us"),
        *host_rows,
        ("baseline, host clock" if on_device else "baseline request", "baseline_latency_us"),
    ]
    rows = [(label, f[key]) for label, key in rows if f.get(key)]
    rows += [(f"bucket {b} ({v['requests']} req)", v["latency_e2e_us"])
             for b, v in (f.get("buckets") or {}).items() if v.get("latency_e2e_us")]
    if rows:
        heading = "latency (us, host clock)" if f.get("latency_clock") == "host" else "latency (us)"
        lines.append(f"{heading:24}{'p50':>11}{'p90':>11}{'p99':>11}{'max':>11}")
        for label, s in rows:
            lines.append("  " + f"{label:22}" + "".join(f"{_us(s[q]):>11}" for q in ("p50", "p90", "p99", "max")))
    if f.get("padding_waste") is not None:
        eager = not (result.get("effective") or {}).get("graph") and f.get("padding_waste_in_graphs") is not None
        why = (f"eager ran each request at its real size; graphs would pad {f['padding_waste_in_graphs']:.1%} on this "
               "plan" if eager and not f["padding_waste"] else "padded / real elements")
        lines.append(f"buckets: {f['samples_per_request']:.1f} real samples per request, padding waste "
                     f"{f['padding_waste']:.1%} ({why})")
    lines += _load_lines(f.get("load"))
    setup = []
    if f.get("compile_time_cold_ms") is not None:
        cold = "cold" if f.get("compile_cache_was_empty") else "first, cache not empty"
        setup.append(f"compile {f['compile_time_cold_ms']:,.0f} ms ({cold}), {f['compile_time_warm_ms']:,.0f} ms warm")
        if f.get("compile_other_sizes"):
            setup.append(f"{f['compile_time_other_sizes_ms']:,.0f} ms for {f['compile_other_sizes']} other request "
                         "sizes (torch.compile's recompiles, before the check)")
    if f.get("capture_time_ms") is not None:
        setup.append(f"capture {f['capture_time_ms']:.0f} ms")
    if f.get("warmup_time_ms") is not None:
        # None ran (skipped, or measure.warmup_ms=0): not "warm-up 0 ms" beside "warm-up skipped".
        ran = f["warmup_time_ms"] > 0 or "warmup" in (f.get("measure_phases_s") or {})
        setup.append(f"warm-up {f['warmup_time_ms']:.0f} ms" if ran else "no warm-up")
    if f.get("measure_time_s") is not None:
        stop = {"stdrel": "stable", "repeats": "at measure.repeats", "budget": "budget reached"}.get(
            f.get("repeats_stop_reason"))
        count = len(f.get("throughput_requests_per_s_repeats") or [])
        steady = f.get("throughput_steady_from_repeat") or 1
        how = [f"{count} repeat{'s' if count != 1 else ''}"] + ([stop] if stop else []) + \
            ([f"figures from repeat {steady}"] if steady > 1 else [])
        setup.append(f"measured {f['measure_time_s']:.1f} s ({', '.join(how)})" if stop or steady > 1 else
                     f"measured {f['measure_time_s']:.1f} s")
    if f.get("peak_device_memory_bytes") is not None:
        setup.append(f"peak device memory {_mib(f['peak_device_memory_bytes'])}")
    if f.get("graph_pool_bytes") is not None:
        setup.append(f"graph pools {_mib(f['graph_pool_bytes'])}")
    if setup:
        lines.append("setup: " + ", ".join(setup))
    # What else the job wrote beside result.json (a profile's trace, timestamps, the load curve):
    # named only under `files` in the record before (walk).
    written = [str(name) for name in (result.get("files") or {}).values() if name]
    if written:
        lines.append("files: " + ", ".join(written) + " (in the job's folder)")
    for warning in result.get("warnings") or []:
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)
