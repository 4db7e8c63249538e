"""Decoding and per-image transforms of the streaming data path, against torchvision, timm and Pillow."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from stabletrain.checks import StableTrainError
from stabletrain.data.decode import decoders, jpeg_decoder, open_image
from stabletrain.data.transforms import EvalTransform, TrainTransform, to_tensor_uint8

T = pytest.importorskip("torchvision.transforms")
TF = pytest.importorskip("torchvision.transforms.functional")


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB test picture: smooth gradients, a hard-edged block and some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 5) % 256, (yy * 4) % 256, ((xx + yy) * 3) % 256], -1).astype(np.int64)
    image[height // 3: 2 * height // 3, width // 4: width // 2] = [250, 20, 30]
    image += rng.normal(0, 8, image.shape).astype(np.int64)
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(array: np.ndarray, quality: int = 90, subsampling: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- train transform

@pytest.mark.parametrize("size", [(61, 47), (200, 12), (12, 200), (64, 64)])
def test_crop_params_are_torchvisions_draws_from_the_given_generator(size):
    # (200, 12) and (12, 200) exhaust the ten attempts and exercise the central-crop fallback.
    width, height = size
    image = Image.new("RGB", size)
    ours = TrainTransform(24)
    for seed in range(40):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            expected = T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        assert ours.crop_params(width, height, torch.Generator().manual_seed(seed)) == expected


def test_train_transform_equals_torchvision_pipeline_seeded_alike():
    # Same Pillow crop + bilinear resize + flip as torchvision's PIL path, so the pixels should be identical;
    # we allow 1 grey level only for Pillow builds with a different (SIMD) resampler.
    image = Image.fromarray(_photo(47, 61))
    reference = T.Compose([T.RandomResizedCrop(24, antialias=True), T.RandomHorizontalFlip()])
    ours = TrainTransform(24)
    flips = 0
    for seed in range(30):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            expected = np.asarray(reference(image), dtype=np.int64)
        got = np.asarray(ours(image, torch.Generator().manual_seed(seed)), dtype=np.int64)
        assert got.shape == (24, 24, 3)
        assert np.abs(got - expected).max() <= 1, seed
        unflipped = TrainTransform(24, flip=False)(image, torch.Generator().manual_seed(seed))
        flips += not np.array_equal(np.asarray(unflipped), got)
    assert 5 <= flips <= 25  # the flip happens about half the time


@pytest.mark.parametrize("box", [(5, 7, 30, 40), (0, 0, 47, 61), (10, 3, 20, 20), (1, 2, 13, 17)])
def test_fixed_crop_and_resize_match_torchvisions_tensor_resampler(box):
    # An independent resampler: torch's antialiased bilinear interpolation on the uint8 tensor. It rounds
    # differently from Pillow's fixed-point filter, so pixels may differ by 1 grey level (never more here),
    # and on average by well under one.
    top, left, height, width = box
    image = Image.fromarray(_photo(47, 61, seed=3))
    ours = TrainTransform(24, flip=False)
    ours.crop_params = lambda w, h, generator: box  # fix the crop box
    got = to_tensor_uint8(ours(image, torch.Generator()), 3).long()
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    expected = TF.resized_crop(tensor, top, left, height, width, [24, 24], antialias=True).long()
    difference = (got - expected).abs()
    assert difference.max() <= 1
    assert difference.float().mean() < 0.5


def test_crop_boxes_follow_the_scale_and_ratio_bounds():
    width = height = 400
    ours = TrainTransform(32, scale=(0.2, 0.9), ratio=(0.5, 2.0))
    fractions, ratios = [], []
    for seed in range(600):
        top, left, h, w = ours.crop_params(width, height, torch.Generator().manual_seed(seed))
        assert 0 <= top and 0 <= left and top + h <= height and left + w <= width
        fractions.append(w * h / (width * height))
        ratios.append(w / h)
    fractions, ratios = np.array(fractions), np.array(ratios)
    slack = 2.0 / 400  # w and h are rounded to whole pixels
    assert fractions.min() >= 0.2 - 2 * slack and fractions.max() <= 0.9 + 2 * slack
    assert ratios.min() >= 0.5 * (1 - slack) and ratios.max() <= 2.0 * (1 + slack)
    # The algorithm's distribution, simulated independently with numpy: area fraction uniform on the scale
    # range and log aspect ratio uniform, kept when the box fits (wide boxes of large area are rejected).
    rng = np.random.default_rng(0)
    s, r = rng.uniform(0.2, 0.9, 400_000), np.exp(rng.uniform(np.log(0.5), np.log(2.0), 400_000))
    fits = (np.sqrt(s * r) <= 1) & (np.sqrt(s / r) <= 1)
    reference_s, reference_r = s[fits], r[fits]
    assert abs(fractions.mean() - reference_s.mean()) < 0.025  # about 3 standard errors for 600 draws
    for q in (0.25, 0.5, 0.75):
        assert abs(np.quantile(fractions, q) - np.quantile(reference_s, q)) < 0.05
    assert abs(np.abs(np.log(ratios)).mean() - np.abs(np.log(reference_r)).mean()) < 0.04
    assert np.mean(np.log(ratios) > 0) == pytest.approx(0.5, abs=0.07)  # symmetric on a square image


def test_same_generator_seed_same_crop_other_seeds_differ():
    image = Image.fromarray(_photo(50, 70))
    ours = TrainTransform(16)
    first = np.asarray(ours(image, torch.Generator().manual_seed(11)))
    again = np.asarray(ours(image, torch.Generator().manual_seed(11)))
    assert np.array_equal(first, again)
    others = [np.asarray(ours(image, torch.Generator().manual_seed(s))) for s in range(12, 20)]
    assert sum(np.array_equal(first, o) for o in others) == 0


def test_no_crop_train_transform_is_shorter_side_resize_and_centre_crop():
    image = Image.fromarray(_photo(40, 64))
    reference = T.Compose([T.Resize(24), T.CenterCrop(24)])
    got = TrainTransform(24, crop=False, flip=False)(image, torch.Generator().manual_seed(0))
    assert np.array_equal(np.asarray(got), np.asarray(reference(image)))


def test_bad_transform_options_are_one_line_errors():
    with pytest.raises(StableTrainError, match="crop scale"):
        TrainTransform(32, scale=(0.5, 0.1))
    with pytest.raises(StableTrainError, match="crop_pct"):
        EvalTransform(32, crop_pct=1.5)
    with pytest.raises(StableTrainError, match="interpolation"):
        TrainTransform(32, interpolation="cubic-ish")


# -------------------------------------------------------------------------------------------- eval transform

@pytest.mark.parametrize("size,crop_pct,shape", [(24, 0.875, (47, 61)), (32, 0.9, (80, 45)), (16, 1.0, (16, 30)),
                                                 (224 // 8, 0.95, (33, 33))])
def test_eval_transform_equals_timm_eval_transform(size, crop_pct, shape):
    timm_factory = pytest.importorskip("timm.data.transforms_factory")
    image = Image.fromarray(_photo(*shape, seed=5))
    reference = timm_factory.transforms_imagenet_eval(img_size=size, crop_pct=crop_pct, interpolation="bilinear",
                                                      use_prefetcher=True)  # -> uint8 C×H×W tensor
    ours = EvalTransform(size, crop_pct)
    assert ours.resize_size == math.floor(size / crop_pct)
    got = to_tensor_uint8(ours(image), 3)
    # the same Pillow resize and crop: identical (1 grey level allowed for SIMD builds of Pillow)
    assert got.shape == (3, size, size)
    assert (got.long() - reference(image).long()).abs().max() <= 1


def test_eval_transform_agrees_with_torchvisions_tensor_resampler():
    image = Image.fromarray(_photo(47, 61, seed=9))
    got = to_tensor_uint8(EvalTransform(24)(image), 3).long()
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    expected = TF.center_crop(TF.resize(tensor, [27], antialias=True), [24]).long()
    # different rounding in torch's interpolation than Pillow's fixed-point filter: at most 1 grey level
    assert (got - expected).abs().max() <= 1


# ---------------------------------------------------------------------------------------------- to tensor

def test_to_tensor_uint8_layout_and_luma():
    array = _photo(9, 13)
    x = to_tensor_uint8(Image.fromarray(array), 3)
    assert x.dtype == torch.uint8 and x.shape == (3, 9, 13) and x.is_contiguous()
    assert np.array_equal(x.permute(1, 2, 0).numpy(), array)
    gray = to_tensor_uint8(Image.fromarray(array), 1)
    assert gray.shape == (1, 9, 13)
    luma = array.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, what 'L' means
    assert np.abs(gray[0].numpy() - luma).max() <= 1.0
    with pytest.raises(StableTrainError, match="channels must be 1 or 3"):
        to_tensor_uint8(Image.fromarray(array), 2)


# ------------------------------------------------------------------------------------------------ decoding

def test_simplejpeg_and_pillow_decode_the_same_jpeg_alike(monkeypatch):
    simplejpeg = pytest.importorskip("simplejpeg")
    import stabletrain.data.decode as decode

    calls = []

    class Recording:  # the real simplejpeg, counting decodes: the route must really be taken
        decode_jpeg_header = staticmethod(simplejpeg.decode_jpeg_header)

        @staticmethod
        def decode_jpeg(*args, **kwargs):
            calls.append(1)
            return simplejpeg.decode_jpeg(*args, **kwargs)

    monkeypatch.setattr(decode, "_simplejpeg", Recording)
    for quality, subsampling in [(90, 2), (75, 0)]:
        data = _jpeg(_photo(64, 48), quality, subsampling)
        by_library = simplejpeg.decode_jpeg(data, colorspace="RGB").astype(np.int64)
        by_pillow = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int64)
        # open_image routes to each library as asked
        assert np.array_equal(np.asarray(open_image(data, decoder="simplejpeg")), by_library)
        assert np.array_equal(np.asarray(open_image(data, decoder="pillow")), by_pillow)
        assert len(calls) == 1
        calls.clear()
        # Different inverse DCTs and chroma upsampling (libjpeg vs libjpeg-turbo builds, SIMD paths) may
        # differ by a few grey levels; both libjpeg-turbo with the accurate integer IDCT agree exactly.
        difference = np.abs(by_library - by_pillow)
        assert difference.max() <= 3 and difference.mean() < 0.5


def test_draft_decodes_large_jpegs_reduced_and_the_same_size_with_both_decoders():
    data = _jpeg(_photo(256, 192))
    sizes = {name: open_image(data, decoder=name, draft=(40, 50)).size
             for name in (["pillow", "simplejpeg"] if jpeg_decoder() == "simplejpeg" else ["pillow"])}
    # the largest power-of-two reduction that keeps at least the requested size: 192/4 = 48 >= 40, 256/4 = 64 >= 50
    assert set(sizes.values()) == {(48, 64)}
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((48, 64), Image.Resampling.BOX), float)
    drafted = np.asarray(open_image(data, decoder="pillow", draft=(40, 50)), float)
    assert np.abs(full - drafted).mean() < 6  # a DCT-domain reduction of the same picture
    assert open_image(_png(Image.fromarray(_photo(256, 192))), draft=(40, 50)).size == (192, 256)  # PNG: ignored


def test_drafted_size_still_serves_every_crop_at_full_resolution():
    big = _jpeg(_photo(1024, 1024))
    train, evaluation = TrainTransform(32), EvalTransform(32)
    drafted = open_image(big, draft=train.draft_size())
    assert drafted.size[0] < 1024  # it was reduced
    smallest_crop_side = math.sqrt(0.08 * min(3 / 4, 1 / (4 / 3))) * min(drafted.size)
    assert smallest_crop_side >= 32
    assert min(open_image(big, draft=evaluation.draft_size()).size) >= evaluation.resize_size


def test_png_and_other_modes_decode_like_pillow(tmp_path):
    rgb = _photo(20, 30)
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    assert np.array_equal(np.asarray(open_image(path)), rgb)
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "RGBA")
    assert np.array_equal(np.asarray(open_image(_png(rgba))), rgb)  # alpha dropped
    gray = open_image(_png(Image.fromarray(rgb[:, :, 0])))
    assert gray.mode == "L" and np.array_equal(np.asarray(gray), rgb[:, :, 0])
    sixteen = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 109)
    decoded = open_image(_png(Image.fromarray(sixteen)))
    assert decoded.mode == "L"
    assert np.abs(np.asarray(decoded, dtype=np.float64) - sixteen / 257.0).max() <= 0.5  # scaled, not clipped
    palette = Image.fromarray(rgb).convert("P")
    assert np.array_equal(np.asarray(open_image(_png(palette))), np.asarray(palette.convert("RGB")))
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, "JPEG")
    expected = np.asarray(Image.open(io.BytesIO(cmyk.getvalue())).convert("RGB"))
    assert np.array_equal(np.asarray(open_image(cmyk.getvalue())), expected)


@pytest.mark.parametrize("decoder", ["pillow", "simplejpeg"])
def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path, decoder):
    if decoder == "simplejpeg" and jpeg_decoder() != "simplejpeg":
        pytest.skip("simplejpeg is not installed")
    data = _jpeg(_photo(64, 64))
    cases = {"truncated.jpg": data[: len(data) // 2], "random.jpg": np.random.default_rng(0).bytes(500),
             "empty.png": b""}
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(StableTrainError) as caught:
            open_image(tmp_path / name, decoder=decoder)
        message = str(caught.value)
        assert message.startswith(f"not a readable image file: {tmp_path / name} (") and "\n" not in message
    with pytest.raises(StableTrainError, match=r"missing\.jpg \(FileNotFoundError\)"):
        open_image(tmp_path / "missing.jpg", decoder=decoder)


def test_decoder_choice_is_reported_and_validated(monkeypatch):
    assert decoders("pillow")["jpeg"] == decoders()["other"]
    monkeypatch.setenv("STABLETRAIN_JPEG_DECODER", "pillow")
    assert jpeg_decoder() == "pillow"
    monkeypatch.setenv("STABLETRAIN_JPEG_DECODER", "turbo")
    with pytest.raises(StableTrainError, match="STABLETRAIN_JPEG_DECODER must be one of auto, pillow, simplejpeg"):
        open_image(_jpeg(_photo(8, 8)))
