"""The lightweight network of the starting recipe: a few Linear + GELU layers."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(
        self, in_features: int, hidden_features: int, out_features: int, depth: int = 4
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden_features), nn.GELU()]
            width = hidden_features
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        return self.layers(x)
