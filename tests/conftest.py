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


@pytest.fixture(scope="session")
def jet_cache(tmp_path_factory):
    """A private cache folder for generated jets and pile-up pools."""
    path = tmp_path_factory.mktemp("stabletrain-cache")
    previous = os.environ.get("STABLETRAIN_CACHE")
    os.environ["STABLETRAIN_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("STABLETRAIN_CACHE", None)
    else:
        os.environ["STABLETRAIN_CACHE"] = previous


@pytest.fixture(scope="session")
def jet_file(jet_cache):
    """A small W/QCD sample generated with Pythia 8 (about 15 s on one core)."""
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from stabletrain.jets.generation import GenerationConfig, generate_jets

    path = jet_cache / "sample.h5"
    generate_jets(GenerationConfig(n=400, seed=11, chunk_events=300), path, workers=2, progress=False)
    return path
