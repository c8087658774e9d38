"""Matrices: topologies x kernels x scenarios, run, remembered, compared, exported."""
