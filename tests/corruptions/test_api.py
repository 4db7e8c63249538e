"""Properties every corruption shares: shapes, seeds, ranges, severities, errors and spec strings."""

import itertools

import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.corruptions import (
    CORRUPTIONS,
    DEFAULT_LAYER_RESOLUTION,
    HELD_OUT,
    PARAMETER_SETS,
    Corruption,
    corrupt,
    corruption_suite,
)
from stabletrain.distortions import known_families, parse_distortion, parse_distortions

from ._support import ALL, AVERAGING, DETERMINISTIC, gen


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
    with pytest.raises(StableTrainError, match="unknown layer resolution 'image'.*native, reference"):
        corrupt(x, "snow", 1, layer_resolution="image")
    # the default is native layers, and the repr names only a setting that differs from it
    assert DEFAULT_LAYER_RESOLUTION == "native" and Corruption("snow", 2).layer_resolution == "native"
    assert repr(Corruption("snow", 2)) == "Corruption('snow-2')"
    assert repr(Corruption("snow", 2, layer_resolution="reference")) == \
        "Corruption('snow-2', layer_resolution='reference')"
    assert {c.layer_resolution for c in corruption_suite()} == {"native"}
    assert {c.layer_resolution for c in corruption_suite(layer_resolution="reference")} == {"reference"}
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
