"""What a request is made of: its inputs, packed into one flat byte buffer, and its size.

A request is a set of keyword arguments of forward, each `(batch, *sample_shape)`. Its bytes
live in one flat uint8 buffer, each input at an aligned offset, so a request travels host to
device in one copy whatever the number of inputs; the model reads typed views of that buffer.

A request's size is (batch, seq). With buckets, a request is padded up to the smallest bucket
that fits it: its real rows (and sequence positions) first, zeros after, and attention masks
zero on the padding. The buckets of one run share one buffer, each with its own layout over it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Optional

import torch

from runner.spec import TORCH_DTYPES, InputSpec, ModelSpec, SizeDist

ALIGN_BYTES = 256  # every input starts at a multiple of this (the CUDA allocator's alignment)
INT_DTYPES = {"tokens": torch.int64, "mask": torch.int64, "int": torch.int64, "bool": torch.bool}


@dataclass(frozen=True)
class Size:
    """A request's size: samples, and the sequence size (0 when no input has one)."""

    batch: int
    seq: int

    def elements(self) -> int:
        return self.batch * max(1, self.seq)

    def __str__(self) -> str:
        return f"{self.batch}x{self.seq}" if self.seq else str(self.batch)


def input_dtype(inp: InputSpec, run: torch.dtype) -> torch.dtype:
    """What an input's tensor holds: int64 or bool by its kind; a float input its own dtype
    where it has one, else the run's (`run`)."""
    if inp.kind in INT_DTYPES:
        return INT_DTYPES[inp.kind]
    return getattr(torch, TORCH_DTYPES[inp.dtype]) if inp.dtype else run


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES


class Layout:
    """Where each input of a request of one size sits in a flat byte buffer.

    Each input starts where it does in the largest size's layout, whatever this size: a slot,
    and a lane's device input, serve requests of every size, and a request read in another
    size's shape than the one written there last (direct staging, the ceiling's replays, the
    capture's warm-up) then reads values of the same input, never another input's bytes
    (token ids as a mask, a mask as token-type ids: an index out of range, on a GPU a device
    assert). A smaller size's span keeps the gaps: its copies move at most the largest's bytes.
    """

    def __init__(self, model: ModelSpec, size: Size, dtype: torch.dtype) -> None:
        self.size = size
        # What padding holds per input: zeros, but an int input's low where zero is out of its
        # range (1-based ids a model shifts down would index -1 in the padded rows: on a GPU a
        # device assert that ends the job).
        self.fill = {inp.name: inp.low for inp in model.inputs if inp.kind == "int" and not inp.low <= 0 < inp.high}
        top = largest(model)
        # name, offset, bytes, dtype, shape of each input
        self.fields: list[tuple[str, int, int, torch.dtype, tuple[int, ...]]] = []
        offset = end = 0
        for inp in model.inputs:
            dt = input_dtype(inp, dtype)
            element = torch.empty((), dtype=dt).element_size()
            shape = (size.batch, *inp.sample_shape(size.seq))
            nbytes = math.prod(shape) * element
            self.fields.append((inp.name, offset, nbytes, dt, shape))
            end = offset + nbytes
            offset += _aligned(math.prod((top.batch, *inp.sample_shape(top.seq))) * element)
        self.nbytes = _aligned(end)

    def fill_gaps(self, flat: torch.Tensor) -> None:
        """Each filled input's whole region in `flat` (up to the next input, or the end) set to
        its fill: a larger size's view of these bytes (a slot, written by this size, read in a
        larger bucket's shape) then reads that input's fill, never zeros out of its range."""
        for i, (name, offset, _, dt, _) in enumerate(self.fields):
            if name in self.fill:
                end = self.fields[i + 1][1] if i + 1 < len(self.fields) else flat.numel()
                flat[offset : end - (end - offset) % dt.itemsize].view(dt).fill_(self.fill[name])

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Typed views of `flat` (uint8, at least nbytes long), keyed by forward's argument."""
        return {name: flat[offset : offset + nbytes].view(dt).view(shape)
                for name, offset, nbytes, dt, shape in self.fields}


