import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stabletrain.checks import StableTrainError
from stabletrain.distortions import (
    JPEG,
    Crop,
    Thumbnail,
    known_families,
    paper_sweep,
    parse_distortion,
    parse_distortions,
)

RANDOM_SPECS = ["crop-10", "gaussian-0.1"]
ALL_SPECS = ["jpeg-75", "jpeg-10", "thumb-16", "thumb-8", "crop-10", "crop-25", "gaussian-0.1", "gaussian-0.5"]


def test_jpeg_100_is_close_to_identity_and_error_grows_as_quality_falls(photo_patches, digits):
    for images in (photo_patches, digits.test.x[:32]):
        errors = [float((JPEG(q)(images) - images).abs().mean()) for q in (100, 90, 70, 50, 30, 10)]
        assert errors[0] < 0.01
        assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_jpeg_matches_an_independent_pillow_round_trip(photo_patches):
    image = photo_patches[:1]
    array = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=40)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32) / 255
    got = JPEG(40)(image)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("size", [(64, 64), (65, 64), (96, 80)])   # both sides of the interleaving switch at 64²
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_jpeg_batch_equals_pillow_image_by_image(photo_patches, size, channels, dtype):
    # The batch path converts the whole batch at once; every image must still be exactly Pillow's own round trip
    # of its uint8 pixels (x·255 rounded in float32), decoded back and divided by 255 in x's dtype.
    x = F.interpolate(photo_patches[:3, :channels], size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.to(dtype)
    got = JPEG(35)(x)
    assert got.dtype == dtype and got.shape == x.shape and got.is_contiguous()
    for i in range(len(x)):
        pixels = (x[i].float() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="JPEG", quality=35)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue()))).reshape(*size, channels)
        expected = torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(dtype) / 255
        assert torch.equal(got[i], expected), i
        assert torch.equal(JPEG(35)(x[i:i + 1])[0], got[i])   # the same alone as in the batch


def test_jpeg_grayscale_stays_single_channel(digits):
    out = JPEG(30)(digits.test.x[:4])
    assert out.shape == digits.test.x[:4].shape


def test_thumb_at_full_size_is_identity(photo_patches):
    assert torch.equal(Thumbnail(32)(photo_patches), photo_patches)


