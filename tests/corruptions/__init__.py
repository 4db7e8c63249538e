"""Tests of stabletrain.corruptions, one module per group of corruptions (as the package)."""