def make_request(model: ModelSpec, size: Size, dtype: torch.dtype, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One request's inputs at its exact size, on the host. Floats are never all zeros."""
    out = {}
    for inp in model.inputs:
        shape = (size.batch, *inp.sample_shape(size.seq))
        if inp.kind == "tokens":
            out[inp.name] = torch.randint(0, inp.vocab, shape, generator=generator, dtype=torch.int64)
        elif inp.kind == "int":
            out[inp.name] = torch.randint(inp.low, inp.high, shape, generator=generator, dtype=torch.int64)
        elif inp.kind == "bool":
            out[inp.name] = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64).bool()
        elif inp.kind == "mask":
            mask = torch.ones(shape, dtype=torch.int64)
            if inp.random_lengths:
                length = shape[-1]
                lengths = torch.randint(1, length + 1, (size.batch,), generator=generator)
                positions = torch.arange(length)
                keep = positions.view(*([1] * (len(shape) - 1)), length) < lengths.view(-1, *([1] * (len(shape) - 1)))
                mask = (mask * keep).to(torch.int64)
            out[inp.name] = mask
        else:
            out[inp.name] = torch.randn(shape, generator=generator, dtype=torch.float32).to(input_dtype(inp, dtype))
    return out


def pack(request: dict[str, torch.Tensor], layout: Layout, flat: torch.Tensor) -> None:
    """Write `request` into `flat` in `layout`, padded: real rows and positions first, zeros after
    (an int input whose range excludes zero: its low)."""
    if layout.fill:
        layout.fill_gaps(flat)
    views = layout.views(flat)
    for name, value in request.items():
        target = views[name]
        if target.shape != value.shape:
            if name not in layout.fill:  # a filled input's padding: fill_gaps set its whole region
                target.zero_()
            target = target[tuple(slice(0, n) for n in value.shape)]
        target.copy_(value)


def packed(request: dict[str, torch.Tensor], layout: Layout) -> torch.Tensor:
    flat = torch.zeros(layout.nbytes, dtype=torch.uint8)
    pack(request, layout, flat)
    return flat


def bucket_of(model: ModelSpec, size: Size) -> Size:
    """The smallest bucket that holds `size`."""
    batch = model.batches[bisect.bisect_left(model.batches, size.batch)]
    seq = model.seqs[bisect.bisect_left(model.seqs, size.seq)] if model.seqs else 0
    return Size(batch, seq)


def buckets(model: ModelSpec) -> list[Size]:
    """Every bucket, largest first (the order of capture)."""
    seqs = model.seqs or (0,)
    return sorted((Size(b, s) for b in model.batches for s in seqs), key=lambda z: (z.batch * max(1, z.seq), z.batch), reverse=True)


def _draw(dist: SizeDist, buckets_: tuple[int, ...], count: int, generator: torch.Generator) -> list[int]:
    if len(buckets_) <= 1:
        return [buckets_[0] if buckets_ else 0] * count
    if dist.values:
        weights = torch.tensor(dist.weights or [1.0] * len(dist.values), dtype=torch.float64)
        picks = torch.multinomial(weights, count, replacement=True, generator=generator)
        return [dist.values[int(i)] for i in picks]
    low, high = (dist.low, dist.high) if dist.high else (1, buckets_[-1])
    return [int(v) for v in torch.randint(low, high + 1, (count,), generator=generator)]


def _smallest_in(dist: SizeDist, buckets_: tuple[int, ...], bucket: int) -> int:
    """The smallest size the distribution draws that pads to `bucket` (above the bucket below
    it); the bucket itself where it draws none smaller."""
    if len(buckets_) <= 1:
        return bucket
    below = max((b for b in buckets_ if b < bucket), default=0)
    if dist.values:
        weights = dist.weights or (1.0,) * len(dist.values)
        drawn = [v for v, w in zip(dist.values, weights, strict=True) if w > 0 and below < v <= bucket]
        return min(drawn, default=bucket)
    low, high = (dist.low, dist.high) if dist.high else (1, buckets_[-1])
    smallest = max(low, below + 1)
    return smallest if smallest <= min(high, bucket) else bucket


