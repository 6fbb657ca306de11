"""Small PyTorch models for the sggraph.trace tests (an MLP, a CNN, residual blocks, DNI's MLP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CNN", "MLP", "Block", "Residual", "mlp"]


def mlp(width: int = 32, inputs: int = 20, classes: int = 10) -> nn.Sequential:
    """``Linear → ReLU → Linear → ReLU → Linear``."""
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, classes))


class MLP(nn.Module):
    """Named layers, functional ReLUs (they belong to the next layer's node)."""

    def __init__(self, inputs: int = 12, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(inputs, width), nn.Linear(width, width), nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    """Two convolutions (the second strided) and a dense head over the flattened maps."""

    def __init__(self, channels: int = 1, size: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.flatten(1))


class Block(nn.Module):
    """A residual block: ``relu(x + conv(relu(bn(conv(x)))))`` (``bn=False``: no BatchNorm)."""

    def __init__(self, c: int, bn: bool = True) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.c2(F.relu(self.bn(self.c1(x)))))


class Residual(nn.Module):
    """A stem, two residual blocks (the second also skipped around: ``b2(h) + h``), a dense head."""

    def __init__(self, channels: int = 3, width: int = 4, size: int = 8, classes: int = 5, bn: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.b1, self.b2 = Block(width, bn), Block(width, bn)
        self.head = nn.Linear(width * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = self.b1(h)
        h = self.b2(h) + h
        return self.head(h.flatten(1))
