"""Compiled kernels (Cython over NumPy buffers). Import the Python API from ``memrl`` instead."""