def test_thumb_removes_high_frequencies_and_keeps_constant_images():
    checker = (torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2
    x = checker.float().expand(1, 1, 32, 32).contiguous()
    out = Thumbnail(16)(x)
    # A one-pixel checkerboard averages to grey under an antialiased 2× down-scale.
    assert float((out - 0.5).abs().max()) < 0.05
    constant = torch.full((2, 3, 32, 32), 0.3)
    torch.testing.assert_close(Thumbnail(8)(constant), constant)


def test_thumb_keeps_aspect_ratio_on_rectangular_images():
    x = torch.rand(1, 1, 20, 40)
    assert Thumbnail(10)(x).shape == x.shape
    with pytest.raises(StableTrainError, match="at least 64"):
        Thumbnail(64)(x)


def test_crop_zero_is_identity(photo_patches):
    assert torch.equal(Crop(0)(photo_patches), photo_patches)


def test_crop_shifts_content_by_a_random_offset():
    ramp = torch.linspace(0, 1, 40).view(1, 1, 1, 40).expand(64, 1, 40, 40).contiguous()
    out = Crop(20)(ramp, generator=torch.Generator().manual_seed(0))
    # Left-most column after the crop = the ramp value at the random offset: several offsets occur.
    starts = out[:, 0, 0, 0]
    assert len(torch.unique((starts * 100).round())) > 3
    assert float(starts.min()) >= 0.0 and float(starts.max()) <= 0.25
    constant = torch.full((3, 1, 32, 32), 0.7)
    torch.testing.assert_close(Crop(30)(constant), constant)


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_stay_in_unit_range_with_shape_and_dtype(spec, dtype, photo_patches):
    x = photo_patches[:6].to(dtype)
    out = parse_distortion(spec)(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_same_seed_same_output(spec, photo_patches):
    d = parse_distortion(spec)
    a = d(photo_patches, generator=torch.Generator().manual_seed(3))
    b = d(photo_patches, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("spec", RANDOM_SPECS)
def test_different_seed_different_output(spec, photo_patches):
    d = parse_distortion(spec)
    a = d(photo_patches, generator=torch.Generator().manual_seed(3))
    b = d(photo_patches, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(a, b)


def test_inputs_are_not_modified(photo_patches):
    before = photo_patches.clone()
    for spec in ALL_SPECS:
        parse_distortion(spec)(photo_patches)
    assert torch.equal(photo_patches, before)


@pytest.mark.parametrize("spec, message", [
    ("blur-3", "unknown distortion 'blur-3'"),
    ("jpeg", "expected family-parameter"),
    ("jpeg-0", "1..100"),
    ("jpeg-101", "1..100"),
    ("jpeg-50.5", "1..100"),
    ("jpeg-abc", "not a number"),
    ("thumb-0", "positive integer"),
    ("crop-100", r"\[0, 100\)"),
    ("crop--5", r"\[0, 100\)"),
    ("gaussian--0.1", ">= 0"),
])
def test_bad_specs_get_clear_errors(spec, message):
    with pytest.raises(StableTrainError, match=message):
        parse_distortion(spec)


def test_distortions_reject_bad_images():
    with pytest.raises(StableTrainError, match=r"\[0, 1\]"):
        JPEG(50)(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(StableTrainError, match="1- or 3-channel"):
        JPEG(50)(torch.rand(1, 2, 8, 8))


def test_sweeps_are_lists_of_specs():
    sweep = parse_distortions("jpeg-50, thumb-16 ,crop-10,gaussian-0.1")
    assert [d.spec for d in sweep] == ["jpeg-50", "thumb-16", "crop-10", "gaussian-0.1"]
    assert set(d.family for d in parse_distortions(paper_sweep(32))) == {"jpeg", "thumb", "crop", "gaussian"}
    assert paper_sweep(64)[5] == "thumb-48"
    assert {"crop", "gaussian", "jpeg", "thumb"} <= set(known_families())
    with pytest.raises(StableTrainError, match="no distortions"):
        parse_distortions(" , ")


def test_thumb_downscale_matches_pillow_bilinear():
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    small = Image.fromarray(x[0, 0].numpy(), mode="F").resize((12, 12), Image.Resampling.BILINEAR)
    down = torch.from_numpy(np.array(small)).view(1, 1, 12, 12)
    expected = torch.nn.functional.interpolate(down, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(Thumbnail(12)(x), expected.clamp(0, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", RANDOM_SPECS + ["crop-25", "gaussian-0.5"])
def test_per_example_streams_make_each_image_independent_of_its_batch(spec, photo_patches):
    from stabletrain.seeding import ExampleRNG

    d, x = parse_distortion(spec), photo_patches[:10]
    whole = d(x, ExampleRNG.for_examples(range(10), 0, "distortion", spec))
    pieces = torch.cat([d(x[i:i + 3], ExampleRNG.for_examples(range(i, min(i + 3, 10)), 0, "distortion", spec))
                        for i in range(0, 10, 3)])
    assert torch.equal(whole, pieces)
    # each image's own stream: image 4 alone gets the same copy as inside the batch, another seed another copy
    assert torch.equal(d(x[4:5], ExampleRNG.for_examples([4], 0, "distortion", spec)), whole[4:5])
    assert not torch.equal(d(x, ExampleRNG.for_examples(range(10), 1, "distortion", spec)), whole)


def test_crop_offsets_differ_between_images_of_one_batch():
    from stabletrain.seeding import ExampleRNG

    # one bright pixel at the same place in every image: its position after the crop reveals each offset
    x = torch.zeros(12, 1, 20, 20)
    x[:, :, 10, 10] = 1.0
    out = Crop(25)(x, ExampleRNG.for_examples(range(12), 0, "crop"))
    peaks = {int(o.flatten().argmax()) for o in out}
    assert len(peaks) > 1
