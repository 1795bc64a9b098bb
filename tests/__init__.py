"""Tests mirror tasks/: tiny synthetic data from conftest fixtures, one end-to-end run on real MNIST."""
