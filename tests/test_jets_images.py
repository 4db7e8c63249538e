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


def _off_centre_halves(images):
    """pT in the columns strictly left and strictly right of the centre column (odd widths)."""
    images = np.asarray(images)
    w = images.shape[-1]
    return images[..., : w // 2].sum(axis=(-2, -1)), images[..., w - w // 2:].sum(axis=(-2, -1))


def test_flip_is_decided_on_the_off_centre_pixel_halves():
    # most pT in the centre column (|φ| < 0.05), tilted slightly to φ < 0; the only off-centre pT is at φ > 0
    pt = np.array([100.0, 60.0, 10.0])
    deta, dphi = np.array([0.0, -0.4, 0.1]), np.array([-0.03, -0.02, 0.3])
    spec = ImageSpec()
    x, y = preprocess_coordinates(deta, dphi, pt, centre=False, rotate=False)
    left, right = _off_centre_halves(pixelize(pt, x, y, spec))
    assert (left, right) == (0.0, 10.0)            # not flipped: the heavier off-centre half is already right
    x, y = preprocess_coordinates(deta, -dphi, pt, centre=False, rotate=False)
    assert _off_centre_halves(pixelize(pt, x, y, spec)) == (0.0, 10.0)   # mirrored input: flipped back


def test_image_halves_skip_the_centre_column_only_for_odd_widths():
    from stabletrain.jets.images import image_halves

    odd = np.zeros((2, 5, 5))
    odd[0, 2, 2], odd[0, 0, 1], odd[0, 4, 3] = 50.0, 1.0, 2.0
    odd[1, :, 4] = 1.0
    np.testing.assert_allclose(image_halves(odd), [[1.0, 0.0], [2.0, 5.0]])
    even = np.zeros((4, 4))
    even[0, 1], even[0, 2] = 3.0, 1.0
    assert [float(v) for v in image_halves(even)] == [3.0, 1.0]


def _two_prong_jet(rng):
    """Absolute (pt, eta, phi) of a synthetic two-prong jet, its two subjets and its axis."""
    eta0, phi0 = rng.uniform(-2, 2), rng.uniform(-np.pi, np.pi)
    angle, gap = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.8)
    c1 = np.array([eta0, phi0])
    c2 = c1 + gap * np.array([np.cos(angle), np.sin(angle)])
    pts = np.concatenate([c1 + 0.04 * rng.standard_normal((12, 2)), c2 + 0.04 * rng.standard_normal((8, 2)),
                          c1 + 0.3 * rng.standard_normal((6, 2))])
    pt = np.concatenate([rng.exponential(10, 12), rng.exponential(5, 8), rng.exponential(1, 6)])
    subjets = np.array([[pt[:12].sum(), *c1], [pt[12:20].sum(), *c2]])
    return pt, pts[:, 0], pts[:, 1], subjets, eta0 + 0.1, phi0 - 0.1


def _unflipped(pt, eta, phi, subjets, axis_eta, axis_phi, spec):
    rel = np.column_stack([subjets[:, 0], subjets[:, 1] - axis_eta, wrap_phi(subjets[:, 2] - axis_phi)])
    x, y = preprocess_coordinates(eta - axis_eta, wrap_phi(phi - axis_phi), pt, rel, flip=False)
    return pixelize(pt, x, y, spec)


def test_preprocessed_synthetic_jets_follow_the_convention_and_are_exact_mirrors():
    from stabletrain.jets.images import jet_image

    rng = np.random.default_rng(1)
    spec = ImageSpec()
    flipped = []
    for _ in range(200):
        pt, eta, phi, subjets, axis_eta, axis_phi = _two_prong_jet(rng)
        image = jet_image(pt, eta, phi, axis_eta, axis_phi, spec, subjets=subjets, preprocess=True)
        plain = _unflipped(pt, eta, phi, subjets, axis_eta, axis_phi, spec)
        left, right = _off_centre_halves(image)
        assert right >= left
        if np.array_equal(image, plain):
            flipped.append(False)
        else:
            np.testing.assert_array_equal(image, plain[:, ::-1])   # the flip is an exact mirror φ → −φ
            flipped.append(True)
    assert 0.2 < np.mean(flipped) < 0.8   # both cases were exercised


def test_generated_jets_have_the_heavier_off_centre_half_on_the_right(jet_file):
    h5py = pytest.importorskip("h5py")
    with h5py.File(jet_file, "r") as f:
        images = f["images"][()]
    left, right = _off_centre_halves(images)
    assert len(images) == 400
    assert np.mean(right >= left) >= 0.99   # before the fix: about 40 %
    assert np.mean(right > left) > 0.9      # and not by ties: there is off-centre pT to decide on


def test_eta_map_gives_each_pixel_its_pseudorapidity():
    from stabletrain.jets.images import cell_eta, flip_needed, jet_image

    rng = np.random.default_rng(2)
    spec = ImageSpec()
    flipped = []
    for _ in range(100):
        eta0, phi0 = rng.uniform(-2, 2), rng.uniform(-np.pi, np.pi)
        # constituents of distinct pT within 0.8 of the leading one (all in the frame), each in its own pixel
        while True:
            offsets = rng.uniform(-0.55, 0.55, (5, 2))
            offsets[0] = 0.0
            gaps = np.hypot(*(offsets[:, None] - offsets[None]).transpose(2, 0, 1))
            if gaps[np.triu_indices(5, 1)].min() > 0.15:   # more than a pixel's diagonal apart
                break
        eta, phi = eta0 + offsets[:, 0], phi0 + offsets[:, 1]
        pt = np.array([100.0, 40.0, 7.0, 3.0, 1.0])
        subjets = np.array([[100.0, eta[0], phi[0]], [40.0, eta[1], phi[1]]])
        axis_eta, axis_phi = eta0 + 0.2, phi0 - 0.1
        image, eta_map = jet_image(pt, eta, phi, axis_eta, axis_phi, spec, subjets=subjets, preprocess=True,
                                   return_eta_map=True)
        flipped.append(flip_needed(_unflipped(pt, eta, phi, subjets, axis_eta, axis_phi, spec)))
        eta_centre, a, b = eta_map
        assert eta_centre == pytest.approx(eta[0], abs=1e-12)          # the image centre: the leading subjet
        assert np.hypot(a, b) == pytest.approx(1.0, rel=1e-12)         # a rotation, possibly mirrored
        cells = cell_eta(eta_map, spec)
        tolerance = (abs(a) + abs(b)) * spec.pixel_size / 2 + 1e-9    # pixel centre against the true position
        for k in range(len(pt)):
            (i, j), = np.argwhere(image == pt[k])
            assert abs(cells[i, j] - eta[k]) <= tolerance
    assert 0.2 < np.mean(flipped) < 0.8   # flipped and unflipped images were both checked
    unrotated, eta_map = jet_image(pt, eta, phi, eta0, phi0, spec, return_eta_map=True)
    np.testing.assert_allclose(eta_map, [eta0, 1.0, 0.0])
    (i, _j), = np.argwhere(unrotated == 100.0)
    assert abs(cell_eta(eta_map, spec)[i, 0] - eta0) <= spec.pixel_size / 2
    with pytest.raises(Exception, match="η map"):
        cell_eta(np.zeros(4), spec)
