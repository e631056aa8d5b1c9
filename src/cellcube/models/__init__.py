"""Embedding -> embedding maps: the cube and the baselines beside it."""
