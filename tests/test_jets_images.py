import numpy as np
import pytest

from stabletrain.jets.images import (
    ImageSpec,
    image_mass,
    occupancy,
    pixelize,
    preprocess_coordinates,
    wrap_phi,
)


def test_pixelize_puts_pt_in_the_right_cells_and_drops_outside():
    spec = ImageSpec(pixels=25, half_width=1.25)  # 0.1 per pixel
    image = pixelize(np.array([10.0, 5.0, 7.0]), np.array([0.0, 0.52, 2.0]), np.array([0.0, -0.22, 0.0]), spec)
    assert image[12, 12] == 10.0
    assert image[17, 10] == 5.0   # bin i spans −1.25 + 0.1·[i, i+1]: η = 0.52 → 17, φ = −0.22 → 10
    assert image.sum() == 15.0            # the constituent at η = 2 is outside the frame


def test_wrap_phi_range():
    values = wrap_phi(np.array([3.5, -3.5, 0.1, 2 * np.pi]))
    assert np.all(values >= -np.pi) and np.all(values < np.pi)
    np.testing.assert_allclose(values, [3.5 - 2 * np.pi, -3.5 + 2 * np.pi, 0.1, 0.0], atol=1e-12)


def test_image_mass_of_two_massless_pixels_matches_the_formula():
    spec = ImageSpec()
    centres = np.linspace(-1.2, 1.2, 25)
    img = np.zeros((1, 25, 25))
    img[0, 12, 12], img[0, 15, 10] = 100.0, 50.0
    deta, dphi = centres[15] - centres[12], centres[10] - centres[12]
    expected = np.sqrt(2 * 100.0 * 50.0 * (np.cosh(deta) - np.cos(dphi)))
    assert image_mass(img, spec)[0] == pytest.approx(expected, rel=1e-9)


def test_preprocessing_centres_rotates_down_and_flips_right():
    pt = np.array([100.0, 40.0, 5.0])
    deta, dphi = np.array([0.2, 0.2, 0.5]), np.array([0.1, 0.5, 0.2])
    subjets = np.array([[100.0, 0.2, 0.1], [40.0, 0.2, 0.5]])
    x, y = preprocess_coordinates(deta, dphi, pt, subjets)
    np.testing.assert_allclose([x[0], y[0]], [0.0, 0.0], atol=1e-12)     # leading subjet at the origin
    np.testing.assert_allclose([x[1], y[1]], [-0.4, 0.0], atol=1e-12)    # second subjet straight down
    assert (pt * (y > 0)).sum() >= (pt * (y < 0)).sum()                 # heavier side on the right
    np.testing.assert_allclose(np.hypot(x - x[0], y - y[0]), np.hypot(deta - 0.2, dphi - 0.1), atol=1e-12)


def test_occupancy():
    assert occupancy(np.array([[0.0, 1.0], [0.0, 0.0]])) == 0.25
