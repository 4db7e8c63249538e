"""Per-example random streams: with an ExampleRNG an image's corruption depends on its own stream only.

The evaluation corrupts example ``i`` with stream ``i`` of
``ExampleRNG.for_examples(range(start, stop), seed, "distortion", spec)``, so
that the corrupted test set is the same for any batch size. That needs every
random draw to come row by row from the image's own stream, and every
computation to give an image the same bits whichever images share its batch:
a batch then gets exactly what each of its images gets alone, corrupted with
its stream's ``torch.Generator``.
"""

import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.corruptions import LAYER_RESOLUTIONS, PARAMETER_SETS, Corruption, corrupt, frost_texture
from stabletrain.seeding import ExampleRNG

from ._support import ALL, DETERMINISTIC, gen

RANDOM = [name for name in ALL if name not in DETERMINISTIC]


def streams(indices, spec: str, seed: int = 0) -> ExampleRNG:
    return ExampleRNG.for_examples(indices, seed, spec)


# 32 px: below the ImageNet-C side (layers on the 224-px reference grid) and at the CIFAR-10-C side.
# 64 px, grey: larger kernels, where a batch's motion lines and defocus disks would be filtered by FFT.
BATCHES = {"rgb-32": (6, 3, 32, 32), "grey-64": (6, 1, 64, 64)}


@pytest.mark.parametrize("name", ALL)
def test_a_batch_is_corrupted_like_its_parts_and_like_each_image_alone_with_its_stream(name):
    for batch, shape in BATCHES.items():
        x = torch.rand(shape, generator=gen(len(batch)))
        for parameter_set in PARAMETER_SETS:
            for layer_resolution in LAYER_RESOLUTIONS:
                for severity in (1, 5):
                    c = Corruption(name, severity, parameter_set, layer_resolution)
                    where = (batch, c.spec, layer_resolution)
                    whole = c(x, streams(range(6), c.spec))
                    parts = torch.cat([c(x[:2], streams(range(2), c.spec)), c(x[2:], streams(range(2, 6), c.spec))])
                    assert torch.equal(whole, parts), where
                    # ... and exactly what each image gets alone from its stream's torch.Generator
                    alone = torch.cat([c(x[i:i + 1], g) for i, g in enumerate(streams(range(6), c.spec).generators)])
                    assert torch.equal(whole, alone), where


@pytest.mark.parametrize("name", ["motion_blur", "snow"])
def test_fft_filtered_images_do_not_depend_on_their_batch_at_224_px(name):
    # Motion lines at 224 px and CIFAR-10-C snow streaks (on its 32-px grid)
    # have more taps than the shifted-sum path takes: these images go by FFT,
    # whose rounding may depend on how many images share a transform and on
    # its size, which the longest line of a batch would set.
    x = torch.rand(3, 1, 224, 224, generator=gen(224))
    for parameter_set in PARAMETER_SETS:
        c = Corruption(name, 5, parameter_set)
        whole = c(x, streams(range(3), c.spec))
        alone = torch.cat([c(x[i:i + 1], g) for i, g in enumerate(streams(range(3), c.spec).generators)])
        assert torch.equal(whole, alone), c.spec


@pytest.mark.parametrize("name", RANDOM)
def test_each_image_draws_from_its_own_stream(name):
    x = torch.rand(1, 3, 32, 32, generator=gen(1)).expand(4, -1, -1, -1).contiguous()  # one image, four times
    for parameter_set in PARAMETER_SETS:
        for severity in (1, 5):
            c = Corruption(name, severity, parameter_set)
            out = c(x, streams(range(4), c.spec))
            # four streams, four corruptions of the same image (a stream shared by all rows gives four equal ones)
            assert len({tuple(row.flatten().tolist()) for row in out}) > 1, c.spec
            # a stream is a function of (seed, spec, index): the same streams repeat, another seed does not
            assert torch.equal(out, c(x, streams(range(4), c.spec))), c.spec
            assert not torch.equal(out, c(x, streams(range(4), c.spec, seed=1))), c.spec


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_corruptions_ignore_the_streams(name):
    x = torch.rand(3, 3, 32, 32, generator=gen(2))
    for parameter_set in PARAMETER_SETS:
        c = Corruption(name, 3, parameter_set)
        assert torch.equal(c(x, streams(range(3), c.spec)), c(x, gen(0))), c.spec


def test_frost_textures_come_from_their_own_streams():
    whole = frost_texture(4, 24, 40, generator=streams(range(4), "frost"))
    part = frost_texture(2, 24, 40, generator=streams(range(2, 4), "frost"))
    assert torch.equal(whole[2:], part)
    assert not torch.equal(whole[0], whole[1])
    grey = frost_texture(4, 24, 40, channels=1, generator=streams(range(4), "frost"))
    assert torch.equal(grey[1:2], frost_texture(1, 24, 40, channels=1, generator=streams([1], "frost")))


def test_streams_must_match_the_batch():
    x = torch.rand(3, 3, 16, 16, generator=gen(0))
    with pytest.raises(StableTrainError, match="fog-1 needs one random stream per image: 3 images, 2 streams"):
        corrupt(x, "fog", 1, generator=streams(range(2), "fog-1"))
    with pytest.raises(StableTrainError, match="one random stream per texture"):
        frost_texture(3, 16, 16, generator=streams(range(2), "frost"))
