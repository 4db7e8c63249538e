"""Names and helpers shared by the corruption tests."""

import numpy as np
import torch
from skimage import color

from stabletrain.corruptions import CORRUPTIONS, HELD_OUT

ALL = CORRUPTIONS + HELD_OUT
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
                 "gaussian_blur", "saturate"}
# Corruptions that only move or average pixels: constant images stay constant
# and every output lies between the image's darkest and brightest input pixel.
AVERAGING = ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur", "elastic_transform",
             "pixelate"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
