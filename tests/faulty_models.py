"""Models that fail on purpose, to drill the runner's failure handling."""

from __future__ import annotations

import os
import signal

import torch
from torch import nn


class FailAfter(nn.Module):
    """A Linear layer that raises once it has run `calls` forwards."""

    def __init__(self, features: int = 8, calls: int = 50) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        self.calls = calls
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count += 1
        if self.count > self.calls:
            raise RuntimeError(f"planted failure after {self.calls} forwards")
        return self.linear(x)


class DieAfter(FailAfter):
    """Kills its own process (SIGKILL, as the OOM killer would) after `calls` forwards."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count += 1
        if self.count > self.calls:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.linear(x)


class HostSync(nn.Module):
    """Reads a value back to the host in forward: a host sync that cannot be captured."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if y.sum().item() > 1e30:  # data-dependent branch on a synced value
            y = y * 0
        return y


class Hog(nn.Module):
    """Allocates `gib` GiB of device memory per forward: runs out of memory on any GPU."""

    def __init__(self, features: int = 8, gib: float = 4096.0) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        self.elements = int(gib * 2**30 / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            torch.empty(self.elements, device=x.device)
        return self.linear(x)
