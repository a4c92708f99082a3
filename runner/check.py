"""Correctness before timing: the schedule's outputs for many concurrent requests with distinct
inputs, compared with eager outputs of the same model, request by request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from runner.build import Workload, check_chunk, launch_key, request_bytes
from runner.inputs import Size, buckets, draw_sizes, make_request, packed
from runner.lanes import Lanes
from runner.protocol import serve
from runner.spec import RunSpec

# Largest accepted ||out - ref|| / ||ref|| per request. A response computed from another
# request's input, or from overwritten intermediates, is off by O(1); rounding differences
# between graph and eager kernels stay far below these.
REL_TOLERANCE = {"fp32": 1e-5, "fp32+tf32": 5e-3, "bf16": 3e-2, "fp16": 5e-3}
COMPILED_TOLERANCE = {"fp32": 1e-4, "fp32+tf32": 1e-2, "bf16": 5e-2, "fp16": 1e-2}


def tolerance(spec: RunSpec) -> float:
    key = "fp32+tf32" if spec.dtype == "fp32" and spec.tf32 and spec.is_cuda else spec.dtype
    if spec.compile != "none":
        # Inductor fuses and reorders reductions: compiled outputs differ from eager by more than
        # graph replays of eager kernels do, still far below a response from another request.
        return COMPILED_TOLERANCE[key]
    return REL_TOLERANCE[key]


@dataclass
class CheckResult:
    requests: int
    mismatches: int
    max_rel_err: float
    tolerance_rel: float
    bad_requests: list[int] = field(default_factory=list)  # the first few, for the report
    requested: int = 0  # asked for; fewer were checked when the budget ran out
    seconds: Optional[float] = None  # how long the check took
    allowance_s: float = math.inf  # its share of the budget
    reused_references: int = 0  # references taken from the build's probe, not forwarded again
    # On the first mismatch: how far a second eager forward of that request (after one of
    # another) is from its reference (0: eager repeats itself; above the tolerance: the model
    # is not deterministic).
    eager_spread: Optional[float] = None
    eager_finite: Optional[bool] = None  # whether that request's eager output was finite
    nonfinite_requests: int = 0  # requests whose eager output held NaN or inf, matched in place
    # Requests unlike the first of their size, and those of them whose every leaf (a floating
    # one among them) came back the same as its: all of them means the answer does not follow
    # the input.
    distinct_requests: int = 0
    same_responses: int = 0
    padded_requests: int = 0  # requests launched in a larger bucket than their own size

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


# The check keeps one response per request size to tell whether the answers follow the inputs:
# for this many sizes at most (with sizes drawn at random most requests are a new size).
SAME_SIZES = 16


def serve_and_collect(lanes: Lanes, flats: list[torch.Tensor], keys: list[Size]) -> list[tuple[torch.Tensor, ...]]:
    """Serve requests (their bytes in their launch shapes' layouts) through the request
    protocol, every slot in flight; returns each response's leaves, copied off the slot.

    A slot's response is read when the slot is next acquired (its event has completed then)
    or at the end. In direct staging the check writes each request into its slot after
    acquiring it, as the server's deserializer would; in copy staging the protocol copies it.
    """
    responses: list[tuple[torch.Tensor, ...]] = [()] * len(flats)
    with serve(lanes, flats, keys) as session:
        acquire, launch, direct = session.acquire, session.launch, session.direct
        ring_size = session.size
        pending: list = [None] * ring_size  # (request, port) in flight in each slot
        for j in range(len(flats)):
            port = acquire(j)
            i = j % ring_size
            if pending[i] is not None:
                k, previous = pending[i]
                responses[k] = tuple(h.clone() for h in previous.host_out)
            if direct:
                port.host_in.copy_(flats[j])
            try:
                launch(port)
            except RuntimeError as exc:
                raise (port.changed_shape() or exc) from exc
            # An eager leaf of another shape than its buffer: a CUDA copy_ broadcasts it without
            # an error, and the response would then pass with its first row repeated.
            changed = port.changed_shape()
            if changed is not None:
                raise changed
            pending[i] = (j, port)
    for entry in pending:
        if entry is not None:
            k, port = entry
            responses[k] = tuple(h.clone() for h in port.host_out)
    return responses


# A leaf's error is also its worst sample's (row's) ||got - want|| over the leaf's root mean
# square row norm, divided by this: a whole-leaf norm dilutes one wrong sample among N by about
# sqrt(N) (one wrong row of 16,384 in bf16 had passed), while rounding spread evenly over the
# rows leaves the worst row within a few times the leaf's own error.
ROW_FACTOR = 4.0
ROW_VALUES = 16
# An integer or boolean leaf (ids, a class, a flag) must match exactly: where it does not, its
# error is this, past every tolerance (an id one off among 50,000 logits read 5e-6 by the norm).
EXACT_MISMATCH = 1.0


def relative_error(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> float:
    """The worst error over a response's leaves (see `compare`), on the real part only: a
    padded response is cut to the real request's shape (its first rows and positions)."""
    return compare(got, want)[0]


def compare(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> tuple[float, bool]:
    """The worst error over a response's leaves: for a floating leaf the larger of ||got - want||
    / ||want|| and its worst row's error over ROW_FACTOR; for an integer or boolean leaf 0 or
    EXACT_MISMATCH. And whether the reference held NaN or inf that `got` matched at the same
    places (a fully masked row's attention): those are compared as equal, the rest by the norm."""
    worst, nonfinite = 0.0, False
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            if g.dim() != w.dim() or any(a < b for a, b in zip(g.shape, w.shape, strict=False)):
                return math.inf, nonfinite  # a shape the real request cannot have come from
            g = g[tuple(slice(0, n) for n in w.shape)]
        if not (w.is_floating_point() or w.is_complex()):
            worst = max(worst, 0.0 if torch.equal(g, w.to(g.dtype)) else EXACT_MISMATCH)
            continue
        if w.is_complex():  # both parts count: a cast to a real type would keep the real one only
            g, w = torch.view_as_real(g.resolve_conj()), torch.view_as_real(w.resolve_conj())
        wide = _comparison_dtype(w.dtype)
        g, w = g.to(wide), w.to(wide)
        err = _leaf_error(g, w) if w.numel() else 0.0
        if not math.isfinite(err):  # rare: only then are the non-finite places looked for
            finite = torch.isfinite(w)
            if not (torch.equal(torch.isfinite(g), finite)
                    and torch.allclose(g[~finite], w[~finite], rtol=0.0, atol=0.0, equal_nan=True)):
                return math.inf, nonfinite
            g, w = g[finite], w[finite]
            if not w.numel():  # nothing finite to compare: said as eager's own output not finite
                return math.inf, nonfinite
            err = _relative(g, w)
            if not math.isfinite(err):
                return math.inf, nonfinite
            nonfinite = True
        worst = max(worst, err)
    return worst, nonfinite


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return _norm(got - want) / max(_norm(want), 1e-30)


def _leaf_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want||, or the worst row's error over ROW_FACTOR where larger (rows:
    the leading dimension, a request's samples; rows of fewer than ROW_VALUES values are taken
    a few at a time, for the worst of millions of single values is rounding's tail, not a fault)."""
    diff = got - want
    want_norm = max(_norm(want), 1e-30)
    whole = _norm(diff) / want_norm
    rows = want.shape[0] if want.dim() >= 1 else 0
    if rows < 2 or not math.isfinite(whole) or not diff.numel():
        return whole
    per_row = diff.numel() // rows
    together = -(-ROW_VALUES // per_row)  # rows per group
    flat = diff.reshape(rows, per_row)
    if together > 1:
        flat = torch.cat([flat, flat.new_zeros((-rows) % together, per_row)]).reshape(-1, together * per_row)
    groups = flat.shape[0]
    if groups < 2:
        return whole
    worst = float(torch.linalg.vector_norm(flat, dim=1).max())
    return max(whole, worst / (want_norm / math.sqrt(groups)) / ROW_FACTOR)


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    """Leaf by leaf the same values, NaN where NaN is (a model whose output is not finite can
    still repeat itself exactly)."""
    return all(x.shape == y.shape and torch.allclose(x, y, rtol=0.0, atol=0.0, equal_nan=True)
               for x, y in zip(a, b, strict=True))


def _finite(leaves: tuple[torch.Tensor, ...]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in leaves if t.is_floating_point() or t.is_complex())


def _comparison_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type in which a leaf's difference is taken: float32 holds every bf16, fp16 and fp32
    value exactly (the norms still sum in float64); float64 for wider or integer leaves. Whole
    leaves in float64 cost GPT-2's logits (51M values) 0.4 s per request on a 2-core CPU."""
    if dtype.is_floating_point and dtype.itemsize <= 4:
        return torch.float32
    return torch.float64


def _norm(t: torch.Tensor, block: int = 4096) -> float:
    """||t||, summed by blocks whose norms are then combined in float64: one float32 sum over
    millions of values drifts by 0.1%, blocks stay within 1e-7, at float32's speed. Where
    float32's squares overflow (values past 1e19) or all underflow (below 1e-19), in float64."""
    flat = t.flatten()
    whole = flat.numel() - flat.numel() % block
    parts = [torch.linalg.vector_norm(flat[:whole].view(-1, block), dim=1).double()]
    if whole < flat.numel():
        parts.append(torch.linalg.vector_norm(flat[whole:]).double().view(1))
    norm = float(torch.linalg.vector_norm(torch.cat(parts)))
    if flat.dtype != torch.float64 and (
        (norm == 0.0 and bool(flat.any())) or (not math.isfinite(norm) and bool(flat.isfinite().all()))
    ):
        return float(torch.linalg.vector_norm(flat.double()))
    return norm


def _largest_chunk(spec: RunSpec, ring: int) -> int:
    return check_chunk(request_bytes(spec), ring)


def first_chunk(spec: RunSpec, ring: int, requests: int) -> int:
    """Requests in the check's first chunk (`ring` slots), which always runs: every slot used
    twice, and every bucket in every slot (a slot's graph of one bucket had gone unchecked
    where the budget held the check to this chunk)."""
    every = ring * len(buckets(spec.model)) if spec.model.bucketed else 0
    return min(max(_largest_chunk(spec, ring), every), requests, max(2 * ring, every))


def _probe_index(sizes: list[Size], workload: Workload, ring: int) -> Optional[int]:
    """Where the probe's request takes a drawn one's place: the last of the largest size, after
    its slot has served another request. Not earlier: the model's input buffer starts out
    holding the probe's request, so a response computed from a stale input would match."""
    if workload.probe is None:
        return None
    return next((j for j in range(len(sizes) - 1, ring - 1, -1) if sizes[j] == workload.largest), None)


def probe_reused(spec: RunSpec, has_probe: bool, first_chunk_requests: int, ring: int) -> bool:
    """Whether the check will take one reference from the build's probe (for the estimates
    before it; with buckets that depends on the sizes drawn, and is not counted)."""
    return has_probe and first_chunk_requests > ring and not spec.model.bucketed


def check_schedule(
    spec: RunSpec, workload: Workload, lanes: Lanes, requests: int, max_duration_s: float = math.inf
) -> CheckResult:
    """Compare `requests` distinct requests with eager, in chunks; after `max_duration_s` no new
    chunk starts. The first chunk (every slot used twice, every bucket at least once) always
    runs; later chunks are sized by the time the ones before took. Request sizes follow the
    run's distribution; each response is compared on its real rows only."""
    generator = torch.Generator().manual_seed(spec.seed + 1)  # not the timed inputs
    device = lanes.device
    tol = tolerance(spec)
    mismatches, worst, bad, reused, nonfinite = 0, 0.0, [], 0, 0
    firsts: dict[Size, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}  # per size: its first request, response
    distinct = same = padded = 0
    eager_spread: Optional[float] = None
    eager_finite: Optional[bool] = None
    largest = _largest_chunk(spec, len(lanes.ring))

    def eager(request: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:  # a request's reference, on the host
        return tuple(leaf.cpu() for leaf in workload.reference({k: v.to(device) for k, v in request.items()}))

    chunk = first_chunk(spec, len(lanes.ring), requests)
    start = time.perf_counter()
    first = 0
    with torch.no_grad():
        while first < requests:
            count = min(chunk, requests - first)
            sizes = draw_sizes(spec.model, count, generator, cover=first == 0, ring=len(lanes.ring))
            inputs = [make_request(spec.model, z, spec.torch_dtype, generator) for z in sizes]
            known: dict[int, tuple[torch.Tensor, ...]] = {}
            j = _probe_index(sizes, workload, len(lanes.ring)) if first == 0 else None
            if j is not None:
                # The build's probe forwarded a request of this size eagerly: its output is
                # that request's reference (on the CPU, one forward less, seconds for big models).
                inputs[j], known[j] = workload.probe  # type: ignore[misc]
            keys = [launch_key(spec, z) for z in sizes]
            padded += sum(k != z for k, z in zip(keys, sizes, strict=True))
            flats = [packed(x, workload.layout(k)) for x, k in zip(inputs, keys, strict=True)]
            responses = serve_and_collect(lanes, flats, keys)
            reused += len(known)
            for flat, got, key in zip(flats, responses, keys, strict=True):
                if key not in firsts and len(firsts) >= SAME_SIZES:
                    continue  # sizes drawn at random: a response kept for the first few sizes only
                seen = firsts.setdefault(key, (flat, got))
                if seen[0] is flat or torch.equal(flat, seen[0]):
                    continue  # the first of its size, or the same request drawn again
                distinct += 1
                # Every leaf the same, a floating one among them (ids that follow the input beside
                # a constant scale are an answer that follows it).
                same += any(a.is_floating_point() or a.is_complex() for a in got) and \
                    all(torch.equal(a, b) for a, b in zip(got, seen[1], strict=True))
            chunk_bad: list[int] = []
            # References in the reverse order of the requests: a model whose answer lags its
            # calls (a stale cache, the previous call's output) then differs on every request;
            # in the same order each reference inherited the lag its response had, and matched.
            for j in reversed(range(count)):
                x, got = inputs[j], responses[j]
                want = known[j] if j in known else eager(x)
                err, matched_nonfinite = compare(got, want)
                nonfinite += matched_nonfinite
                worst = max(worst, err)
                if not err <= tol:
                    if mismatches == 0:
                        # A reference may be a buffer the model's next forward overwrites (on the
                        # CPU .cpu() copies nothing): held apart, or it is compared with itself.
                        want = tuple(t.clone() for t in want)
                        next_call = tuple(t.clone() for t in eager(x))
                        if count > 1:
                            # Another request between two: a model whose answer follows its
                            # previous call (a stale cache) repeats itself on one request alone,
                            # and one that alternates call by call repeats itself two calls apart.
                            eager(inputs[(j + 1) % count])
                        again = eager(x)
                        eager_spread = max(0.0 if _same(later, want) else relative_error(later, want)
                                           for later in (next_call, again))
                        eager_finite = _finite(want)
                    mismatches += 1
                    chunk_bad.append(first + j)
            bad = (bad + sorted(chunk_bad))[:10]
            first += count
            elapsed = time.perf_counter() - start
            left = max_duration_s - elapsed
            if left <= 0:
                break
            per_request = elapsed / first
            # Half the time left at most: a chunk runs whole, and a slower stretch of the host
            # would otherwise carry it past the check's time (a 0.4 s share once took 2.4 s).
            chunk = int(max(len(lanes.ring), min(largest, 0.5 * left / per_request)))
    return CheckResult(first, mismatches, worst, tol, bad, requested=requests, reused_references=reused,
                       eager_spread=eager_spread, eager_finite=eager_finite, nonfinite_requests=nonfinite,
                       distinct_requests=distinct, same_responses=same, padded_requests=padded,
                       seconds=time.perf_counter() - start, allowance_s=max_duration_s)


def check_compute_graphs(spec: RunSpec, workload: Workload, lanes: Lanes) -> Optional[str]:
    """With the copies in the graph, requests replay each slot's own graph, and the lanes'
    compute graphs (one per launch shape) are replayed by the ceiling alone: its figure rested
    on graphs nothing compared with eager. Here each is replayed once on a request of its shape
    and compared. Returns why one differs, or None."""
    if not (lanes.graph and lanes.is_cuda and spec.copies_in_graph):
        return None
    generator = torch.Generator().manual_seed(spec.seed + 3)  # not the check's nor the timed inputs
    tol = tolerance(spec)
    for key in lanes.lanes[0].compute_graphs:
        request = make_request(spec.model, key, spec.torch_dtype, generator)
        flat = packed(request, workload.layout(key))
        want = tuple(leaf.cpu() for leaf in workload.reference({k: v.to(lanes.device) for k, v in request.items()}))
        for lane in lanes.lanes:
            with torch.cuda.stream(lane.stream):
                lane.dev_in[: flat.numel()].copy_(flat)
                lane.compute_graphs[key].replay()
            lane.stream.synchronize()  # type: ignore[union-attr]
            err, _ = compare(tuple(out.cpu() for out in lane.dev_out[key]), want)
            if not err <= tol:
                return (f"the ceiling's compute graph of stream {lane.index} for requests of size {key} differs from "
                        f"eager (error {err:.3g} > {tol:.0e}): the ceiling was not measured")
    return None
