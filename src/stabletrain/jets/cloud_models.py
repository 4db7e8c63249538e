"""Particle-cloud taggers in plain PyTorch: a Particle Flow Network, an Energy Flow Network and a small ParticleNet.

All three read the ``B×1×M×4`` cloud batches of :mod:`stabletrain.jets.clouds`
(mask, η, φ, pT columns in [0, 1]) and compute their per-particle inputs
inside the model with :func:`~stabletrain.jets.clouds.cloud_features`:
Δη, Δφ (rad, relative to the jet axis), log(pT / GeV) and the pT fraction
z, scaled by :data:`FEATURE_SCALE`. Every per-particle quantity is
multiplied by the hard mask ``mask > 0.5`` before any sum or mean, so a
padded slot contributes exactly nothing whatever it holds, and the outputs
do not depend on the order of the particles or on the number of padded
slots. No layer normalizes over the batch (the per-particle MLPs use layer
norm in ParticleNet and nothing in the flow networks), so a jet's output
does not depend on the other jets of its batch or on its padding, in
training as in evaluation.

* ``pfn`` — :class:`ParticleFlowNetwork` (Komiske, Metodiev, Thaler 2019):
  ``F(Σᵢ Φ(Δηᵢ, Δφᵢ, log pTᵢ, zᵢ))``.
* ``efn`` — :class:`EnergyFlowNetwork`: ``F(Σᵢ zᵢ Φ(Δηᵢ, Δφᵢ))``; linear in
  the pT fractions, so infrared and collinear safe: a particle of zero pT,
  or a particle split in two collinear halves, leaves the output unchanged.
* ``particlenet`` — :class:`ParticleNet`, a small version of Qu and Gouskos
  (2020): EdgeConv blocks over the k nearest neighbours in (Δη, Δφ) (a
  static graph; ParticleNet recomputes it in feature space after the first
  block), each edge ``MLP(xᵢ, xⱼ − xᵢ)`` averaged over the valid neighbours,
  a shortcut, and masked global average pooling.

Example:
    >>> import torch
    >>> x = torch.zeros(2, 1, 5, 4)
    >>> x[:, 0, :3] = torch.tensor([[1.0, 0.5, 0.5, 0.2], [1.0, 0.52, 0.49, 0.05], [1.0, 0.47, 0.5, 0.01]])
    >>> [tuple(m(x).shape) for m in (ParticleFlowNetwork(width=8), EnergyFlowNetwork(width=8),
    ...                              ParticleNet(width=8, neighbors=2))]
    [(2, 2), (2, 2), (2, 2)]
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import StableTrainError
from .clouds import cloud_features

__all__ = ["FEATURE_SCALE", "FEATURE_SHIFT", "CloudTagger", "EdgeConv", "EnergyFlowNetwork", "ParticleFlowNetwork",
           "ParticleNet", "is_cloud_model", "knn"]

#: Shift and scale of the per-particle inputs (Δη, Δφ, log pT/GeV, z): about their mean and spread over the
#: 14 001 constituents of a 400-jet W/QCD sample (std 0.23, 0.22, 1.55, 0.05; log pT mean 1.06).
FEATURE_SHIFT = (0.0, 0.0, 1.0, 0.0)
FEATURE_SCALE = (0.25, 0.25, 1.5, 0.05)


def is_cloud_model(factory: object) -> bool:
    """Whether a model factory (class or function) takes particle clouds rather than images."""
    return getattr(factory, "input_kind", None) == "cloud"


def _mlp(sizes: list[int], *, last_activation: bool = True, norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(cin, cout))
        if i < len(sizes) - 2 or last_activation:
            if norm:
                layers.append(nn.LayerNorm(cout))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "num_classes" else 1):
            raise StableTrainError(f"{name} must be a whole number >= {2 if name == 'num_classes' else 1}, got "
                                   f"{value!r}")


class CloudTagger(nn.Module):
    """Base of the cloud taggers: input checks, per-particle features and the classifier head.

    Subclasses implement :meth:`features` (``B×C`` jet features); the head
    maps them to ``num_classes`` logits. ``input_kind = 'cloud'`` tells the
    jets task to give the model clouds, not images.
    """

    input_kind = "cloud"
    #: The model normalizes its own input with fixed constants, not with data statistics.
    normalization = "model"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("feature_shift", torch.tensor(FEATURE_SHIFT), persistent=False)
        self.register_buffer("feature_scale", torch.tensor(FEATURE_SCALE), persistent=False)

    def particles(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scaled features B×M×4, mask B×M as 0/1 floats, z B×M)``; zero where padded."""
        features, mask = cloud_features(x)
        keep = mask.to(features.dtype)
        scaled = (features - self.feature_shift) / self.feature_scale * keep.unsqueeze(-1)
        return scaled, keep, features[..., 3]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ParticleFlowNetwork(CloudTagger):
    """Deep Sets on particles: ``F(Σᵢ maskᵢ·Φ(featuresᵢ))`` with MLPs Φ and F.

    Args:
        num_classes: output logits.
        width: hidden units of Φ and F.
        latent: size of the per-particle latent space (the sum).
        dropout: dropout before the last layer.

    Example:
        >>> x = torch.zeros(1, 1, 4, 4); x[0, 0, :2] = torch.tensor([[1.0, 0.5, 0.5, 0.2], [1.0, 0.6, 0.4, 0.1]])
        >>> model = ParticleFlowNetwork(width=8, latent=4).eval()
        >>> bool(torch.allclose(model(x), model(x[:, :, [1, 0, 3, 2]]), atol=1e-6))
        True
    """

    def __init__(self, num_classes: int = 2, width: int = 64, latent: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        _check_sizes(num_classes=num_classes, width=width, latent=latent)
        self.phi = _mlp([4, width, width, latent])
        self.rho = _mlp([latent, width, width])
        self.feature_dim = width
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(width, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        scaled, keep, _z = self.particles(x)
        latent = (self.phi(scaled) * keep.unsqueeze(-1)).sum(dim=1)
        return self.rho(latent)


class EnergyFlowNetwork(CloudTagger):
    """IRC-safe Deep Sets: ``F(Σᵢ zᵢ·Φ(Δηᵢ, Δφᵢ))``, the angular Φ weighted by the pT fraction z.

    Args:
        num_classes: output logits.
        width: hidden units of Φ and F.
        latent: size of the latent space.
        dropout: dropout before the last layer.

    Example:
        >>> x = torch.zeros(1, 1, 4, 4); x[0, 0, 0] = torch.tensor([1.0, 0.5, 0.5, 0.2])
        >>> split = x.clone(); split[0, 0, :2] = torch.tensor([[1.0, 0.5, 0.5, 0.12], [1.0, 0.5, 0.5, 0.08]])
        >>> model = EnergyFlowNetwork(width=8, latent=4).eval()
        >>> bool(torch.allclose(model(x), model(split), atol=1e-6))   # a collinear split changes nothing
        True
    """

    def __init__(self, num_classes: int = 2, width: int = 64, latent: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        _check_sizes(num_classes=num_classes, width=width, latent=latent)
        self.phi = _mlp([2, width, width, latent])
        self.rho = _mlp([latent, width, width])
        self.feature_dim = width
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(width, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        scaled, keep, z = self.particles(x)
        weights = (z * keep).unsqueeze(-1)
        return self.rho((self.phi(scaled[..., :2]) * weights).sum(dim=1))


def knn(coordinates: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other particles of each particle: indices ``B×M×k`` and a validity mask ``B×M×k``.

    Padded slots and the particle itself are never valid neighbours; a
    particle with fewer than ``k`` others gets invalid entries (to be
    ignored). ``k`` is capped at ``M − 1``.

    Example:
        >>> coords = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [0.0, 0.0]]])
        >>> index, valid = knn(coords, torch.tensor([[True, True, True, False]]), 1)
        >>> index[0, :3, 0].tolist(), valid[0, :, 0].tolist()
        ([1, 0, 1], [True, True, True, False])
    """
    b, m, _ = coordinates.shape
    k = max(min(int(k), m - 1), 0)
    if k == 0:
        empty = torch.zeros(b, m, 0, dtype=torch.long, device=coordinates.device)
        return empty, empty.bool()
    distance = torch.cdist(coordinates, coordinates)
    usable = mask.unsqueeze(1) & mask.unsqueeze(2) & ~torch.eye(m, dtype=torch.bool, device=mask.device)
    distance = distance.masked_fill(~usable, float("inf"))
    nearest, index = distance.topk(k, dim=-1, largest=False)
    return index, torch.isfinite(nearest)


class EdgeConv(nn.Module):
    """One EdgeConv block: ``xᵢ' = ReLU(meanⱼ MLP(xᵢ, xⱼ − xᵢ) + W xᵢ)`` over the valid neighbours j of i."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.edge = _mlp([2 * cin, cout, cout], norm=True)
        self.shortcut = nn.Linear(cin, cout, bias=False)

    def forward(self, x: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, m, c = x.shape
        k = index.shape[-1]
        if k:
            neighbours = x.gather(1, index.reshape(b, m * k, 1).expand(-1, -1, c)).view(b, m, k, c)
            centre = x.unsqueeze(2).expand(-1, -1, k, -1)
            edges = self.edge(torch.cat([centre, neighbours - centre], dim=-1))
            weights = valid.to(x.dtype).unsqueeze(-1)
            aggregated = (edges * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
        else:
            aggregated = x.new_zeros(b, m, self.shortcut.out_features)
        return torch.relu(aggregated + self.shortcut(x)) * keep.unsqueeze(-1)


class ParticleNet(CloudTagger):
    """A small ParticleNet: two EdgeConv blocks on the (Δη, Δφ) k-NN graph, masked average pooling, an MLP.

    Args:
        num_classes: output logits.
        width: channels of the first EdgeConv block (the second has twice as many).
        neighbors: k of the k-nearest-neighbour graph (capped at the slots − 1).
        dropout: dropout before the last layer.

    Example:
        >>> x = torch.zeros(1, 1, 6, 4)
        >>> x[0, 0, :3] = torch.tensor([[1.0, 0.5, 0.5, 0.2], [1.0, 0.6, 0.4, 0.1], [1.0, 0.4, 0.45, 0.05]])
        >>> model = ParticleNet(width=4, neighbors=2).eval()
        >>> bool(torch.allclose(model(x), model(x[:, :, :3]), atol=1e-6))   # padded slots change nothing
        True
    """

    def __init__(self, num_classes: int = 2, width: int = 32, neighbors: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        _check_sizes(num_classes=num_classes, width=width, neighbors=neighbors)
        self.neighbors = neighbors
        self.blocks = nn.ModuleList([EdgeConv(4, width), EdgeConv(width, 2 * width)])
        self.feature_dim = 2 * width
        self.rho = _mlp([2 * width, 2 * width])
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(2 * width, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        scaled, keep, _z = self.particles(x)
        index, valid = knn(scaled[..., :2], keep > 0.5, self.neighbors)
        h = scaled
        for block in self.blocks:
            h = block(h, index, valid, keep)
        pooled = h.sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp_min(1.0)
        return self.rho(pooled)
