"""Fixtures of the corruption tests."""

import pytest
import torch


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


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    from stabletrain.data import load_photos

    return load_photos(image_size=32, photo_side=96, sources=["astronaut", "coffee"]).train.x