def padded_size(model: ModelSpec, bucket: Size) -> Size:
    """The request of `bucket` with the most padding the distributions draw (the bucket itself
    where they draw nothing smaller in it)."""
    seq = _smallest_in(model.seq_sizes, model.seqs, bucket.seq) if model.seqs else bucket.seq
    return Size(_smallest_in(model.batch_sizes, model.batches, bucket.batch), seq)


def draw_sizes(model: ModelSpec, count: int, generator: torch.Generator, cover: bool = False,
               ring: int = 1) -> list[Size]:
    """`count` request sizes from the configured distributions; with `cover`, the first ones
    are each bucket's, `ring` times in a row, so that every bucket is used in each of the `ring`
    slots that requests go round (request j to slot j % ring): with the copies in the graph
    each slot has a graph per bucket of its own. Of those, the even slots get the bucket's most
    padded size the distributions draw, the odd ones its own size (a ring of one: the padded
    size alone): a check the budget holds to its first chunk compares padded requests too
    (with the bucket's size alone, a model that padding breaks had passed it)."""
    batches = _draw(model.batch_sizes, model.batches, count, generator)
    seqs = _draw(model.seq_sizes, model.seqs, count, generator)
    sizes = [Size(b, s) for b, s in zip(batches, seqs, strict=True)]
    if cover and model.bucketed:
        every = [padded_size(model, bucket) if i % 2 == 0 else bucket
                 for bucket in buckets(model) for i in range(ring)]
        sizes[: len(every)] = every[:count]
    return sizes


# The golden ratio's fractional part: (k * it) mod 1 for k = 1, 2, ... spreads evenly over [0, 1)
# however many terms are taken, from wherever they start (the three-gap theorem).
GOLDEN_STEP = (math.sqrt(5.0) - 1.0) / 2.0


def spread_order(costs: list, ring: int = 1) -> list[int]:
    """An order of the requests whose `costs` (sortable) are given, for a ring of `ring` slots
    that requests go round (request j to slot j % ring). The costs' ranks are cut into `ring`
    strata; each turn of the ring holds one request of each stratum, each slot moves to another
    stratum every turn (by a stride near ring x the golden ratio, prime to it), and within a
    stratum the ranks are taken at golden-ratio steps. Any stretch of whole turns then holds
    about the whole list's mix of costs, wherever it starts, and so does each slot over a few
    turns (256 sizes drawn as experiment=buckets draws them, a ring of 8: the mean of 40 in a row
    spread 4.8% over where they start, against 16% in drawn order; the busiest slot of those 40
    carried 1.43x the mean slot's cost, against 1.77x). A pass that serves part of the plan serves its
    mix, not its stretch's chance one."""
    stride = max(1, round(ring * GOLDEN_STEP))
    while math.gcd(stride, ring) != 1:
        stride += 1

    def place(p: int) -> float:  # where position p's cost ranks, in [0, 1)
        turn, slot = divmod(p, ring)
        return ((slot + turn * stride) % ring + ((turn + 1) * GOLDEN_STEP) % 1.0) / ring

    ranked = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    positions = sorted(range(len(costs)), key=place)
    order = [0] * len(costs)
    for rank, position in enumerate(positions):
        order[position] = ranked[rank]
    return order


def largest(model: ModelSpec) -> Size:
    return Size(*model.largest)


def padding_waste(model: ModelSpec, sizes: list[Size]) -> Optional[float]:
    """Padded elements per real element when each size is padded to its bucket (batch x seq)."""
    real = sum(z.elements() for z in sizes)
    padded = sum(bucket_of(model, z).elements() for z in sizes)
    return (padded - real) / real if real else None
