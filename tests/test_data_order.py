"""The block shuffle: a permutation, local in blocks, mixing within windows, seeded, and checked."""

import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.data.order import block_shuffled_order


def _order(n, block, window, seed=0):
    return block_shuffled_order(n, block, window, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,block,window", [(0, 4, 2), (1, 4, 2), (10, 3, 2), (64, 8, 4), (100, 7, 100), (37, 1, 5)])
def test_every_row_comes_once_per_epoch(n, block, window):
    order = _order(n, block, window)
    assert sorted(order.tolist()) == list(range(n))


def test_each_window_holds_whole_blocks_and_its_rows_are_shuffled_inside_it():
    n, block, window = 200, 8, 4
    order = _order(n, block, window, seed=3)
    for lo in range(0, n, block * window):
        rows = order[lo:lo + block * window]
        blocks = set((rows // block).tolist())
        assert len(blocks) <= window                                   # at most `window` blocks per window
        assert sorted(rows.tolist()) == sorted(r for b in blocks for r in range(b * block, min(b * block + block, n)))
    assert not torch.equal(order[:block], torch.sort(order[:block]).values) or \
        not torch.equal(order[block:2 * block], torch.sort(order[block:2 * block]).values)   # shuffled within


def test_the_order_depends_on_the_seed_alone_and_spreads_the_blocks():
    assert torch.equal(_order(500, 16, 8, seed=1), _order(500, 16, 8, seed=1))
    assert not torch.equal(_order(500, 16, 8, seed=1), _order(500, 16, 8, seed=2))
    # a file stored in two halves (signal, then background) still mixes in every window of 32 blocks:
    # the signal fraction of a window is hypergeometric, 0.5 ± 0.09; over 20 seeds no window is one-sided
    for seed in range(20):
        order = _order(8192 * 4, 256, 32, seed=seed)
        for lo in range(0, len(order), 8192):
            fraction = float((order[lo:lo + 8192] < 8192 * 2).double().mean())
            assert 0.15 < fraction < 0.85


@pytest.mark.parametrize("block,window", [(0, 2), (2, 0), (1.5, 2), (True, 2)])
def test_bad_sizes_are_one_clear_error(block, window):
    with pytest.raises(StableTrainError, match="block shuffle"):
        _order(10, block, window)
