"""Models that fail on purpose, to drill the runner's failure handling. All take the same
arguments (features, calls), so one sweep can go over them by `_target_` alone, and their forward
takes `input`, as torch.nn.Linear's does: they plug into `model=linear` (model.inputs.input)."""

from __future__ import annotations

import os
import signal
import sys
import time

import torch
from torch import nn


class Healthy(nn.Module):
    """A Linear layer that counts its forwards; the others fail once `calls` have run."""

    def __init__(self, features: int = 8, calls: int = 50) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        self.calls = calls
        self.count = 0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.count += 1
        if self.count > self.calls:
            self.fail(input)
        return self.linear(input)

    def fail(self, x: torch.Tensor) -> None:
        pass


class FailAfter(Healthy):
    """Raises once it has run `calls` forwards."""

    def fail(self, x: torch.Tensor) -> None:
        raise RuntimeError(f"planted failure after {self.calls} forwards")


class DieAfter(Healthy):
    """Kills its own process (SIGKILL, as the OOM killer would) after `calls` forwards."""

    def fail(self, x: torch.Tensor) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class ExitAfter(Healthy):
    """Calls sys.exit(0) after `calls` forwards, as a script's model module might."""

    def fail(self, x: torch.Tensor) -> None:
        sys.exit(0)


class Hog(Healthy):
    """After `calls` forwards, asks for 4 TiB of device memory: out of memory on any GPU."""

    def __init__(self, features: int = 8, calls: int = 0) -> None:
        super().__init__(features, calls)

    def fail(self, x: torch.Tensor) -> None:
        if x.is_cuda:
            torch.empty(2**40, dtype=torch.float32, device=x.device)


class HostSync(Healthy):
    """Reads a value back to the host in forward: a host sync that cannot be captured."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        y = self.linear(input)
        if y.sum().item() > 1e30:  # data-dependent branch on a synced value
            y = y * 0
        return y


class Fp32Only(Healthy):
    """Refuses any input that is not fp32, as a kernel without half-precision support would."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dtype != torch.float32:
            raise NotImplementedError(f"no kernel for {input.dtype}")
        return self.linear(input)


class Slow(Healthy):
    """Takes `calls` milliseconds per forward (a sleep): a model whose requests are slow next to
    the measuring budget."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        time.sleep(self.calls / 1e3)
        return self.linear(input)


class SlowAfter(Healthy):
    """Takes `delay_s` more per forward (a sleep) once `calls` have run: a host that slows down
    in the middle of the check, after its first requests set the pace."""

    def __init__(self, features: int = 8, calls: int = 50, delay_s: float = 0.015) -> None:
        super().__init__(features, calls)
        self.delay_s = delay_s

    def fail(self, x: torch.Tensor) -> None:
        time.sleep(self.delay_s)


class InPlace(Healthy):
    """Scales its input in place before the Linear layer, as some preprocessing does: the
    caller's tensor is changed by every forward."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return self.linear(input.mul_(2))


class Noisy(Healthy):
    """Adds fresh noise to every output: eager does not repeat itself, so no check can pass."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.linear(input) + torch.randn_like(input)


class NotFinite(Healthy):
    """Returns NaN: the same NaN every time (deterministic, but no comparison can hold)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.linear(input) * float("nan")



class Lagging(Healthy):
    """Answers each call with the previous call's answer, as a stale cache would: served or
    eager alike, so only the order of the calls can show it."""

    def __init__(self, features: int = 8, calls: int = 50) -> None:
        super().__init__(features, calls)
        self.last = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self.linear(input)
        previous = self.last if self.last is not None and self.last.shape == out.shape else out
        self.last = out.clone()
        return previous


class FirstAnswer(Healthy):
    """Keeps its first answer and returns it for every request after: eager does too, so the
    check matches; the answer just does not follow the input."""

    def __init__(self, features: int = 8, calls: int = 50) -> None:
        super().__init__(features, calls)
        self.first = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.first is None or self.first.shape != input.shape:
            self.first = self.linear(input).detach().clone()
        return self.first.clone()


