"""The 19 common corruptions: each checked against a defining property of the reference definition."""

import io
import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage, signal, stats
from skimage import color

from stabletrain.checks import StableTrainError
from stabletrain.corruptions import (
    CORRUPTIONS,
    HELD_OUT,
    LAYER_RESOLUTIONS,
    PARAMETER_SETS,
    Corruption,
    corrupt,
    corruption_suite,
    defocus_kernel,
    frost_texture,
    motion_blur_taps,
)
from stabletrain.distortions import known_families, parse_distortion, parse_distortions

ALL = CORRUPTIONS + HELD_OUT
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
                 "gaussian_blur", "saturate"}
# Corruptions that only move or average pixels: constant images stay constant
# and every output lies between the image's darkest and brightest input pixel.
AVERAGING = ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur", "elastic_transform",
             "pixelate"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module single-threaded, restoring the setting afterwards.

    The corruptions make many passes over mid-sized tensors; when another
    process keeps a core busy, two intra-op threads wait on each other at
    every pass and a 15 ms call takes over a second. Results do not depend on
    the thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    from stabletrain.data import load_photos

    return load_photos(image_size=32, photo_side=96, sources=["astronaut", "coffee"]).train.x


def test_names_follow_the_paper_order():
    assert CORRUPTIONS == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                           "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                           "elastic_transform", "pixelate", "jpeg_compression")
    assert HELD_OUT == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert PARAMETER_SETS == ("imagenet", "cifar10")


PUBLISHED = {
    "imagenet": {
        "gaussian_noise": (.08, .12, .18, .26, .38), "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (.03, .06, .09, .17, .27), "speckle_noise": (.15, .2, .35, .45, .6),
        "gaussian_blur": (1, 2, 3, 4, 6), "contrast": (.4, .3, .2, .1, .05), "brightness": (.1, .2, .3, .4, .5),
        "jpeg_compression": (25, 18, 15, 10, 7), "pixelate": (.6, .5, .4, .3, .25),
    },
    "cifar10": {
        "gaussian_noise": (.04, .06, .08, .09, .10), "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (.01, .02, .03, .05, .07), "speckle_noise": (.06, .1, .12, .16, .2),
        "gaussian_blur": (.4, .6, .7, .8, 1), "contrast": (.75, .5, .4, .3, .15),
        "brightness": (.05, .1, .15, .2, .3), "jpeg_compression": (80, 65, 58, 50, 40),
        "pixelate": (.95, .9, .85, .75, .65),
    },
}


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_parameter_tables_hold_the_published_values(parameter_set):
    for name, values in PUBLISHED[parameter_set].items():
        assert tuple(Corruption(name, s, parameter_set).parameters for s in range(1, 6)) == pytest.approx(values)
    # zoom factors are the reference's np.arange, float quirks included (1.00 … 1.11 is 12 factors)
    counts = [len(Corruption("zoom_blur", s, parameter_set).parameters) for s in range(1, 6)]
    assert counts == ([12, 16, 11, 13, 11] if parameter_set == "imagenet" else [7, 12, 16, 21, 26])
    expected = (20, 15) if parameter_set == "imagenet" else (9, 2.5)
    assert Corruption("motion_blur", 5, parameter_set).parameters == expected


@pytest.mark.parametrize("name", ALL)
def test_every_severity_keeps_shape_dtype_range_and_input(name):
    for parameter_set in PARAMETER_SETS:
        for size, channels in ((8, 1), (8, 3), (32, 1), (32, 3), (64, 1), (64, 3)):
            x = torch.rand(2, channels, size, size, generator=gen(size + channels))
            before = x.clone()
            for severity in range(1, 6):
                out = corrupt(x, name, severity, parameter_set, gen(severity))
                assert out.shape == x.shape and out.dtype == x.dtype, (parameter_set, size, channels, severity)
                assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, (parameter_set, size, channels, severity)
                assert bool(torch.isfinite(out).all())
            assert torch.equal(x, before), "the input must not be modified"
        # rectangular images and other float dtypes
        for dtype in (torch.float64, torch.float16):
            x = torch.rand(1, 3, 12, 21, generator=gen(1)).to(dtype)
            out = corrupt(x, name, 5, parameter_set, gen(2))
            assert out.shape == x.shape and out.dtype == dtype
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_same_seed_gives_the_same_output(name):
    x = torch.rand(2, 3, 32, 32, generator=gen(7))
    for parameter_set in PARAMETER_SETS:
        first = corrupt(x, name, 3, parameter_set, gen(11))
        assert torch.equal(first, corrupt(x, name, 3, parameter_set, gen(11)))
        other = corrupt(x, name, 3, parameter_set, gen(12))
        assert torch.equal(first, other) == (name in DETERMINISTIC), parameter_set


