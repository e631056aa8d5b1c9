"""Embedding -> text: the nearest-neighbour phrase bank."""