class PingPong(Healthy):
    """Adds one on every other call: two calls apart it repeats itself."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return self.linear(input) + (self.count % 2)


class IdsAndScale(Healthy):
    """Returns the ids of the largest logit, which follow the input, and a constant scale."""

    def __init__(self, features: int = 8, calls: int = 50) -> None:
        super().__init__(features, calls)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, input: torch.Tensor) -> tuple:
        return self.linear(input).argmax(-1), self.scale.detach().expand(input.shape[0]).clone()

# Wrong answers only the served path gives: the runner serves requests through views of its
# lanes' buffers (`input._base` is set), eager references get plain tensors. A check that
# passes any of these is blind to that kind of fault.
def _served(input: torch.Tensor) -> bool:
    return input._base is not None


class OneOrAll(Healthy):
    """Served, returns its first row alone when the first input value is positive: an output
    whose size follows the values, which a broadcasting copy would spread over every row."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self.linear(input)
        return out[:1] if _served(input) and bool(input[0, 0] > 0) else out


class IdsOffByOne(Healthy):
    """Returns logits and their argmax ids; served, the first row's id is one off: integer leaves
    compared by a relative norm read it as 1e-6."""

    def __init__(self, features: int = 8, calls: int = 50, classes: int = 50_000) -> None:
        super().__init__(features, calls)
        self.head = nn.Linear(features, classes)

    def forward(self, input: torch.Tensor) -> dict:
        logits = self.head(input)
        ids = logits.argmax(-1)
        if _served(input):
            ids[0] += 1
        return {"logits": logits, "ids": ids}


class OneRowWrong(Healthy):
    """Served, row 0 gets row 1's answer: among thousands of rows a whole-leaf norm dilutes it."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self.linear(input)
        if _served(input) and out.shape[0] > 1:
            out = out.clone()
            out[0] = out[1]
        return out


class ConjSpectrum(Healthy):
    """The conjugate of a spectrum, as torch returns it: a lazy conjugate flag on the tensor."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(self.linear(input)).conj()


class OwnBuffer(Healthy):
    """Writes its output into a buffer of its own and returns it (its next forward overwrites
    what it returned), with fresh noise each time: not deterministic."""

    def __init__(self, features: int = 8, calls: int = 50, noise: float = 1.0) -> None:
        super().__init__(features, calls)
        self.noise = noise
        self.out: torch.Tensor | None = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        y = self.linear(input) + self.noise * torch.randn(input.shape[0], self.linear.out_features)
        if self.out is None or self.out.shape != y.shape:
            self.out = torch.empty_like(y)
        return self.out.copy_(y)


class CountsInOwnBuffer(OwnBuffer):
    """Deterministic per call, but each forward adds its call count into the buffer it returns
    (so a later forward changes what an earlier one returned)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.count += 1
        y = self.linear(input) + self.count
        if self.out is None or self.out.shape != y.shape:
            self.out = torch.empty_like(y)
        return self.out.copy_(y)


class OwnOutput(Healthy):
    """Writes its output into a buffer it registered and returns that buffer: on a GPU every
    stream's graph would write the one buffer."""

    def __init__(self, features: int = 8, calls: int = 50) -> None:
        super().__init__(features, calls)
        self.register_buffer("out", torch.zeros(0))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        y = self.linear(input)
        if self.out.shape != y.shape:
            self.out = torch.empty_like(y)
        return self.out.copy_(y)


class OwnOutputSyncs(OwnOutput):
    """OwnOutput that reads a value back to the host in every forward: its capture fails, and
    its eager fallback over several streams would race on the one buffer."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        float(input.sum())  # a host sync: not allowed while a stream captures
        return super().forward(input)


class SkewedComputeGraph(Healthy):
    """Right eagerly and in its slots' graphs, one off in the first capture of every `period`:
    with the copies in the graph (a lane's compute graph, then one graph per slot, in turn),
    those are the compute graphs, which only the ceiling replays."""

    def __init__(self, features: int = 8, calls: int = 50, period: int = 3) -> None:
        super().__init__(features, calls)
        self.period, self.captures = period, 0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        y = self.linear(input)
        if torch.cuda.is_current_stream_capturing():
            wrong = self.captures % self.period == 0
            self.captures += 1
            if wrong:
                return y + 1
        return y


class Segfaults(Healthy):
    """Reads address 0 after `calls` forwards: a crash in native code, as a broken extension's."""

    def fail(self, x: torch.Tensor) -> None:
        import ctypes

        ctypes.string_at(0)


class InferenceOnly(Healthy):
    """Raises when a forward runs with autograd on: every forward of a job is inference (and a
    compiled model's guards include the grad mode: one with it on compiles again)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("a forward ran with autograd on")
        return self.linear(input)
