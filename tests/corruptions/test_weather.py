"""Weather corruptions: snow, frost, fog, brightness, spatter."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from stabletrain.corruptions import LAYER_RESOLUTIONS, PARAMETER_SETS, Corruption, corrupt, frost_texture

from ._support import _skimage_hsv_map, _test_image, gen


@pytest.mark.parametrize("layer_resolution", LAYER_RESOLUTIONS)
@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_snow_only_brightens(parameter_set, layer_resolution, photos):
    for image in (photos[:4], photos[:4, :1]):
        for severity in range(1, 6):
            out = corrupt(image, "snow", severity, parameter_set, gen(severity), layer_resolution=layer_resolution)
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


@pytest.mark.parametrize("layer_resolution", LAYER_RESOLUTIONS)
@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_spatter_adds_water_or_covers_with_mud(parameter_set, layer_resolution):
    x = torch.rand(4, 3, 64, 64, generator=gen(3)) * 0.6 + 0.2
    mud = torch.tensor([63, 42, 20]).view(1, 3, 1, 1) / 255
    for severity in range(1, 6):
        out = corrupt(x, "spatter", severity, parameter_set, gen(severity), layer_resolution=layer_resolution)
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


@pytest.mark.parametrize("short_blocks", [False, True])
def test_sparse_seeds_are_independent_bernoulli_draws_per_pixel(monkeypatch, short_blocks):
    # The geometric-gap sampler against the per-pixel definition: counts per region follow
    # maps · scale · Σ base² (a Poisson-binomial, so within a few standard deviations), the
    # brightness is uniform on [0.5, 1), and no pixel holds two seeds in one map. With short
    # blocks the sampler must extend its draws many times and still give the same law.
    from scipy import stats

    from stabletrain.corruptions import weather

    if short_blocks:
        monkeypatch.setattr(weather, "_SEED_MARGIN", 0.0)
        monkeypatch.setattr(weather, "_SEED_SLACK", 1.0)
    batch, maps, side, scale = 16, 3, 48, 0.05
    ramp = torch.linspace(0.0, 1.0, side).view(1, 1, 1, side).expand(batch, 1, side, side).contiguous()
    ramp[1] = 0.0  # an image without any chance of a seed
    (b, k, y, x), values = weather._bernoulli_seeds(scale, ramp, maps, gen(11))
    assert not bool((b == 1).any())
    flat = ((b * maps + k) * side + y) * side + x
    assert flat.unique().numel() == flat.numel()
    chance = (scale * ramp ** 2).double()
    for lo, hi in ((0, 16), (16, 32), (32, 48)):  # three column bands of rising chance
        p = chance[..., lo:hi]
        mean, var = maps * p.sum().item(), maps * (p * (1 - p)).sum().item()
        count = int(((x >= lo) & (x < hi)).sum())
        assert abs(count - mean) < 5 * var ** 0.5 + 1, (lo, count, mean)
    assert stats.kstest(((values - 0.5) * 2).numpy(), "uniform").pvalue > 1e-3
    assert bool(((values >= 0.5) & (values < 1.0)).all())


def test_sparse_seeds_come_from_each_image_s_own_stream():
    from stabletrain.corruptions import weather
    from stabletrain.seeding import ExampleRNG

    base = torch.rand(4, 1, 20, 30, generator=gen(2))
    whole, values = weather._bernoulli_seeds(0.1, base, 3, ExampleRNG.for_examples([5, 6, 7, 8], 0, "seeds"))
    part, part_values = weather._bernoulli_seeds(0.1, base[2:3], 3, ExampleRNG.for_examples([7], 0, "seeds"))
    mine = whole[0] == 2
    assert torch.equal(torch.stack([i[mine] for i in whole[1:]]), torch.stack(part[1:]))
    assert torch.equal(values[mine], part_values)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_snow_layer_threshold_keeps_values_at_the_threshold_and_zeroes_those_below(dtype):
    # the reference zeroes layer < threshold and clips the rest to [0, 1]; F.threshold zeroes x <= t, so snow
    # passes the largest number below the threshold, and no number of the dtype lies between the two
    from stabletrain.corruptions.weather import _below

    for threshold in (0.1, 0.3, 0.5, 0.7, 0.78, 1.0):
        t = float(torch.tensor(threshold, dtype=dtype))
        below = _below(t, dtype)
        assert below < t and float(torch.nextafter(torch.tensor(below, dtype=dtype), torch.tensor(2.0, dtype=dtype))) == t
        layer = torch.tensor([-1.0, 0.0, below, t, (t + 1) / 2, 1.0, 1.5], dtype=dtype)
        layer = torch.cat([layer, torch.randn(200, generator=gen(1)).to(dtype)])
        expected = layer.masked_fill(layer < t, 0.0).clamp(0.0, 1.0)
        ours = torch.nn.functional.threshold(layer.clone(), below, 0.0).clamp_max_(1.0)
        assert torch.equal(ours, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("small, fine, size", [((75, 75), (224, 224), (32, 32)), ((23, 37), (70, 111), (20, 31)),
                                               ((50, 50), (50, 50), (24, 24))])
def test_native_snow_flakes_are_enlarged_thresholded_and_area_averaged(small, fine, size, dtype):
    # The batch-innermost layout of native snow against the three plain calls it replaces
    import torch.nn.functional as F

    from stabletrain.corruptions._ops import _resize, _upsample_threshold_shrink
    noise = torch.randn(5, 1, *small, generator=gen(3), dtype=dtype) * 0.3 + 0.55
    fast = _upsample_threshold_shrink(noise, fine, size, 0.85)
    layer = noise if small == fine else F.interpolate(noise, size=fine, mode="bilinear", align_corners=True)
    slow = _resize(F.threshold(layer, 0.85, 0.0).clamp_max(1.0), *size)
    assert fast.shape == (5, 1, *size) and fast.dtype == dtype
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    assert float(slow.amax()) > 0.1  # some flakes survive the threshold
    # every image gets the same bits in any batch, across the 16-plane padding boundaries
    for batch in (1, 16, 17, 40):
        many = torch.randn(batch, 1, *small, generator=gen(batch), dtype=dtype) * 0.3 + 0.55
        whole = _upsample_threshold_shrink(many, fine, size, 0.85)
        alone = torch.cat([_upsample_threshold_shrink(many[i:i + 1], fine, size, 0.85) for i in range(batch)])
        assert torch.equal(whole, alone), batch
