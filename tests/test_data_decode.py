"""decode_jpeg_like_pillow against Pillow's own decoder, and the JPEG distortion under both decoders."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from stabletrain.data import decode


def _encode(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [5, 30, 75, 95])
@pytest.mark.parametrize("size", [(8, 8), (17, 23), (64, 48)])
@pytest.mark.parametrize("gray", [False, True])
def test_simplejpeg_decode_equals_pillow(quality: int, size: tuple[int, int], gray: bool) -> None:
    if decode.jpeg_decoder() != "simplejpeg":
        pytest.skip("simplejpeg is not the decoder in use")
    rng = np.random.default_rng(quality * 1000 + size[0])
    shape = size if gray else (*size, 3)
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    data = _encode(img, quality)
    ours = decode.decode_jpeg_like_pillow(data, gray)
    assert ours is not None
    ref = np.asarray(Image.open(io.BytesIO(data)))
    if gray:
        ref = ref[..., None]
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_decode_into_a_given_array() -> None:
    if decode.jpeg_decoder() != "simplejpeg":
        pytest.skip("simplejpeg is not the decoder in use")
    img = np.random.default_rng(3).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    data = _encode(img, 60)
    out = np.zeros((12, 20, 3), np.uint8)
    decode.decode_jpeg_like_pillow(data, False, out=out)
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(data))))


def test_pillow_decoder_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "jpeg_decoder", lambda: "pillow")
    data = _encode(np.zeros((8, 8, 3), np.uint8), 50)
    assert decode.decode_jpeg_like_pillow(data, False) is None


def test_jpeg_distortion_is_the_same_under_either_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from stabletrain.distortions import JPEG

    x = torch.rand(3, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    default = JPEG(quality=20).apply(x, None)
    monkeypatch.setattr(decode, "jpeg_decoder", lambda: "pillow")
    pillow = JPEG(quality=20).apply(x, None)
    assert torch.equal(default, pillow)
    assert not torch.equal(default, x)
