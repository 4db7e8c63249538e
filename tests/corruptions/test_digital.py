"""Digital corruptions: contrast, elastic_transform, pixelate, jpeg_compression, saturate."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from stabletrain.corruptions import PARAMETER_SETS, Corruption, corrupt

from ._support import _skimage_hsv_map, _test_image


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
