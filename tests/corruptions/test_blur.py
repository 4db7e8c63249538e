"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, signal

from stabletrain.corruptions import PARAMETER_SETS, Corruption, corrupt, defocus_kernel, motion_blur_taps

from ._support import gen


def _reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's disk() for radius <= 8: a 17×17 aliased disk blurred by a 3×3 Gaussian."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    return signal.convolve2d(disk, np.outer(g, g), mode="same")


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_defocus_kernels_are_the_reference_disks_and_sum_to_one(parameter_set):
    for severity in range(1, 6):
        radius, alias = Corruption("defocus_blur", severity, parameter_set).parameters
        for scale in (0.1, 0.5, 1.0, 2.0):
            kernel = defocus_kernel(radius, alias, scale)
            assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-9)
            assert bool((kernel >= 0).all()) and kernel.shape[0] % 2 == 1
            torch.testing.assert_close(kernel, kernel.flip(0).T)  # symmetric
        if radius <= 6:
            ours = defocus_kernel(radius, alias).numpy()
            reach = ours.shape[0] // 2
            np.testing.assert_allclose(ours, _reference_disk(radius, alias)[8 - reach:9 + reach, 8 - reach:9 + reach],
                                       atol=1e-9)


def test_defocus_filters_like_opencv_filter2d(photos):
    # cv2.filter2D correlates with the kernel and reflects at the border (BORDER_REFLECT_101 = scipy 'mirror')
    kernel = defocus_kernel(1.5, 0.1).numpy()
    out = corrupt(photos[:2], "defocus_blur", 5, "cifar10").numpy()
    expected = ndimage.correlate(photos[:2].numpy().astype(np.float64), kernel[None, None], mode="mirror")
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-5)


def test_motion_blur_taps_are_imagemagicks_line_kernel():
    weights, dy, dx = motion_blur_taps(10, 3, torch.tensor([0.0, 90.0, -45.0]))
    assert weights.numel() == 21 and float(weights.sum()) == pytest.approx(1.0)
    assert bool((weights[1:] <= weights[:-1]).all())  # one-sided Gaussian, heaviest at the pixel itself
    i = torch.arange(21)
    assert dy[0].tolist() == [0] * 21 and dx[0].tolist() == i.tolist()
    assert dy[1].tolist() == i.tolist() and dx[1].tolist() == [0] * 21
    assert dy[2].tolist() == (-dx[2]).tolist()  # a diagonal line


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_motion_blur_spreads_a_point_along_one_line(parameter_set):
    x = torch.zeros(4, 1, 64, 64)
    x[:, :, 32, 32] = 1.0
    for severity in (1, 5):
        out = corrupt(x, "motion_blur", severity, parameter_set, gen(severity))
        radius, _ = Corruption("motion_blur", severity, parameter_set).parameters
        width = 2 * math.ceil(radius * 64 / {"imagenet": 224, "cifar10": 32}[parameter_set]) + 1
        for image in out[:, 0]:
            assert float(image.sum()) == pytest.approx(1.0, abs=1e-4)
            support = (image > 1e-6).nonzero().float()
            assert len(support) <= width
            # every tap lies within width pixels of the point, on a line through it
            offsets = support - 32
            assert float(offsets.norm(dim=1).max()) <= width * math.sqrt(2)
            if len(support) >= 3:
                centred = offsets - offsets.mean(0)
                assert float(torch.linalg.svdvals(centred)[1]) < 0.6 * math.sqrt(len(support))


def test_gaussian_blur_matches_scipy_at_the_reference_size():
    rng = torch.Generator().manual_seed(0)
    for parameter_set, side in (("cifar10", 32), ("imagenet", 224)):
        x = torch.rand(1, 1, side, side, generator=rng, dtype=torch.float64)
        for severity in range(1, 6):
            sigma = Corruption("gaussian_blur", severity, parameter_set).parameters
            expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
            out = corrupt(x, "gaussian_blur", severity, parameter_set)
            np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def _map_coordinates_zoom_blur(x: np.ndarray, factors) -> np.ndarray:
    """The mean of the image and its bilinear zooms about the pixel-centre midpoint, edges repeated (scipy)."""
    *_, height, width = x.shape
    yy, xx = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    cy, cx = (height - 1) / 2, (width - 1) / 2
    out = x.copy()
    for z in factors:
        coordinates = [cy + (yy - cy) / z, cx + (xx - cx) / z]
        for plane in np.ndindex(*x.shape[:-2]):
            out[plane] += ndimage.map_coordinates(x[plane], coordinates, order=1, mode="nearest")
    return out / (len(factors) + 1)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 1, 30, 41)])
