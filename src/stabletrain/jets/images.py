"""Jet images: constituents → a pT-weighted picture in (η, φ) around the jet axis.

The recipe follows the jet-images benchmark of de Oliveira et al. (JHEP
2016): 25×25 pixels over η, φ ∈ [−1.25, 1.25] relative to the jet axis,
pixel value = the summed transverse momentum (GeV) of the constituents that
fall in the pixel. Optional preprocessing centres the image on the leading
subjet, rotates the second subjet (or, with a single subjet, the principal
axis) to point straight down, and flips the image so that its right half
carries more pT than its left.

Images are ``N×H×W`` float arrays indexed ``[η bin, φ bin]``. Everything here
is plain NumPy, so it works without Pythia or FastJet.

Example:
    >>> import numpy as np
    >>> spec = ImageSpec()
    >>> image = pixelize(np.array([100.0, 50.0]), np.array([0.0, 0.3]), np.array([0.0, 0.0]), spec)
    >>> image.shape, float(image.sum())
    ((25, 25), 150.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ImageSpec",
    "image_mass",
    "jet_image",
    "occupancy",
    "pixel_centres",
    "pixelize",
    "preprocess_coordinates",
    "wrap_phi",
]


@dataclass(frozen=True)
class ImageSpec:
    """The image frame: ``pixels``×``pixels`` over ±``half_width`` in η and φ."""

    pixels: int = 25
    half_width: float = 1.25

    @property
    def pixel_size(self) -> float:
        return 2.0 * self.half_width / self.pixels

    def to_dict(self) -> dict:
        return asdict(self)


def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Map azimuthal differences into [−π, π)."""
    return (np.asarray(dphi) + np.pi) % (2.0 * np.pi) - np.pi


def pixelize(pt: np.ndarray, deta: np.ndarray, dphi: np.ndarray, spec: ImageSpec = ImageSpec()) -> np.ndarray:
    """Bin constituents with coordinates relative to the image centre; pixel value = ΣpT.

    Constituents outside the frame are dropped, so the image sum is the pT
    inside the frame's acceptance.
    """
    edges = np.linspace(-spec.half_width, spec.half_width, spec.pixels + 1)
    image, _, _ = np.histogram2d(deta, dphi, bins=(edges, edges), weights=pt)
    return image


def preprocess_coordinates(deta: np.ndarray, dphi: np.ndarray, pt: np.ndarray,
                           subjets: np.ndarray | None = None, *, centre: bool = True, rotate: bool = True,
                           flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Translate, rotate and flip constituent coordinates (relative to the jet axis).

    Args:
        deta, dphi, pt: constituents, coordinates relative to the jet axis.
        subjets: ``K×3`` array of (pT, Δη, Δφ) subjets sorted by decreasing
            pT, relative to the jet axis; used for centring and rotation.
        centre: move the leading subjet to the origin.
        rotate: turn the second subjet (else the principal axis of the
            pT-weighted constituent cloud) to point along −η ("down").
        flip: mirror φ → −φ when the φ < 0 half carries more pT, so the
            heavier side is always on the right.
    """
    x, y = np.asarray(deta, dtype=float).copy(), np.asarray(dphi, dtype=float).copy()
    has_subjets = subjets is not None and len(subjets) > 0
    if centre and has_subjets:
        x -= subjets[0, 1]
        y -= subjets[0, 2]
    if rotate and len(pt) > 1:
        if has_subjets and len(subjets) > 1:
            direction = np.array([subjets[1, 1] - (subjets[0, 1] if centre else 0.0),
                                  wrap_phi(subjets[1, 2] - (subjets[0, 2] if centre else 0.0))])
        else:
            weights = pt / max(pt.sum(), 1e-12)
            mx, my = (weights * x).sum(), (weights * y).sum()
            cov = np.cov(np.vstack([x - mx, y - my]), aweights=weights + 1e-12)
            values, vectors = np.linalg.eigh(cov)
            direction = vectors[:, int(np.argmax(values))]
            # the principal axis has no sign; point it towards the pT-weighted side
            if ((x - mx) * direction[0] + (y - my) * direction[1]) @ weights < 0:
                direction = -direction
        norm = float(np.hypot(direction[0], direction[1]))
        if norm > 1e-9:
            # rotate so that ``direction`` maps to (−1, 0): straight down in η
            angle = np.pi - np.arctan2(direction[1], direction[0])
            c, s = np.cos(angle), np.sin(angle)
            x, y = c * x - s * y, s * x + c * y
    if flip and (pt * (y < 0)).sum() > (pt * (y > 0)).sum():
        y = -y
    return x, y


def jet_image(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, axis_eta: float, axis_phi: float,
              spec: ImageSpec = ImageSpec(), subjets: np.ndarray | None = None, preprocess: bool = False) -> np.ndarray:
    """The image of one jet's constituents around the axis ``(axis_eta, axis_phi)``.

    ``subjets`` rows are absolute (pT, η, φ); they are made relative here.
    """
    deta = np.asarray(eta) - axis_eta
    dphi = wrap_phi(np.asarray(phi) - axis_phi)
    if preprocess:
        rel = None
        if subjets is not None and len(subjets):
            rel = np.column_stack([subjets[:, 0], subjets[:, 1] - axis_eta, wrap_phi(subjets[:, 2] - axis_phi)])
        deta, dphi = preprocess_coordinates(deta, dphi, np.asarray(pt), rel)
    return pixelize(np.asarray(pt), deta, dphi, spec)


def pixel_centres(spec: ImageSpec = ImageSpec()) -> np.ndarray:
    """The η (= φ) coordinate of each pixel centre."""
    edges = np.linspace(-spec.half_width, spec.half_width, spec.pixels + 1)
    return 0.5 * (edges[:-1] + edges[1:])


def image_mass(images: np.ndarray, spec: ImageSpec = ImageSpec()) -> np.ndarray:
    """Invariant mass of images, treating each pixel as a massless particle at its centre.

    A shift of the frame in η is a boost along the beam and a shift in φ a
    rotation about it, so the mass computed from relative coordinates is
    the jet mass up to pixelization (and up to the small non-Lorentz effect
    of the preprocessing rotation).

    Example:
        >>> spec = ImageSpec()
        >>> img = np.zeros((1, 25, 25)); img[0, 12, 12] = 100.0
        >>> float(image_mass(img, spec)[0])   # one massless pixel
        0.0
    """
    images = np.asarray(images, dtype=float)
    if images.ndim == 4:
        images = images[:, 0]
    centres = pixel_centres(spec)
    eta, phi = np.meshgrid(centres, centres, indexing="ij")
    e = (images * np.cosh(eta)).sum(axis=(1, 2))
    px = (images * np.cos(phi)).sum(axis=(1, 2))
    py = (images * np.sin(phi)).sum(axis=(1, 2))
    pz = (images * np.sinh(eta)).sum(axis=(1, 2))
    return np.sqrt(np.clip(e ** 2 - px ** 2 - py ** 2 - pz ** 2, 0.0, None))


def occupancy(images: np.ndarray, threshold: float = 0.0) -> float:
    """The mean fraction of pixels above ``threshold``: how dense the images are."""
    images = np.asarray(images)
    return float((images > threshold).mean())
