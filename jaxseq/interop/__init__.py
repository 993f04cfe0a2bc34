"""Weights to and from PyTorch and Flax."""
