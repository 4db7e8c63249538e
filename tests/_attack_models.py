"""Small models for the attack tests: a digits CNN trained for a few seconds, a per-row exact model, and a model
that masks its gradients."""

from __future__ import annotations

import functools

import torch
from torch import nn


def _cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, classes))


@functools.lru_cache(maxsize=1)
def digits_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A CNN trained for 150 Adam steps (about two seconds) on sklearn's digits at 16×16 (the library's ``digits``
    data, 8×8 upsampled), fixed seed; and the first 150 test images and labels."""
    from stabletrain.data import load_digits

    data = load_digits(16)
    torch.manual_seed(0)
    model = _cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    x, y = data.train.x, data.train.y
    for _ in range(150):
        batch = torch.randint(0, len(x), (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data.test.x[:150].clone(), data.test.y[:150].clone()


class Quantized(nn.Module):
    """``model(round(255·x) / 255)``: the same function up to 8-bit rounding, with a zero input gradient
    everywhere (a gradient-masking defence in its simplest form)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 255) / 255)


class RowwiseMLP(nn.Module):
    """A two-layer network computed by broadcasting, so every row's logits (and gradient) are reduced on their own:
    bit for bit independent of the other rows of the batch."""

    def __init__(self, shape=(1, 8, 8), hidden: int = 6, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(hidden, *shape, generator=g) * 0.5)
        self.w2 = nn.Parameter(torch.randn(classes, hidden, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh((x.unsqueeze(1) * self.w1).flatten(2).sum(-1))
        return (h.unsqueeze(1) * self.w2).sum(-1)
