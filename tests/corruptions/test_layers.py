"""Layer resolution: snow, spatter and elastic_transform on the reference grid or the image grid."""

import pytest
import torch

from stabletrain.corruptions import LAYER_RESOLUTIONS, PARAMETER_SETS, corrupt

from ._support import gen


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
            reference = corrupt(x, name, severity, parameter_set, gen(severity), layer_resolution="reference")
            assert torch.equal(native, reference), (parameter_set, side)
    # Below it they differ.
    x = torch.rand(1, 3, 32, 32, generator=gen(0))
    assert not torch.equal(corrupt(x, name, 3, "imagenet", gen(1), layer_resolution="native"),
                           corrupt(x, name, 3, "imagenet", gen(1), layer_resolution="reference"))
    # and the default is the native layer
    assert torch.equal(corrupt(x, name, 3, "imagenet", gen(1)),
                       corrupt(x, name, 3, "imagenet", gen(1), layer_resolution="native"))


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
