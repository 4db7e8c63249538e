import os

import pytest
import torch

# Keep the suite deterministic and light on a 2-core machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def digits():
    from stabletrain.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def photo_patches():
    """A small batch of real RGB photo tiles (smooth and textured) for distortion tests."""
    from stabletrain.data import load_photos

    split = load_photos(image_size=32, photo_side=96, sources=["astronaut", "coffee", "chelsea", "rocket"])
    return split.train.x[:24].clone()