def _clipped_normal_std(mean: float, sigma: float) -> float:
    """Standard deviation of clip(mean + sigma·Z, 0, 1), by quadrature."""
    z = np.linspace(-12, 12, 200001)
    weights = stats.norm.pdf(z)
    weights /= weights.sum()
    values = np.clip(mean + sigma * z, 0.0, 1.0)
    mu = (weights * values).sum()
    return float(np.sqrt((weights * (values - mu) ** 2).sum()))


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_gaussian_noise_has_the_listed_standard_deviation(parameter_set):
    x = torch.full((1, 1, 200, 200), 0.5)
    for severity in range(1, 6):
        sigma = Corruption("gaussian_noise", severity, parameter_set).parameters
        delta = corrupt(x, "gaussian_noise", severity, parameter_set, gen(severity)) - x
        assert float(delta.std()) == pytest.approx(_clipped_normal_std(0.5, sigma), rel=0.03)
        assert abs(float(delta.mean())) < 0.01


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_speckle_noise_is_multiplicative_with_the_listed_deviation(parameter_set):
    for level in (0.25, 0.5):
        x = torch.full((1, 1, 200, 200), level)
        for severity in range(1, 6):
            c = Corruption("speckle_noise", severity, parameter_set).parameters
            relative = (corrupt(x, "speckle_noise", severity, parameter_set, gen(severity)) - x) / x
            # clip(x + x·cZ, 0, 1) / x - 1: the relative noise is c·Z up to clipping
            expected = _clipped_normal_std(level, level * c) / level
            assert float(relative.std()) == pytest.approx(expected, rel=0.03)
            assert expected == pytest.approx(c, rel=0.12)
            assert abs(float(relative.mean())) < 0.02


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_shot_noise_is_poisson_counts_over_the_rate(parameter_set):
    level = 0.25
    x = torch.full((1, 1, 200, 200), level)
    for severity in range(1, 6):
        rate = Corruption("shot_noise", severity, parameter_set).parameters
        out = corrupt(x, "shot_noise", severity, parameter_set, gen(severity)).double()
        k = np.arange(0, int(level * rate * 10 + 50))
        pmf = stats.poisson.pmf(k, level * rate)
        values = np.clip(k / rate, 0, 1)
        mean = (pmf * values).sum()
        var = (pmf * (values - mean) ** 2).sum()
        assert float(out.mean()) == pytest.approx(mean, abs=4 * math.sqrt(var / out.numel()))
        assert float(out.var()) == pytest.approx(var, rel=0.05)
        # unclipped, the variance is x / rate
        if rate >= 12:
            assert var == pytest.approx(level / rate, rel=0.01)
        # the output is a whole number of photons over the rate
        counts = out * rate
        assert float((counts - counts.round()).abs().max()) < 1e-3


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_impulse_noise_sets_the_listed_fraction_to_salt_or_pepper(parameter_set):
    x = torch.full((1, 3, 128, 128), 0.5)
    n = x.numel()
    for severity in range(1, 6):
        amount = Corruption("impulse_noise", severity, parameter_set).parameters
        out = corrupt(x, "impulse_noise", severity, parameter_set, gen(severity))
        changed = out != x
        assert bool(((out[changed] == 0) | (out[changed] == 1)).all())
        fraction = float(changed.float().mean())
        assert fraction == pytest.approx(amount, abs=4 * math.sqrt(amount * (1 - amount) / n))
        salt = float((out == 1).float().sum() / changed.float().sum())
        assert salt == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_jpeg_compression_is_a_pillow_round_trip_at_the_listed_quality(parameter_set, photos):
    for channels in (3, 1):
        image = photos[:2] if channels == 3 else photos[:2].mean(1, keepdim=True)
        for severity in (1, 5):
            quality = Corruption("jpeg_compression", severity, parameter_set).parameters
            got = corrupt(image, "jpeg_compression", severity, parameter_set)
            for i in range(2):
                array = (image[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                pil = Image.fromarray(array[..., 0] if channels == 1 else array)
                buffer = io.BytesIO()
                pil.save(buffer, format="JPEG", quality=quality)
                expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255
                expected = expected[..., None] if channels == 1 else expected
                np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy(), expected, atol=1e-6)


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


@pytest.mark.parametrize("name", AVERAGING)
def test_blurs_and_warps_keep_constant_images_and_stay_within_the_input_range(name):
    for parameter_set in PARAMETER_SETS:
        for shape in ((2, 3, 8, 8), (2, 1, 32, 32), (1, 3, 13, 21)):
            constant = torch.full(shape, 0.37)
            x = torch.rand(shape, generator=gen(3)) * 0.5 + 0.2
            for severity in range(1, 6):
                torch.testing.assert_close(corrupt(constant, name, severity, parameter_set, gen(1)), constant,
                                           atol=1e-5, rtol=0)
                out = corrupt(x, name, severity, parameter_set, gen(2))
                low = x.amin(dim=(1, 2, 3), keepdim=True)
                high = x.amax(dim=(1, 2, 3), keepdim=True)
                assert bool((out >= low - 1e-5).all() and (out <= high + 1e-5).all()), (parameter_set, severity)


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


def _skimage_hsv_map(x: torch.Tensor, fn) -> torch.Tensor:
    hsv = color.rgb2hsv(x[0].permute(1, 2, 0).double().numpy())
    fn(hsv)
    rgb = np.clip(color.hsv2rgb(hsv), 0, 1)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float()


def _test_image() -> torch.Tensor:
    x = torch.rand(1, 3, 16, 16, generator=gen(9))
    x[..., 0, :4] = 0.0  # black
    x[..., 1, :4] = 0.6  # grey
    x[..., 2, :4] = 1.0  # white
    return x


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_brightness_adds_to_the_hsv_value(parameter_set):
    x = _test_image()
    for severity in range(1, 6):
        c = Corruption("brightness", severity, parameter_set).parameters

        def brighten(hsv, c=c):
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)

        torch.testing.assert_close(corrupt(x, "brightness", severity, parameter_set),
                                   _skimage_hsv_map(x, brighten), atol=2e-6, rtol=0)
        grey = x[:, :1]
        torch.testing.assert_close(corrupt(grey, "brightness", severity, parameter_set), (grey + c).clamp(0, 1))


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_saturate_scales_the_hsv_saturation(parameter_set):
    x = _test_image()
    for severity in range(1, 6):
        a, b = Corruption("saturate", severity, parameter_set).parameters

        def saturate(hsv, a=a, b=b):
            hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)

        torch.testing.assert_close(corrupt(x, "saturate", severity, parameter_set),
                                   _skimage_hsv_map(x, saturate), atol=2e-6, rtol=0)
        # the reference returns the red (value) channel for grey input: unchanged
        torch.testing.assert_close(corrupt(x[:, :1], "saturate", severity, parameter_set), x[:, :1])


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_contrast_shrinks_towards_each_channels_mean(parameter_set, photos):
    for severity in range(1, 6):
        c = Corruption("contrast", severity, parameter_set).parameters
        mean = photos.mean(dim=(2, 3), keepdim=True)
        torch.testing.assert_close(corrupt(photos, "contrast", severity, parameter_set),
                                   ((photos - mean) * c + mean).clamp(0, 1))


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_pixelate_is_a_pillow_box_down_and_nearest_up_scale(parameter_set, photos):
    for channels in (3, 1):
        image = photos[:2] if channels == 3 else photos[:2, :1]
        image = (image * 255).round() / 255
        for severity in range(1, 6):
            c = Corruption("pixelate", severity, parameter_set).parameters
            out = corrupt(image, "pixelate", severity, parameter_set)
            small = int(32 * c)
            # piecewise constant in blocks: exactly `small` distinct rows and columns
            assert len(torch.unique(out[0], dim=1)) <= small and len(torch.unique(out[0], dim=2)) <= small
            for i in range(2):
                array = (image[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                pil = Image.fromarray(array[..., 0] if channels == 1 else array)
                pil = pil.resize((small, small), Image.BOX).resize((32, 32), Image.NEAREST)
                expected = np.asarray(pil, dtype=np.float32) / 255
                expected = expected[..., None] if channels == 1 else expected
                np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), expected, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_pixelate_matches_pillow_on_odd_sizes_where_rounding_ties_occur(parameter_set):
    rng = np.random.default_rng(0)
    enlarge = Image.NEAREST if parameter_set == "imagenet" else Image.BOX  # as the two references do
    for height, width in ((45, 77), (200, 224), (13, 21)):
        array = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
        for severity in range(1, 6):
            c = Corruption("pixelate", severity, parameter_set).parameters
            pil = Image.fromarray(array).resize((int(width * c), int(height * c)), Image.BOX)
            expected = np.asarray(pil.resize((width, height), enlarge), dtype=np.float32) / 255
            out = corrupt(x, "pixelate", severity, parameter_set)[0].permute(1, 2, 0).numpy()
            np.testing.assert_allclose(out, expected, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_snow_only_brightens(parameter_set, photos):
    for image in (photos[:4], photos[:4, :1]):
        for severity in range(1, 6):
            out = corrupt(image, "snow", severity, parameter_set, gen(severity))
            assert bool((out >= image - 1e-6).all())
            assert float((out - image).mean()) > 0.01


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_frost_blends_the_image_with_a_frost_texture(parameter_set):
    a = torch.rand(2, 3, 32, 32, generator=gen(1)) * 0.3
    b = torch.rand(2, 3, 32, 32, generator=gen(2)) * 0.3
    for severity in range(1, 6):
        keep, weight = Corruption("frost", severity, parameter_set).parameters
        out_a = corrupt(a, "frost", severity, parameter_set, gen(5))
        out_b = corrupt(b, "frost", severity, parameter_set, gen(5))
        unclipped = (out_a < 1) & (out_b < 1)
        # same seed, same texture: the difference is the images' times c[0]
        torch.testing.assert_close((out_a - out_b)[unclipped], keep * (a - b)[unclipped], atol=1e-5, rtol=0)
        black = corrupt(torch.zeros(2, 3, 32, 32), "frost", severity, parameter_set, gen(5))
        assert 0.5 * weight < float(black.mean()) < 0.8 * weight


def test_frost_texture_is_seeded_pale_blue_and_textured():
    for side in (32, 96):
        t = frost_texture(4, side, side, generator=gen(0))
        torch.testing.assert_close(t, frost_texture(4, side, side, generator=gen(0)))
        r, g, b = t.mean(dim=(0, 2, 3)).tolist()
        assert 0.5 < r < g < b < 0.8  # the frost photographs average about (0.57, 0.66, 0.70)
        assert 0.06 < float(t.std(dim=(2, 3)).mean()) < 0.2
        grey = frost_texture(2, side, side, channels=1, generator=gen(0))
        assert grey.shape == (2, 1, side, side)


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_fog_adds_a_scaled_layer_and_renormalizes_by_the_maximum(parameter_set):
    a = torch.rand(2, 3, 32, 32, generator=gen(1)) * 0.5
    b = torch.rand(2, 3, 32, 32, generator=gen(2)) * 0.5
    a[..., 0, 0] = b[..., 0, 0] = 1.0  # same maximum
    for severity in range(1, 6):
        c, _ = Corruption("fog", severity, parameter_set).parameters
        out_a = corrupt(a, "fog", severity, parameter_set, gen(4))
        out_b = corrupt(b, "fog", severity, parameter_set, gen(4))
        unclipped = (out_a < 1) & (out_b < 1)
        torch.testing.assert_close((out_a - out_b)[unclipped], ((a - b) / (1 + c))[unclipped], atol=1e-5, rtol=0)
        # the fog layer is one grey plasma: it brightens, equally in every channel
        fog = out_a * (1 + c) - a
        torch.testing.assert_close(fog[:, 0][unclipped[:, 0]], fog[:, 1][unclipped[:, 0]], atol=1e-5, rtol=0)
        assert float(fog.min()) >= -1e-5


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_spatter_adds_water_or_covers_with_mud(parameter_set):
    x = torch.rand(4, 3, 64, 64, generator=gen(3)) * 0.6 + 0.2
    mud = torch.tensor([63, 42, 20]).view(1, 3, 1, 1) / 255
    for severity in range(1, 6):
        out = corrupt(x, "spatter", severity, parameter_set, gen(severity))
        delta = out - x
        assert float(delta.abs().amax()) > 0.05
        if severity <= 3:  # water only adds light
            assert bool((delta >= -1e-6).all())
        else:  # mud mixes each pixel towards the mud colour
            assert bool((delta * (mud - x) >= -1e-6).all())
            assert bool((delta.abs() <= (mud - x).abs() + 1e-5).all())


def test_spatter_distance_and_equalization_steps_match_scipy_and_opencv():
    from stabletrain.corruptions import _equalize_hist, _truncated_distance

    rims = torch.rand(3, 1, 40, 50, generator=gen(0)) < 0.01
    expected = np.stack([ndimage.distance_transform_edt(~r[0]) for r in rims.numpy()])[:, None]
    np.testing.assert_allclose(_truncated_distance(rims, 20.0, torch.float64).numpy(), np.minimum(expected, 20),
                               atol=1e-9)
    cv2 = pytest.importorskip("cv2")  # only present with the benchmark's reference package
    rng = np.random.default_rng(0)
    for _ in range(20):
        image = (rng.random((40, 50)) ** 3 * 200).astype(np.uint8)
        ours = _equalize_hist(torch.from_numpy(image).float()[None, None])[0, 0].numpy()
        np.testing.assert_array_equal(ours, cv2.equalizeHist(image))


def test_glass_and_motion_blur_keep_the_mean_brightness(photos):
    for parameter_set in PARAMETER_SETS:
        for name in ("glass_blur", "motion_blur", "elastic_transform"):
            out = corrupt(photos, name, 5, parameter_set, gen(0))
            assert float((out.mean((1, 2, 3)) - photos.mean((1, 2, 3))).abs().max()) < 0.03, (parameter_set, name)


# The reference tables themselves are not monotone for these (mean absolute
# change over a batch): saturate desaturates at 1–2 and saturates at 3–5;
# frost darkens the image more as it adds frost; glass blur trades blur for
# shuffling iterations; ImageNet snow 2 is denser than snow 3; CIFAR-10-C's
# elastic affine part shrinks as the elastic part grows; CIFAR-10-C spatter
# switches from water to sparser mud at 4. See docs/corruptions.md.
NOT_MONOTONE = {("imagenet", "saturate"), ("cifar10", "saturate"), ("imagenet", "frost"), ("cifar10", "frost"),
                ("imagenet", "glass_blur"), ("cifar10", "glass_blur"), ("imagenet", "snow"),
                ("cifar10", "elastic_transform"), ("cifar10", "spatter")}


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_severity_increases_the_change_on_natural_images(parameter_set, photos):
    for name in ALL:
        changes = [float((corrupt(photos, name, s, parameter_set, gen(0)) - photos).abs().mean()) for s in range(1, 6)]
        assert changes[-1] > 0.003, (name, changes)
        if (parameter_set, name) in NOT_MONOTONE:
            continue
        # CIFAR-10-C motion 3 and 4 differ only in Gaussian tails below 1e-9, hence the tolerance
        assert all(b >= a - 1e-4 for a, b in itertools.pairwise(changes)), (name, changes)
        assert changes[-1] > changes[0], (name, changes)


# ---- layer resolution: snow, spatter and elastic_transform on the image grid -------------------------------

LAYERED = ["snow", "spatter", "elastic_transform"]


def _ramps(batch: int, side: int) -> torch.Tensor:
    """Channel 0 rises left to right, channel 1 top to bottom: a warp's output minus its input is the shift."""
    ramp = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    x = torch.full((batch, 3, side, side), 0.5)
    x[:, 0] = ramp.view(1, -1)
    x[:, 1] = ramp.view(-1, 1)
    return x


@pytest.mark.parametrize("name", LAYERED)
def test_native_layers_keep_shape_range_input_and_seed(name):
    for parameter_set in PARAMETER_SETS:
        for shape in ((2, 1, 8, 8), (2, 3, 12, 21), (2, 3, 32, 32), (2, 3, 64, 64)):
            x = torch.rand(*shape, generator=gen(shape[-1]))
            before = x.clone()
            for severity in range(1, 6):
                out = corrupt(x, name, severity, parameter_set, gen(severity), layer_resolution="native")
                assert out.shape == x.shape and out.dtype == x.dtype, (parameter_set, shape, severity)
                assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, (parameter_set, shape, severity)
                again = corrupt(x, name, severity, parameter_set, gen(severity), layer_resolution="native")
                assert torch.equal(out, again), (parameter_set, shape, severity)
            other = corrupt(x, name, 3, parameter_set, gen(99), layer_resolution="native")
            assert not torch.equal(other, corrupt(x, name, 3, parameter_set, gen(3), layer_resolution="native"))
            assert torch.equal(x, before), "the input must not be modified"
        x64 = torch.rand(1, 3, 16, 16, generator=gen(5), dtype=torch.float64)
        assert corrupt(x64, name, 5, parameter_set, gen(1), layer_resolution="native").dtype == torch.float64


@pytest.mark.parametrize("name", LAYERED)
def test_native_and_reference_layers_agree_from_the_reference_side_up(name):
    # At or above the reference side the reference grid is no larger than the image: nothing changes.
    for parameter_set, side in (("cifar10", 32), ("cifar10", 48), ("imagenet", 224)):
        x = torch.rand(1, 3, side, side, generator=gen(side))
        for severity in (1, 3, 5):
            native = corrupt(x, name, severity, parameter_set, gen(severity), layer_resolution="native")
            assert torch.equal(native, corrupt(x, name, severity, parameter_set, gen(severity))), (parameter_set, side)
    # Below it they differ.
    x = torch.rand(1, 3, 32, 32, generator=gen(0))
    assert not torch.equal(corrupt(x, name, 3, "imagenet", gen(1), layer_resolution="native"),
                           corrupt(x, name, 3, "imagenet", gen(1)))


def test_native_snow_brightens_like_the_reference_layer():
    grey = torch.full((16, 3, 32, 32), 0.3)
    for severity in range(1, 6):
        changes = {}
        for resolution in LAYER_RESOLUTIONS:
            changes[resolution] = corrupt(grey, "snow", severity, "imagenet", gen(severity),
                                          layer_resolution=resolution) - grey
        native, reference = changes["native"], changes["reference"]
        assert bool((native >= -1e-6).all())
        # the same flakes (same draws), blurred after instead of before the area averaging
        assert abs(float(native.mean()) / float(reference.mean()) - 1) < 0.03, severity
        assert 0.7 < float(native.std()) / float(reference.std()) < 1.1, severity


def test_native_elastic_field_keeps_the_reference_displacements():
    x = _ramps(32, 32)
    inner = slice(8, 24)  # away from the reflecting borders
    for severity in range(1, 6):
        shifts = {}
        for resolution in LAYER_RESOLUTIONS:
            out = corrupt(x, "elastic_transform", severity, "imagenet", gen(severity), layer_resolution=resolution)
            shifts[resolution] = ((out - x)[:, :2, inner, inner] * 32).double()  # in pixels
        native, reference = shifts["native"], shifts["reference"]
        rms_native, rms_reference = native.pow(2).mean().sqrt(), reference.pow(2).mean().sqrt()
        assert 0.05 < float(rms_reference) < 0.3  # sub-pixel at 32 px: 224-px shifts of 1-2 px, scaled by 1/7
        assert abs(float(rms_native / rms_reference) - 1) < 0.1, severity

        def neighbour_correlation(field: torch.Tensor) -> float:
            return float((field[..., 1:] * field[..., :-1]).mean() / field.pow(2).mean())

        # a smooth field: neighbouring pixels move together, by the same amount as in the reference
        assert abs(neighbour_correlation(native) - neighbour_correlation(reference)) < 0.1, severity
        assert neighbour_correlation(native) > 0.2  # white noise would give 0


def test_native_elastic_covariance_and_resize_operators_are_exact():
    from stabletrain.corruptions import (
        _field_matrix,
        _field_root,
        _resize,
        _resize_matrix,
    )

    image = torch.rand(1, 1, 224, 224, dtype=torch.float64, generator=gen(0))
    rows, cols = _resize_matrix(224, 32), _resize_matrix(224, 40)
    torch.testing.assert_close(rows @ image[0, 0] @ cols.T, _resize(image, 32, 40)[0, 0])
    matrix, root = _field_matrix(224, 32, 2.24), _field_root(224, 32, 2.24)
    torch.testing.assert_close(root @ root.T, matrix @ matrix.T)


def test_native_spatter_keeps_the_mean_light_and_mud_cover():
    black, white = torch.zeros(32, 3, 32, 32), torch.ones(32, 3, 32, 32)
    for severity in range(1, 6):
        water = severity <= 3  # ImageNet-C spatter 1-3 is water, 4-5 mud
        image = black if water else white
        effect = {}
        for resolution in LAYER_RESOLUTIONS:
            out = corrupt(image, "spatter", severity, "imagenet", gen(severity), layer_resolution=resolution)
            effect[resolution] = float(out.mean()) if water else float(1 - out.mean())
        assert effect["reference"] > 0.003
        assert abs(effect["native"] / effect["reference"] - 1) < 0.25, (severity, effect)


def test_bad_arguments_raise_stabletrain_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(StableTrainError, match="unknown corruption 'gaussian'.*gaussian_noise.*saturate"):
        corrupt(x, "gaussian", 1)
    for severity in (0, 6, 2.5, "3", True, None):
        with pytest.raises(StableTrainError, match="severity must be an integer in 1..5"):
            Corruption("fog", severity)
    with pytest.raises(StableTrainError, match="unknown corruption parameter set 'cifar100'.*imagenet, cifar10"):
        corruption_suite("cifar100")
    with pytest.raises(StableTrainError, match="1- or 3-channel"):
        corrupt(torch.rand(1, 2, 16, 16), "fog", 1)
    with pytest.raises(StableTrainError, match="at least 8"):
        corrupt(torch.rand(1, 3, 4, 16), "fog", 1)
    with pytest.raises(StableTrainError, match=r"\[0, 1\]"):
        corrupt(torch.full((1, 3, 16, 16), 2.0), "fog", 1)
    with pytest.raises(StableTrainError):
        corruption_suite(names=[])
    with pytest.raises(StableTrainError, match="unknown layer resolution 'image'.*reference, native"):
        corrupt(x, "snow", 1, layer_resolution="image")
    assert repr(Corruption("snow", 2, layer_resolution="native")) == "Corruption('snow-2', layer_resolution='native')"
    assert {c.layer_resolution for c in corruption_suite(layer_resolution="native")} == {"native"}
    assert Corruption("fog", 3.0).severity == 3 and Corruption("fog", np.int64(2), "c10").parameter_set == "cifar10"


def test_specs_parse_for_both_parameter_sets():
    families = set(known_families())
    for name in ALL:
        assert {name, f"c10/{name}"} <= families
        imagenet = parse_distortion(f"{name}-3")
        assert isinstance(imagenet, Corruption) and imagenet.parameter_set == "imagenet"
        assert (imagenet.name, imagenet.severity, imagenet.spec) == (name, 3, f"{name}-3")
        cifar = parse_distortion(f"c10/{name}-5")
        assert cifar.parameter_set == "cifar10" and cifar.spec == f"c10/{name}-5" and cifar.family == f"c10/{name}"
    assert parse_distortion("fog-2.0").severity == 2
    assert repr(parse_distortion("c10/fog-1")) == "Corruption('c10/fog-1')"
    with pytest.raises(StableTrainError):
        parse_distortion("fog-7")
    specs = [c.spec for c in corruption_suite("cifar10", names=CORRUPTIONS + HELD_OUT)]
    assert len(specs) == 95 and specs[:2] == ["c10/gaussian_noise-1", "c10/gaussian_noise-2"]
    assert [d.spec for d in parse_distortions(",".join(specs))] == specs
    assert [c.spec for c in corruption_suite()][:6] == [f"gaussian_noise-{s}" for s in range(1, 6)] + ["shot_noise-1"]
    assert all(c.stronger_when_larger for c in corruption_suite())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_gives_the_same_corruption_on_the_gpu():
    x = torch.rand(2, 3, 32, 32, generator=gen(0))
    for name in ALL:
        cpu = corrupt(x, name, 3, "cifar10", gen(1))
        gpu = corrupt(x.cuda(), name, 3, "cifar10", gen(1))
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3 if name != "jpeg_compression" else 1e-6, rtol=0)