def test_zoom_blur_is_the_mean_of_bilinear_zooms_like_scipy(shape, sparse, monkeypatch):
    # the sparse operator (all factors in one product) and the grid_sample path it replaces on large images
    from stabletrain.corruptions import blur
    if not sparse:
        monkeypatch.setattr(blur, "_ZOOM_OPERATOR_ENTRIES", 0)
    x = torch.rand(shape, generator=gen(11), dtype=torch.float64)
    for parameter_set in PARAMETER_SETS:
        for severity in (1, 5):
            factors = Corruption("zoom_blur", severity, parameter_set).parameters
            out = corrupt(x, "zoom_blur", severity, parameter_set)
            np.testing.assert_allclose(out.numpy(), _map_coordinates_zoom_blur(x.numpy(), factors), atol=1e-12)


def test_zoom_blur_zooms_about_the_centre():
    # zooming about the centre commutes with a half turn, so a half-turn
    # symmetric image stays symmetric
    x = torch.rand(2, 3, 32, 32, generator=gen(5))
    x = (x + x.flip(-2, -1)) / 2
    for parameter_set in PARAMETER_SETS:
        for severity in (1, 5):
            out = corrupt(x, "zoom_blur", severity, parameter_set)
            torch.testing.assert_close(out, out.flip(-2, -1), atol=1e-5, rtol=0)
            # … and the image is blurred outward: the centre changes least
            change = (out - x).abs().mean((0, 1))
            assert float(change[12:20, 12:20].mean()) < float(change.mean())


@pytest.mark.parametrize("shape", [(1, 1, 30, 41), (1, 3, 30, 41), (2, 3, 30, 41), (4, 1, 33, 28)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_kernels_filter_like_scipy_correlate_for_any_plane_count(shape, dtype):
    # 25×25 taps go by FFT: one plane through real FFTs, several through complex
    # FFTs that carry two planes at once (an odd count pairs the last with zeros)
    from stabletrain.corruptions._ops import _MAX_SHIFTED_TAPS, _filter_per_image

    x = torch.rand(shape, generator=gen(3), dtype=torch.float64)
    kernel = torch.rand(1, 25, 25, generator=gen(4), dtype=torch.float64)
    kernel /= kernel.sum()
    assert int((kernel != 0).sum()) > _MAX_SHIFTED_TAPS
    expected = ndimage.correlate(x.numpy(), kernel.numpy()[None], mode="mirror")
    out = _filter_per_image(x.to(dtype), kernel.to(dtype), "reflect101")
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out.double().numpy(), expected, atol=1e-12 if dtype == torch.float64 else 2e-6)
    # each image's planes come out the same whatever shares its transforms
    alone = torch.cat([_filter_per_image(x[b:b + 1, c:c + 1].to(dtype), kernel.to(dtype), "reflect101")
                       for b in range(shape[0]) for c in range(shape[1])], 1).view(shape)
    torch.testing.assert_close(out, alone, atol=1e-12 if dtype == torch.float64 else 2e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zoom_blur_gives_each_image_the_same_bits_in_any_batch(dtype):
    # the sparse operator's columns are image planes, padded to a multiple of 16: none may round differently
    x = torch.rand(7, 3, 32, 32, generator=gen(12), dtype=dtype)
    for severity in (1, 5):
        whole = corrupt(x, "zoom_blur", severity)
        alone = torch.cat([corrupt(x[i:i + 1], "zoom_blur", severity) for i in range(len(x))])
        assert torch.equal(whole, alone)
        assert torch.equal(corrupt(x[1:6], "zoom_blur", severity), whole[1:6])
