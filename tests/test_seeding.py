import subprocess
import sys

import torch

from stabletrain.seeding import derive_seed, make_generator


def test_streams_are_stable_across_processes():
    here = derive_seed(7, "shuffle", 2)
    other = subprocess.run([sys.executable, "-c", "from stabletrain.seeding import derive_seed;"
                            "print(derive_seed(7, 'shuffle', 2))"], capture_output=True, text=True, check=True)
    assert int(other.stdout) == here


def test_streams_are_independent():
    seeds = {derive_seed(0, name, epoch) for name in ("shuffle", "perturbation") for epoch in range(50)}
    assert len(seeds) == 100
    a = torch.rand(3, generator=make_generator(1, "x"))
    b = torch.rand(3, generator=make_generator(1, "x"))
    assert torch.equal(a, b)
